//! Opening the consumer groups at broker start: every group directory under
//! `<data-dir>/groups/<topic>/<group>/` holding a `group.json` is a group,
//! and none is skipped silently.
//!
//! | found at start | what happens |
//! | --- | --- |
//! | the group opens | its engine starts (leases open at the stop come back, counted) |
//! | its dead-letter topic is missing (deleted by hand, or by a version that allowed it) | the DLQ topic is created again, empty, with the source's partition count, and a warning is logged; the group runs |
//! | its source topic is missing, or its state cannot be read (damaged `group.json`, snapshot or journal) | the group is **broken**: logged as an error, named by `/ready` (503), and every operation on it answers why and what to do (`CorruptStoredData`); `pigeon group delete` removes it |
//! | a directory without `group.json` | a create interrupted before its metadata was written (nothing was acknowledged): logged and left; a create of that name replaces it |
//!
//! Why broken rather than refusing to start: one group's state is one
//! group's problem. The broker keeps serving every other topic and group,
//! the operator sees the broken group in `/ready`, the logs and every answer
//! about it, and can repair it with the broker's own tools (`group delete`)
//! instead of editing the data directory with the broker down. What is
//! missing or damaged is left as found, so restoring the files and
//! restarting brings the group back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::dlq::dlq_topic;
use super::{GroupEntry, Groups, error, key, starts};
use crate::delivery::store::{GroupStore, META_FILE};
use crate::error::{BrokerError, ErrorKind};
use crate::io::{FileSystem, create_dir_durably};
use crate::log::{Clock, LogConfig};
use crate::topics::{DeadLettersOf, NewTopic, Topics};

impl Groups {
    /// Opens every group under `<data_dir>/groups` and starts its engine;
    /// a group that cannot run is kept as broken (see the module doc).
    /// Fails only when the groups directory itself cannot be read.
    pub async fn open(
        fs: Arc<dyn FileSystem>,
        data_dir: &Path,
        log: &LogConfig,
        snapshot_every: u64,
        clock: Arc<dyn Clock>,
        topics: &Topics,
    ) -> Result<Groups, BrokerError> {
        let root = data_dir.join("groups");
        create_dir_durably(fs.as_ref(), &root, data_dir).map_err(|e| {
            error(
                ErrorKind::Storage,
                format!("creating {}: {e}", root.display()),
            )
        })?;
        // Journals roll at 16 MiB (or the broker's segment size, if
        // smaller): with a snapshot every few MiB, segments wholly covered
        // by a snapshot are deleted, so a journal stays within a few
        // segments however long the group runs. Their batch limit is their
        // own, whatever topics are given.
        let journal_config = LogConfig {
            segment_bytes: log.segment_bytes.min(16 * 1024 * 1024),
            retention_ms: None,
            retention_bytes: None,
            max_batch_bytes: crate::delivery::store::JOURNAL_MAX_BATCH_BYTES,
            ..log.clone()
        };
        let groups = Groups {
            root,
            fs,
            clock,
            journal_config,
            snapshot_every,
            groups: Mutex::new(BTreeMap::new()),
            broken: Mutex::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            max_per_topic: std::sync::atomic::AtomicU32::new(u32::MAX),
        };
        let list = |dir: &Path| {
            groups.fs.read_dir(dir).map_err(|e| {
                error(
                    ErrorKind::Storage,
                    format!("listing {}: {e}", dir.display()),
                )
            })
        };
        for topic_dir in list(&groups.root)? {
            for group_dir in list(&topic_dir)? {
                groups.open_one(&topic_dir, &group_dir, topics).await;
            }
        }
        Ok(groups)
    }

    /// Opens the group stored in `group_dir` (under `topic_dir`) and starts
    /// its engine, or records it as broken.
    async fn open_one(&self, topic_dir: &Path, group_dir: &Path, topics: &Topics) {
        let names = (topic_dir.file_name(), group_dir.file_name());
        let (Some(topic), Some(group)) = (
            names.0.and_then(|n| n.to_str()),
            names.1.and_then(|n| n.to_str()),
        ) else {
            tracing::warn!(dir = %group_dir.display(), "ignoring a directory under groups/ whose name no group can have");
            return;
        };
        if !self.fs.exists(&group_dir.join(META_FILE)) {
            tracing::warn!(
                topic,
                group,
                dir = %group_dir.display(),
                "ignoring a group directory without {META_FILE}: a create interrupted before it was acknowledged; a create of this group replaces it"
            );
            return;
        }
        match self.start_existing(topic, group, group_dir, topics).await {
            Ok(entry) => {
                self.groups.lock().insert(key(topic, group), entry);
            }
            Err(why) => {
                let message = format!(
                    "group {group} of topic {topic} cannot run: {why}; restore what is missing and restart the broker, or delete the group with `pigeon group delete {group} --topic {topic}`"
                );
                tracing::error!("{message}");
                self.broken.lock().insert(key(topic, group), message);
            }
        }
    }

    /// Starts the existing group `group` of `topic` stored in `dir`; an
    /// error says why it cannot run.
    async fn start_existing(
        &self,
        topic: &str,
        group: &str,
        dir: &Path,
        topics: &Topics,
    ) -> Result<GroupEntry, String> {
        let source = topics.get(topic).ok_or_else(|| {
            format!(
                "its topic {topic} is gone (its directory was removed while the broker was down)"
            )
        })?;
        let name = dlq_topic(topic, group);
        let dlq = match topics.get(&name) {
            Some(dlq) => dlq,
            None => {
                let new = NewTopic {
                    name: name.clone(),
                    partitions: source.metadata.partitions,
                    retention_ms: None,
                    retention_bytes: None,
                };
                let of = DeadLettersOf {
                    topic: topic.to_owned(),
                    group: group.to_owned(),
                };
                let created = topics
                    .create_dead_letter_topic(new, of)
                    .await
                    .map_err(|e| {
                        format!(
                            "its dead-letter topic {name} is missing and cannot be created: {e}"
                        )
                    })?;
                tracing::warn!(
                    topic,
                    group,
                    "created the missing dead-letter topic {name} of group {group} (it was deleted while the broker was down, or by an older version); messages parked in it before are gone"
                );
                created
            }
        };
        let (store, states) = GroupStore::open(
            self.fs.clone(),
            dir,
            &starts(&source),
            self.journal_config.clone(),
            self.clock.clone(),
        )
        .map_err(|e| format!("its state cannot be read: {e}"))?;
        let store = store.with_snapshot_every(self.snapshot_every);
        Ok(self.run(topic, group, store, states, source, dlq))
    }
}
