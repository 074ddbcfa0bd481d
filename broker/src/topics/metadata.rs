//! `topic.json`: what a topic is, persisted in its directory.
//!
//! ```json
//! {"version":1,"name":"orders","partitions":3,"retention_ms":86400000,"retention_bytes":null,"created_ms":1700000000000}
//! ```
//!
//! Written with [`write_atomically`](crate::io::write_atomically) (temp file,
//! fsync, rename, fsync dir): after a crash it is either absent or whole.

use serde::{Deserialize, Serialize};

/// The persisted description of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMetadata {
    /// Format version of this file; 1.
    pub version: u32,
    /// Topic name (also the directory name).
    pub name: String,
    /// Number of partitions, numbered 0..partitions.
    pub partitions: u32,
    /// Retention by age for this topic; `None`: the broker default.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition; `None`: the broker default.
    pub retention_bytes: Option<u64>,
    /// When the topic was created (ms since the Unix epoch).
    pub created_ms: i64,
}

/// File name inside a topic directory.
pub const FILE_NAME: &str = "topic.json";

impl TopicMetadata {
    /// Encodes as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes, refusing files of another version.
    pub fn from_json(bytes: &[u8]) -> Result<TopicMetadata, String> {
        let meta: TopicMetadata = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if meta.version != 1 {
            return Err(format!(
                "topic metadata version {} is not supported",
                meta.version
            ));
        }
        Ok(meta)
    }
}
