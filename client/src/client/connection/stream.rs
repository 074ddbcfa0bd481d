//! The byte stream under a connection: plain TCP, or TLS over it
//! ([`TlsConfig`]), and the translation of TLS failures into sentences
//! that say what to fix.
//!
//! TLS uses rustls with the `ring` provider (as the broker does), TLS 1.2
//! and 1.3. The broker's certificate is verified against the CA bundle the
//! caller gives (no system roots: a Pigeon broker's certificate is normally
//! issued by the operator's own CA), for the host part of the broker
//! address unless [`TlsConfig::with_server_name`] names another.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::client::error::ClientError;

/// How a client speaks TLS to the broker: the CA bundle that signs the
/// broker's certificate, optionally a client certificate, and the name to
/// verify the broker's certificate for.
///
/// ```no_run
/// use std::path::Path;
/// use pigeon_client::client::{ClientConfig, TlsConfig};
///
/// # fn demo() -> Result<(), pigeon_client::client::ClientError> {
/// let tls = TlsConfig::from_pem_files(Path::new("ca.pem"), None)?;
/// let config = ClientConfig { tls: Some(tls), ..ClientConfig::default() };
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl TlsConfig {
    /// Trusts the CA certificates of the PEM file `ca`; presents the
    /// certificate chain and key of `client_cert` (PEM files: certificate,
    /// key) when given.
    pub fn from_pem_files(
        ca: &Path,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<TlsConfig, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certificates(ca)? {
            roots.add(cert).map_err(|e| {
                tls_setup(format!(
                    "{} holds a certificate that is not a usable CA: {e}",
                    ca.display()
                ))
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_setup(format!("cannot set up TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    tls_setup(format!(
                        "cannot read a private key from {}: {e}",
                        key.display()
                    ))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    tls_setup(format!(
                        "the client certificate {} cannot be used with its key: {e}",
                        cert.display()
                    ))
                })?
            }
        };
        Ok(TlsConfig {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// Verifies the broker's certificate for `name` instead of the host of
    /// the broker address (e.g. when connecting by IP to a certificate that
    /// carries only DNS names).
    pub fn with_server_name(mut self, name: impl Into<String>) -> TlsConfig {
        self.server_name = Some(name.into());
        self
    }

    /// The name the broker's certificate must carry when connecting to
    /// `addr` (`host:port`, `[v6]:port`).
    fn name_for(&self, addr: &str) -> String {
        if let Some(name) = &self.server_name {
            return name.clone();
        }
        let host = match addr.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => addr,
        };
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    }
}

fn tls_setup(message: String) -> ClientError {
    ClientError::Tls {
        addr: String::new(),
        message,
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let unreadable =
        |e: &dyn std::fmt::Display| tls_setup(format!("cannot read {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(tls_setup(format!(
            "{} holds no certificate (expected PEM blocks BEGIN CERTIFICATE)",
            path.display()
        )));
    }
    Ok(certs)
}

/// A connection's byte stream.
#[derive(Debug)]
pub(crate) enum BrokerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl BrokerStream {
    /// Whether the bytes are encrypted (a password may be sent as is).
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, BrokerStream::Tls(_))
    }
}

/// Shakes hands over `tcp` with the broker at `addr`.
pub(crate) async fn connect_tls(
    tls: &TlsConfig,
    tcp: TcpStream,
    addr: &str,
) -> Result<BrokerStream, ClientError> {
    let name = tls.name_for(addr);
    let server_name = ServerName::try_from(name.clone()).map_err(|_| ClientError::Tls {
        addr: addr.to_owned(),
        message: format!(
            "{name:?} is not a host name or IP address to verify the broker's certificate for"
        ),
    })?;
    let connector = TlsConnector::from(tls.config.clone());
    match connector.connect(server_name, tcp).await {
        Ok(stream) => Ok(BrokerStream::Tls(Box::new(stream))),
        Err(e) => Err(handshake_error(addr, &name, e)),
    }
}

/// A failed handshake as a sentence: a TLS-level failure says what is
/// wrong with which certificate; an I/O failure is a (retriable)
/// connection error.
fn handshake_error(addr: &str, name: &str, e: std::io::Error) -> ClientError {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return ClientError::io(addr, &e);
    };
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    let message = match tls {
        Tls::InvalidCertificate(Cert::UnknownIssuer) => format!(
            "the broker's certificate is not signed by a CA of the trusted bundle (--tls-ca, PIGEON_TLS_CA) ({tls})"
        ),
        Tls::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            format!(
                "the broker's certificate is not valid for {name}; connect by a name it carries ({tls})"
            )
        }
        Tls::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            format!("the broker's certificate has expired ({tls})")
        }
        Tls::InvalidMessage(_) | Tls::InappropriateMessage { .. } => format!(
            "the broker did not answer in TLS; is TLS on at the broker (--tls-cert), and is this its protocol port? ({tls})"
        ),
        Tls::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired,
        ) => refused_certificate(&tls.to_string()),
        other => format!("TLS handshake failed: {other}"),
    };
    ClientError::Tls {
        addr: addr.to_owned(),
        message,
    }
}

fn refused_certificate(alert: &str) -> String {
    format!(
        "the broker refused this client's certificate ({alert}); it requires a valid client certificate signed by its --tls-client-ca (pigeon --tls-cert, --tls-key)"
    )
}

/// A failure of the first request over TLS that is the broker's verdict on
/// the session: with TLS 1.3 a client certificate the broker refuses shows
/// only at the client's first read, as an alert.
pub(crate) fn tls_verdict(addr: &str, err: ClientError) -> ClientError {
    match &err {
        ClientError::Connection { message, .. } if message.contains("received fatal alert") => {
            ClientError::Tls {
                addr: addr.to_owned(),
                message: refused_certificate(message),
            }
        }
        _ => err,
    }
}

impl AsyncRead for BrokerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BrokerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BrokerStream::Plain(s) => s.is_write_vectored(),
            BrokerStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TlsConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        TlsConfig {
            config: Arc::new(config),
            server_name: None,
        }
    }

    #[test]
    fn the_certificate_is_verified_for_the_host_of_the_address() {
        let tls = config();
        assert_eq!(tls.name_for("127.0.0.1:7420"), "127.0.0.1");
        assert_eq!(tls.name_for("broker.example:7420"), "broker.example");
        assert_eq!(tls.name_for("[::1]:7420"), "::1");
        assert_eq!(tls.name_for("broker"), "broker");
        let tls = tls.with_server_name("pigeon.internal");
        assert_eq!(tls.name_for("10.0.0.1:7420"), "pigeon.internal");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let err =
            TlsConfig::from_pem_files(Path::new("/nonexistent/ca.pem"), None).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
