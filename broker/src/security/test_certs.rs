//! Certificates made in the test (rcgen): a CA, server certificates for
//! `localhost`/`127.0.0.1` and client certificates with a common name.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::tls::TlsFiles;

/// A test CA.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// A new CA.
    pub fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "Pigeon test CA");
        let key = KeyPair::generate().expect("key");
        TestPki {
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate with `names` as subject alternative names and `cn` as
    /// common name, signed by the CA: (certificate PEM, key PEM).
    pub fn issue(&self, names: &[&str], cn: &str) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate and key as `<prefix>-cert.pem` and
    /// `<prefix>-key.pem` in `dir`.
    pub fn write_server(&self, dir: &Path, prefix: &str) -> TlsFiles {
        let (cert, key) = self.issue(&["localhost", "127.0.0.1"], "pigeon-broker");
        let files = TlsFiles {
            cert: dir.join(format!("{prefix}-cert.pem")),
            key: dir.join(format!("{prefix}-key.pem")),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert).expect("write cert");
        std::fs::write(&files.key, key).expect("write key");
        files
    }
}
