//! Security: TLS for the listeners, and the pieces authentication and
//! permissions are built from. The user-facing story (threat model, file
//! formats, how to issue certificates and add users) is `docs/security.md`.
//!
//! ## Layout
//!
//! | file | job |
//! | --- | --- |
//! | `tls.rs` | [`ServerTls`](tls::ServerTls): certificate, key and client CA from PEM files; reload at SIGHUP; the user a client certificate names |
//! | `cert_name.rs` | the subject common name of a DER certificate |
//! | `metrics.rs` | the security metrics |
//!
//! ## Invariants
//!
//! - A connection's TLS configuration is fixed at its handshake: a reload
//!   changes what later handshakes use, never an established session.
//! - A reload that fails changes nothing.

pub mod cert_name;
pub mod metrics;
pub mod tls;

#[cfg(test)]
pub(crate) mod test_certs;
