//! SaslHandshake (API key 1): the client names the SASL mechanism it will
//! authenticate with; the broker answers with the mechanisms it offers.
//!
//! Sent after the Handshake, before any other request, on a broker with
//! users configured (`--users`). `PLAIN` is offered only on a TLS
//! connection (it sends the password itself); `SCRAM-SHA-256` everywhere.
//! A mechanism the broker does not offer here, or a broker without users,
//! is answered `AuthenticationFailed`, whose message lists what is offered.
//!
//! Request v0: `mechanism` string (1–64 bytes, e.g. `SCRAM-SHA-256`).
//! Response v0: `mechanisms` array of string (the mechanisms offered on
//! this connection).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::wire::{Reader, Writer};

/// Longest SASL mechanism name (RFC 4422 allows 20 characters).
pub const MAX_SASL_MECHANISM_LEN: usize = 64;

/// The mechanism the client will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeRequest {
    /// `PLAIN` or `SCRAM-SHA-256`.
    pub mechanism: String,
}

/// The mechanisms the broker offers on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeResponse {
    /// Mechanism names.
    pub mechanisms: Vec<String>,
}

impl Message for SaslHandshakeRequest {
    const API_KEY: ApiKey = ApiKey::SaslHandshake;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.string("mechanism", &self.mechanism, MAX_SASL_MECHANISM_LEN)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let start = r.offset();
        let mechanism = r.string("mechanism", MAX_SASL_MECHANISM_LEN)?;
        if mechanism.is_empty() {
            return Err(CodecError::new(
                start,
                CodecErrorKind::InvalidValue {
                    field: "mechanism",
                    value: 0,
                },
            ));
        }
        Ok(SaslHandshakeRequest { mechanism })
    }
}

impl Message for SaslHandshakeResponse {
    const API_KEY: ApiKey = ApiKey::SaslHandshake;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("mechanisms", &self.mechanisms, false, |w, m| {
            w.string("mechanism", m, MAX_SASL_MECHANISM_LEN)
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(SaslHandshakeResponse {
            mechanisms: r.vec("mechanisms", 2, false, |r| {
                r.string("mechanism", MAX_SASL_MECHANISM_LEN)
            })?,
        })
    }
}
