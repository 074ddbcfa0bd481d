//! Security: TLS for the listeners, and the pieces authentication and
//! permissions are built from (the service layer puts them together:
//! `service/auth.rs`). The user-facing story (threat model, file
//! formats, how to issue certificates and add users) is `docs/security.md`.
//!
//! ## Layout
//!
//! | file | job |
//! | --- | --- |
//! | `tls.rs` | [`ServerTls`](tls::ServerTls): certificate, key and client CA from PEM files; reload at SIGHUP; the user a client certificate names |
//! | `cert_name.rs` | the subject common name of a DER certificate |
//! | `metrics.rs` | the security metrics |
//! | `users.rs` | the users file: names, password hashes, SCRAM verifiers, rules |
//! | `rules.rs` | permission rules: operations × topic and group patterns |
//! | `password.rs` | argon2id password hashes (PHC strings) |
//! | `scram.rs` | SCRAM-SHA-256, the broker's side; the stored verifier |
//! | `limiter.rs` | failed authentications per peer address |
//!
//! ## Invariants
//!
//! - A connection's TLS configuration is fixed at its handshake: a reload
//!   changes what later handshakes use, never an established session.
//! - A reload that fails changes nothing.
//! - No password, hash, verifier or proof is ever logged or put in an
//!   error: their `Debug` forms are redacted.

pub mod cert_name;
pub mod limiter;
pub mod metrics;
pub mod password;
pub mod rules;
pub mod scram;
pub mod tls;
pub mod users;

#[cfg(test)]
pub(crate) mod test_certs;
