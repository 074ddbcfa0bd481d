//! Handshake (API key 0): version negotiation and server limits.
//!
//! The first request on every connection. The client names itself and lists
//! the versions it speaks of every API; the server answers with its own
//! ranges and limits. Each side then uses, per API, the highest version in
//! both ranges. A server keeps decoding Handshake version 0 forever, so any
//! client can always start a conversation.
//!
//! Request v0: `client_name` string (≤ 255 bytes), `api_versions` array of
//! (`api_key` u16, `min_version` u16, `max_version` u16).
//!
//! Response v0: `server_name` string (≤ 255 bytes), `api_versions` array as
//! above, `max_frame_size` u32, `max_batch_size` u32,
//! `max_in_flight_requests` u32.

use super::Message;
use crate::api::{ALL_API_KEYS, ApiKey, VersionRange};
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::limits::{Limits, MAX_SOFTWARE_NAME_LEN};
use crate::wire::{Reader, Writer};

/// The versions one side speaks of one API. The key is raw: a peer may list
/// APIs this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersionRange {
    /// The API key number.
    pub api_key: u16,
    /// Lowest version spoken.
    pub min_version: u16,
    /// Highest version spoken.
    pub max_version: u16,
}

impl ApiVersionRange {
    /// The range as a [`VersionRange`].
    pub fn range(&self) -> VersionRange {
        VersionRange {
            min: self.min_version,
            max: self.max_version,
        }
    }
}

/// The versions this build speaks of every API it knows.
pub fn supported_api_versions() -> Vec<ApiVersionRange> {
    ALL_API_KEYS
        .iter()
        .map(|key| {
            let range = key.supported_versions();
            ApiVersionRange {
                api_key: key.as_u16(),
                min_version: range.min,
                max_version: range.max,
            }
        })
        .collect()
}

/// Handshake request: who the client is and what it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// Client software name and version, e.g. `pigeon-client 0.1.0`.
    pub client_name: String,
    /// The versions the client speaks, per API.
    pub api_versions: Vec<ApiVersionRange>,
}

impl HandshakeRequest {
    /// A handshake listing every API version this build speaks.
    pub fn for_this_build(client_name: impl Into<String>) -> Self {
        HandshakeRequest {
            client_name: client_name.into(),
            api_versions: supported_api_versions(),
        }
    }
}

/// Handshake response: what the server speaks and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// Server software name and version, e.g. `pigeon-broker 0.1.0`.
    pub server_name: String,
    /// The versions the server speaks, per API.
    pub api_versions: Vec<ApiVersionRange>,
    /// Largest frame the server accepts (bytes after the length field).
    pub max_frame_size: u32,
    /// Largest record batch the server accepts.
    pub max_batch_size: u32,
    /// Most requests the server serves concurrently on one connection;
    /// more are answered with `TooManyRequestsInFlight`.
    pub max_in_flight_requests: u32,
}

impl HandshakeResponse {
    /// The highest version of `api` spoken by both this build and the
    /// server, or `None` if the server lacks the API or no version overlaps.
    pub fn negotiate(&self, api: ApiKey) -> Option<u16> {
        self.api_versions
            .iter()
            .find(|v| v.api_key == api.as_u16())
            .and_then(|v| api.supported_versions().highest_common(v.range()))
    }

    /// The server's limits, for configuring a client codec.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_size: self.max_frame_size,
            max_batch_size: self.max_batch_size,
        }
    }
}

fn encode_versions(w: &mut Writer<'_>, versions: &[ApiVersionRange]) -> Result<(), CodecError> {
    w.vec("api_versions", versions, false, |w, v| {
        w.u16(v.api_key);
        w.u16(v.min_version);
        w.u16(v.max_version);
        Ok(())
    })
}

fn decode_versions(r: &mut Reader) -> Result<Vec<ApiVersionRange>, CodecError> {
    r.vec("api_versions", 6, false, |r| {
        let start = r.offset();
        let api_key = r.u16("api_key")?;
        let min_version = r.u16("min_version")?;
        let max_version = r.u16("max_version")?;
        if min_version > max_version {
            return Err(CodecError::new(
                start + 2,
                CodecErrorKind::InvalidValue {
                    field: "min_version",
                    value: u64::from(min_version),
                },
            ));
        }
        Ok(ApiVersionRange {
            api_key,
            min_version,
            max_version,
        })
    })
}

impl Message for HandshakeRequest {
    const API_KEY: ApiKey = ApiKey::Handshake;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.string("client_name", &self.client_name, MAX_SOFTWARE_NAME_LEN)?;
        encode_versions(w, &self.api_versions)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(HandshakeRequest {
            client_name: r.string("client_name", MAX_SOFTWARE_NAME_LEN)?,
            api_versions: decode_versions(r)?,
        })
    }
}

impl Message for HandshakeResponse {
    const API_KEY: ApiKey = ApiKey::Handshake;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.string("server_name", &self.server_name, MAX_SOFTWARE_NAME_LEN)?;
        encode_versions(w, &self.api_versions)?;
        w.u32(self.max_frame_size);
        w.u32(self.max_batch_size);
        w.u32(self.max_in_flight_requests);
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(HandshakeResponse {
            server_name: r.string("server_name", MAX_SOFTWARE_NAME_LEN)?,
            api_versions: decode_versions(r)?,
            max_frame_size: r.u32("max_frame_size")?,
            max_batch_size: r.u32("max_batch_size")?,
            max_in_flight_requests: r.u32("max_in_flight_requests")?,
        })
    }
}
