//! Certificates made in the test with rcgen, written as PEM files into a
//! temp directory: a CA, broker certificates (for `localhost` and
//! `127.0.0.1`, or other names, or already expired) and client
//! certificates whose subject CN names a user. Also an HTTPS GET for the
//! broker's HTTP listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A certificate authority that writes its files into one directory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA certificate (PEM file): what clients trust.
    pub cert: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Issued {
    /// `--tls-cert CERT --tls-key KEY`, as arguments.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Ca {
    /// A new CA named `name`, writing into `dir` (`<name>-ca.pem`).
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().expect("key");
        let cert = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert, params.self_signed(&key).expect("ca").pem()).expect("write ca");
        Ca {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            cert,
        }
    }

    /// A broker certificate for `localhost` and `127.0.0.1`.
    pub fn broker(&self, file: &str) -> Issued {
        self.issue(file, &["localhost", "127.0.0.1"], "pigeon-broker", false)
    }

    /// A certificate for `names` with subject CN `cn`, written as
    /// `<file>-cert.pem` and `<file>-key.pem`; `expired` makes it valid
    /// only in 2020.
    pub fn issue(&self, file: &str, names: &[&str], cn: &str, expired: bool) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let issued = Issued {
            cert: self.dir.join(format!("{file}-cert.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write cert");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }

    /// A client certificate whose subject CN is `user`.
    pub fn client(&self, user: &str) -> Issued {
        self.issue(&format!("client-{user}"), &[user], user, false)
    }
}

/// A TLS client connection to `addr` (as `127.0.0.1`) trusting the CA
/// certificate `ca`, presenting `client` if given; the handshake happens
/// at the first read or write.
pub fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    client: Option<&Issued>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(ca).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let chain = CertificateDer::pem_file_iter(&issued.cert)
                .map_err(|e| e.to_string())?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_file(&issued.key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
    };
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(rustls::StreamOwned::new(connection, tcp))
}

/// An HTTPS GET of `path` on `addr`, trusting the CA certificate `ca`: the
/// status code and the body.
pub fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut tls = tls_connect(addr, ca, None)?;
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // A server may close without a TLS close_notify after the body.
    if let Err(e) = tls.read_to_end(&mut response)
        && response.is_empty()
    {
        return Err(e.to_string());
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}
