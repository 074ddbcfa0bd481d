//! SaslAuthenticate (API key 2): one step of the SASL exchange chosen by
//! SaslHandshake; the bytes are the mechanism's own messages.
//!
//! - `PLAIN` (RFC 4616, TLS connections only): one step; the request
//!   carries `authzid NUL authcid NUL password` (authzid empty or equal to
//!   authcid), the response is empty.
//! - `SCRAM-SHA-256` (RFC 5802, RFC 7677; no channel binding, gs2 header
//!   `n,,`): two steps; the first request carries the client-first message
//!   and the response the server-first message; the second request carries
//!   the client-final message and the response the server-final message
//!   (`v=` server signature, which the client checks).
//!
//! A failed step is answered `AuthenticationFailed` (the exchange is over;
//! start again with SaslHandshake). Once the last step succeeded, the
//! connection acts as the user.
//!
//! Request v0: `auth_bytes` bytes (at most 4096).
//! Response v0: `auth_bytes` bytes.

use bytes::Bytes;

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Largest SASL message in either direction.
pub const MAX_SASL_BYTES: u64 = 4096;

/// One client message of the exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslAuthenticateRequest {
    /// The mechanism's message (may hold a password: never logged).
    pub auth_bytes: Bytes,
}

/// One server message of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateResponse {
    /// The mechanism's message (empty for PLAIN).
    pub auth_bytes: Bytes,
}

impl std::fmt::Debug for SaslAuthenticateRequest {
    /// The bytes may be a password: only their length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslAuthenticateRequest")
            .field(
                "auth_bytes",
                &format_args!("<{} bytes>", self.auth_bytes.len()),
            )
            .finish()
    }
}

impl Message for SaslAuthenticateRequest {
    const API_KEY: ApiKey = ApiKey::SaslAuthenticate;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.bytes("auth_bytes", &self.auth_bytes)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(SaslAuthenticateRequest {
            auth_bytes: r.bytes("auth_bytes", MAX_SASL_BYTES)?,
        })
    }
}

impl Message for SaslAuthenticateResponse {
    const API_KEY: ApiKey = ApiKey::SaslAuthenticate;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.bytes("auth_bytes", &self.auth_bytes)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(SaslAuthenticateResponse {
            auth_bytes: r.bytes("auth_bytes", MAX_SASL_BYTES)?,
        })
    }
}
