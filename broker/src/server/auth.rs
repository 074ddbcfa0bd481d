//! Authentication on a binary-protocol connection: the SASL exchange of
//! SaslHandshake (key 1) and SaslAuthenticate (key 2), as a small state
//! machine per connection. Each step is one call to the service layer
//! (`service/auth.rs`), which decides; this file only sequences the steps
//! and carries the bytes.
//!
//! ```text
//! Idle ──SaslHandshake(PLAIN)──────────▶ Plain ──SaslAuthenticate(\0user\0password)──▶ Idle (authenticated)
//!  │                                                                            
//!  └──SaslHandshake(SCRAM-SHA-256)──▶ ScramFirst ──SaslAuthenticate(client-first)──▶ ScramFinal
//!                                       ScramFinal ──SaslAuthenticate(client-final)──▶ Idle (authenticated)
//! ```
//!
//! Any failure returns to `Idle` (start again with SaslHandshake). The
//! connection runs these steps itself, in order, before reading its next
//! frame, so the requests after a successful step act as the new user.

use std::net::SocketAddr;

use bytes::Bytes;
use pigeon_protocol::{
    Request, Response, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use crate::error::{BrokerError, ErrorKind};
use crate::security::scram::ServerFirst;
use crate::service::{Broker, Caller, PLAIN};

/// What the listener knows of a connection before its first frame.
#[derive(Debug, Clone)]
pub struct Link {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The subject CN of the client's verified certificate, if any.
    pub certificate_user: Option<String>,
}

/// Where a connection is in its SASL exchange.
#[derive(Debug, Default)]
pub struct SaslSession {
    step: Step,
}

#[derive(Debug, Default)]
enum Step {
    #[default]
    Idle,
    Plain,
    ScramFirst,
    ScramFinal(Box<ServerFirst>),
}

/// The answer to one SASL request, and the caller it made (on success).
type Answered = (Result<Response, BrokerError>, Option<Caller>);

fn failed(message: impl Into<String>) -> BrokerError {
    BrokerError::new(ErrorKind::AuthenticationFailed, message)
}

impl SaslSession {
    /// Answers a SaslHandshake or SaslAuthenticate request.
    pub async fn answer(&mut self, broker: &Broker, link: &Link, request: Request) -> Answered {
        match request {
            Request::SaslHandshake(req) => (self.handshake(broker, link, req), None),
            Request::SaslAuthenticate(req) => self.authenticate(broker, link, req.auth_bytes).await,
            other => (
                Err(failed(format!(
                    "{:?} is not part of authentication",
                    other.api_key()
                ))),
                None,
            ),
        }
    }

    fn handshake(
        &mut self,
        broker: &Broker,
        link: &Link,
        req: SaslHandshakeRequest,
    ) -> Result<Response, BrokerError> {
        self.step = Step::Idle;
        if !broker.requires_authentication() {
            return Err(failed(
                "this broker has no users (it runs without --users): connect without a user and password",
            ));
        }
        let mechanisms = broker.sasl_mechanisms(link.tls);
        if !mechanisms.contains(&req.mechanism) {
            return Err(failed(if req.mechanism == PLAIN {
                "PLAIN sends the password itself and this connection is not TLS: authenticate with SCRAM-SHA-256, or connect with TLS".to_owned()
            } else {
                format!(
                    "mechanism {:?} is not offered; this connection offers {}",
                    req.mechanism,
                    mechanisms.join(", ")
                )
            }));
        }
        self.step = if req.mechanism == PLAIN {
            Step::Plain
        } else {
            Step::ScramFirst
        };
        Ok(SaslHandshakeResponse { mechanisms }.into())
    }

    async fn authenticate(&mut self, broker: &Broker, link: &Link, bytes: Bytes) -> Answered {
        match std::mem::take(&mut self.step) {
            Step::Idle => (
                Err(failed("send SaslHandshake first, naming the mechanism")),
                None,
            ),
            Step::Plain => match plain(&bytes) {
                Ok((user, password)) => {
                    let checked = broker
                        .authenticate_password(link.peer, link.tls, &user, password)
                        .await;
                    match checked {
                        Ok(caller) => (Ok(sasl_response(Bytes::new())), Some(caller)),
                        Err(e) => (Err(e), None),
                    }
                }
                Err(e) => (Err(e), None),
            },
            Step::ScramFirst => match broker.scram_first(link.peer, &bytes) {
                Ok(first) => {
                    let message = Bytes::copy_from_slice(first.message());
                    self.step = Step::ScramFinal(Box::new(first));
                    (Ok(sasl_response(message)), None)
                }
                Err(e) => (Err(e), None),
            },
            Step::ScramFinal(first) => {
                match broker.scram_final(link.peer, link.tls, *first, &bytes) {
                    Ok((caller, last)) => (Ok(sasl_response(Bytes::from(last))), Some(caller)),
                    Err(e) => (Err(e), None),
                }
            }
        }
    }
}

fn sasl_response(auth_bytes: Bytes) -> Response {
    SaslAuthenticateResponse { auth_bytes }.into()
}

/// A PLAIN message (RFC 4616): `authzid NUL authcid NUL password`; the
/// authorization identity must be empty or the user itself.
fn plain(message: &[u8]) -> Result<(String, &[u8]), BrokerError> {
    let malformed = || failed("the PLAIN message is not authzid NUL user NUL password");
    let mut parts = message.splitn(3, |b| *b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let user = std::str::from_utf8(user).map_err(|_| malformed())?;
    if user.is_empty() || (!authzid.is_empty() && authzid != user.as_bytes()) {
        return Err(malformed());
    }
    Ok((user.to_owned(), password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_are_split_and_checked() {
        assert_eq!(
            plain(b"\0alice\0pw").ok(),
            Some(("alice".into(), &b"pw"[..]))
        );
        assert_eq!(
            plain(b"alice\0alice\0p\0w").ok(),
            Some(("alice".into(), &b"p\0w"[..]))
        );
        assert!(plain(b"bob\0alice\0pw").is_err(), "another authzid");
        assert!(plain(b"\0\0pw").is_err(), "no user");
        assert!(plain(b"alice").is_err());
        let err = plain(b"\0\xff\0secret").expect_err("not UTF-8");
        assert!(!err.message.contains("secret"));
    }
}
