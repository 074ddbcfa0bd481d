//! `topic.json`: what a topic is, persisted in its directory.
//!
//! ```json
//! {"version":1,"name":"orders","partitions":3,"retention_ms":86400000,"retention_bytes":null,"created_ms":1700000000000}
//! ```
//!
//! A dead-letter topic created by the broker also names whose dead letters
//! it holds (absent from every other topic's file, and from dead-letter
//! topics created by versions before it):
//!
//! ```json
//! {"version":1,"name":"orders.billing.dlq",...,"dead_letters_of":{"topic":"orders","group":"billing"}}
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
    /// For a dead-letter topic the broker created: the group whose dead
    /// letters it holds. A group adopts an existing topic of its
    /// dead-letter name only when this names it (see `groups::dlq_of`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters_of: Option<DeadLettersOf>,
}

/// The group a dead-letter topic belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersOf {
    /// The group's topic.
    pub topic: String,
    /// The group.
    pub group: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> TopicMetadata {
        TopicMetadata {
            version: 1,
            name: "orders".into(),
            partitions: 3,
            retention_ms: Some(86_400_000),
            retention_bytes: None,
            created_ms: 1_700_000_000_000,
            dead_letters_of: None,
        }
    }

    #[test]
    fn a_plain_topic_is_written_as_before_dead_letter_topics_existed() {
        let json = String::from_utf8(orders().to_json()).expect("utf-8");
        assert_eq!(
            json,
            r#"{"version":1,"name":"orders","partitions":3,"retention_ms":86400000,"retention_bytes":null,"created_ms":1700000000000}"#
        );
        assert_eq!(TopicMetadata::from_json(json.as_bytes()), Ok(orders()));
    }

    #[test]
    fn a_dead_letter_topic_names_its_group_and_reads_back() {
        let dlq = TopicMetadata {
            name: "orders.billing.dlq".into(),
            dead_letters_of: Some(DeadLettersOf {
                topic: "orders".into(),
                group: "billing".into(),
            }),
            ..orders()
        };
        let json = String::from_utf8(dlq.to_json()).expect("utf-8");
        assert!(
            json.ends_with(r#","dead_letters_of":{"topic":"orders","group":"billing"}}"#),
            "{json}"
        );
        assert_eq!(TopicMetadata::from_json(json.as_bytes()), Ok(dlq));
    }
}
