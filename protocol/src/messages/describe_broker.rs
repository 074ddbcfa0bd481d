//! DescribeBroker (API key 60): what the broker is and runs with.
//!
//! Request v0: empty body.
//!
//! Response v0: `version` string (the broker's build, e.g.
//! `pigeon-broker 0.1.0`), `started_ms` i64 (when it started, ms since the
//! Unix epoch), `uptime_ms` u64, `data_dir` string, `data_dir_bytes` u64
//! (bytes of all files under the data directory), `topics` u32, `groups`
//! u32, `config` array of (`key` string, `value` string): every setting in
//! effect by its config-file key, secrets replaced by `(hidden)`.

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Longest string of a DescribeBroker response (a path or a setting).
pub const MAX_DESCRIBE_STRING_LEN: usize = u16::MAX as usize;

/// Describe the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescribeBrokerRequest;

/// One setting in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Its config-file key (`segment_bytes`).
    pub key: String,
    /// Its value as the config file would spell it; `(hidden)` for a secret.
    pub value: String,
}

/// What the broker is and runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeBrokerResponse {
    /// Name and version of the broker's build.
    pub version: String,
    /// When it started, ms since the Unix epoch.
    pub started_ms: i64,
    /// How long it has run, ms.
    pub uptime_ms: u64,
    /// Its data directory.
    pub data_dir: String,
    /// Bytes of every file under the data directory.
    pub data_dir_bytes: u64,
    /// Topics it holds.
    pub topics: u32,
    /// Consumer groups it holds.
    pub groups: u32,
    /// Every setting in effect, by key.
    pub config: Vec<ConfigEntry>,
}

impl Message for DescribeBrokerRequest {
    const API_KEY: ApiKey = ApiKey::DescribeBroker;

    fn encode(&self, _version: u16, _w: &mut Writer<'_>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(_version: u16, _r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DescribeBrokerRequest)
    }
}

impl Message for DescribeBrokerResponse {
    const API_KEY: ApiKey = ApiKey::DescribeBroker;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        const MAX: usize = MAX_DESCRIBE_STRING_LEN;
        w.string("version", &self.version, MAX)?;
        w.i64(self.started_ms);
        w.u64(self.uptime_ms);
        w.string("data_dir", &self.data_dir, MAX)?;
        w.u64(self.data_dir_bytes);
        w.u32(self.topics);
        w.u32(self.groups);
        w.vec("config", &self.config, false, |w, c| {
            w.string("key", &c.key, MAX)?;
            w.string("value", &c.value, MAX)
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        const MAX: usize = MAX_DESCRIBE_STRING_LEN;
        Ok(DescribeBrokerResponse {
            version: r.string("version", MAX)?,
            started_ms: r.i64("started_ms")?,
            uptime_ms: r.u64("uptime_ms")?,
            data_dir: r.string("data_dir", MAX)?,
            data_dir_bytes: r.u64("data_dir_bytes")?,
            topics: r.u32("topics")?,
            groups: r.u32("groups")?,
            config: r.vec("config", 4, false, |r| {
                Ok(ConfigEntry {
                    key: r.string("key", MAX)?,
                    value: r.string("value", MAX)?,
                })
            })?,
        })
    }
}
