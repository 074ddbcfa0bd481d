//! Broker-wide administration: list the consumer groups with their
//! progress, alter a topic's retention, describe the broker.
//!
//! Listing asks every group's engine at once and waits for each (an admin
//! call may wait; a scrape may not, see `samples.rs`); a group deleted
//! meanwhile is left out. Altering a topic is the topics' own operation
//! (its crash story is in [`crate::topics`]). Describing the broker reads
//! the settings in effect (secrets hidden, see
//! [`crate::config::is_secret`]) and walks the data directory for its size.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Broker;
use crate::error::{BrokerError, ErrorKind};
use crate::topics::RetentionChange;

/// One consumer group and its progress over all partitions of its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group's topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// Whether deliveries are paused.
    pub paused: bool,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Messages not settled, all partitions together.
    pub lag: u64,
    /// Messages leased now.
    pub in_flight: u64,
    /// Messages waiting for a redelivery.
    pub delayed: u64,
    /// Messages parked in the dead-letter topic.
    pub dead_lettered: u64,
}

/// A topic's retention after an alter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionInEffect {
    /// By age, ms (defaults applied); `None`: forever.
    pub retention_ms: Option<u64>,
    /// By size per partition, bytes (defaults applied); `None`: unlimited.
    pub retention_bytes: Option<u64>,
    /// Segments deleted at once under the new limits.
    pub segments_deleted: usize,
}

/// What the broker is and runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDescription {
    /// Name and version of the build.
    pub version: String,
    /// When the broker opened its data directory (ms since the epoch).
    pub started_ms: i64,
    /// Time since then.
    pub uptime: Duration,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Bytes of every file under it.
    pub data_dir_bytes: u64,
    /// Topics.
    pub topics: usize,
    /// Consumer groups.
    pub groups: usize,
    /// Every setting in effect by key, secrets hidden.
    pub config: Vec<(&'static str, String)>,
}

impl Broker {
    /// The consumer groups of `topic` (of every topic with `None`), by
    /// topic then group, each with its progress summed over partitions.
    ///
    /// Only the groups `keep` accepts are listed; `fits` is told each
    /// listed group's names before any group is asked for its figures, and
    /// its refusal (the answer would not fit in a frame) is the answer.
    pub(super) async fn list_groups(
        &self,
        topic: Option<&str>,
        keep: impl Fn(&str, &str) -> bool,
        mut fits: impl FnMut(&str, &str) -> Result<(), BrokerError>,
    ) -> Result<Vec<GroupSummary>, BrokerError> {
        if let Some(name) = topic {
            self.topic(name)?;
        }
        let entries = self.groups.list().into_iter();
        let mut wanted = Vec::new();
        for (t, group, entry) in entries {
            if topic.is_none_or(|only| only == t) && keep(&t, &group) {
                fits(&t, &group)?;
                wanted.push((t, group, entry));
            }
        }
        let asks = wanted.into_iter().map(|(topic, group, entry)| async move {
            let (paused, figures) = entry.handle.describe().await.ok()?;
            Some(GroupSummary {
                topic,
                group,
                paused,
                partitions: figures.len() as u32,
                lag: figures.iter().map(|f| f.lag).sum(),
                in_flight: figures.iter().map(|f| f.in_flight).sum(),
                delayed: figures.iter().map(|f| f.delayed).sum(),
                dead_lettered: figures.iter().map(|f| f.dead_lettered).sum(),
            })
        });
        let answers = futures_util::future::join_all(asks).await;
        Ok(answers.into_iter().flatten().collect())
    }

    /// Changes a topic's retention (durably), applies it at once, and says
    /// what is in effect.
    pub(super) async fn alter_topic(
        &self,
        name: &str,
        retention_ms: RetentionChange,
        retention_bytes: RetentionChange,
    ) -> Result<RetentionInEffect, BrokerError> {
        if retention_ms == RetentionChange::Keep && retention_bytes == RetentionChange::Keep {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfig,
                "the alter changes nothing: give a new retention_ms or retention_bytes",
            ));
        }
        let altered = self
            .topics
            .alter_retention(name, retention_ms, retention_bytes)
            .await?;
        Ok(RetentionInEffect {
            retention_ms: altered.retention_ms,
            retention_bytes: altered.retention_bytes,
            segments_deleted: altered.segments_deleted,
        })
    }

    /// The broker's version, uptime, settings and data directory usage.
    pub(super) async fn describe_broker(&self) -> BrokerDescription {
        let data_dir = self.config.data_dir.clone();
        let walked = data_dir.clone();
        let bytes = tokio::task::spawn_blocking(move || directory_bytes(&walked)).await;
        let uptime = self.started.elapsed();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        BrokerDescription {
            version: format!("pigeon-broker {}", env!("CARGO_PKG_VERSION")),
            started_ms: now_ms - uptime.as_millis() as i64,
            uptime,
            data_dir,
            data_dir_bytes: bytes.unwrap_or(0),
            topics: self.topics.list().len(),
            groups: self.groups.list().len(),
            config: self.config.settings_in_effect(),
        }
    }
}

/// Bytes of every regular file under `root` (symbolic links are not
/// followed; an entry that vanishes or cannot be read while walking is
/// skipped: topics and segments come and go).
fn directory_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_s_bytes_are_its_files_at_every_depth() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("a/b")).expect("dirs");
        std::fs::write(tmp.path().join("one"), [0u8; 10]).expect("write");
        std::fs::write(tmp.path().join("a/b/two"), [0u8; 32]).expect("write");
        std::os::unix::fs::symlink(tmp.path().join("one"), tmp.path().join("a/link"))
            .expect("symlink");
        assert_eq!(directory_bytes(tmp.path()), 42, "links are not followed");
        assert_eq!(directory_bytes(&tmp.path().join("missing")), 0);
    }
}
