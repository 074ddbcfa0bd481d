//! TLS for every listener: the server's certificate and key (PEM files),
//! optionally a CA bundle that client certificates must chain to, and
//! their reload at SIGHUP.
//!
//! ## How it works
//!
//! - [`ServerTls::load`] reads the files and builds one
//!   [`rustls::ServerConfig`] (TLS 1.2 and 1.3, the `ring` provider). The
//!   certificate chain and the key must match (rustls checks the key
//!   against the leaf certificate), so a swapped or mismatched pair is
//!   refused at start, naming the files.
//! - Every accepted connection takes the *current* configuration
//!   ([`ServerTls::acceptor`]). [`ServerTls::reload`] builds a new one from
//!   the same paths and swaps it in: handshakes that start afterwards use
//!   it; connections already established keep their session and are not
//!   touched. A reload that fails (a missing file, a key that does not
//!   match, an unreadable CA) is logged and the configuration in use stays.
//! - With a client CA (`--tls-client-ca`) a client must present a
//!   certificate that chains to it, or the handshake fails. The subject
//!   common name of a verified client certificate is the user name the
//!   connection may authenticate as ([`peer_user`]); whether that name is a
//!   user is for the authentication layer to decide.
//!
//! ## Why `ring`
//!
//! rustls needs a crypto provider: `ring` or `aws-lc-rs`. `ring` builds with
//! the C compiler every Rust toolchain here has (no cmake, no Go, no
//! assembler quirks), compiles in a fraction of aws-lc's time, and was
//! already in the dependency tree (the benchmarks' NATS client); the client
//! library uses the same provider. Nothing here needs FIPS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::cert_name::common_name;

/// Where the TLS material is read from (and re-read at a reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A CA bundle, PEM: when set, clients must present a certificate
    /// signed by one of these.
    pub client_ca: Option<PathBuf>,
}

/// The TLS configuration every listener hands its new connections to;
/// swapped whole at a reload.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

/// Why TLS material could not be used, naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl ServerTls {
    /// Reads the certificate, key and client CA of `files`.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let config = server_config(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Re-reads the files: new handshakes use them from now on. On an
    /// error the configuration in use stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.current.write() = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

/// Builds the server configuration from the files.
fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        TlsError(format!(
            "tls_key: cannot read a private key from {}: {e}; give a PEM file with one PKCS#8, PKCS#1 or SEC1 key",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certificates(path)? {
                roots.add(cert).map_err(|e| {
                    TlsError(format!(
                        "tls_client_ca: {} holds a certificate that is not a usable CA: {e}",
                        path.display()
                    ))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError(format!("tls_client_ca: {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(certs, key).map_err(|e| {
        TlsError(format!(
            "tls_cert/tls_key: the certificate in {} cannot be used with the key in {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })
}

/// Every certificate of a PEM file; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        TlsError(format!(
            "cannot read certificates from {}: {e}",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{} holds no certificate (expected PEM blocks BEGIN CERTIFICATE)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The subject common name of the verified certificate the client of
/// `connection` presented, if it presented one and it has a CN.
pub fn peer_user(connection: &rustls::ServerConnection) -> Option<String> {
    let leaf = connection.peer_certificates()?.first()?;
    common_name(leaf.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::test_certs::TestPki;

    #[test]
    fn a_matching_certificate_and_key_load_and_a_mismatched_pair_is_refused() {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let files = pki.write_server(dir.path(), "a");
        let tls = ServerTls::load(files.clone()).expect("load");
        assert!(!tls.requires_client_certificates());
        let other = pki.write_server(dir.path(), "b");
        let mismatched = TlsFiles {
            key: other.key,
            ..files
        };
        let err = ServerTls::load(mismatched).expect_err("mismatched");
        assert!(
            err.to_string().contains("cannot be used with the key"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_configuration_in_use() {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let files = pki.write_server(dir.path(), "a");
        let tls = ServerTls::load(files.clone()).expect("load");
        let before = Arc::as_ptr(&tls.current.read().clone());
        std::fs::write(&files.cert, b"not a certificate").expect("write");
        let err = tls.reload().expect_err("bad cert");
        assert!(err.to_string().contains("no certificate"), "{err}");
        assert_eq!(Arc::as_ptr(&tls.current.read().clone()), before);
        pki.write_server(dir.path(), "a");
        tls.reload().expect("good again");
        assert_ne!(Arc::as_ptr(&tls.current.read().clone()), before);
    }

    #[test]
    fn missing_files_are_named() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        };
        let err = ServerTls::load(files).expect_err("missing").to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
