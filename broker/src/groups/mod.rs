//! Consumer groups of the broker: creating, opening (at start), finding and
//! deleting them, and running one [`engine`](crate::delivery::engine) each.
//!
//! ```text
//! <data-dir>/groups/<topic>/<group>/     a group's store (see delivery::store)
//! <topic>.<group>.dlq                    its dead-letter topic (an ordinary topic,
//!                                        as many partitions as the source)
//! ```
//!
//! Create writes the store (metadata first, atomically) after creating the
//! dead-letter topic; a crash in between leaves a DLQ topic without a group,
//! which the next create reuses. Every directory is created durably (its
//! name synced in its parent, up to `groups/`, which is itself synced into
//! the data directory at open), and a delete syncs the parent after the
//! removal, so a power cut neither loses an acknowledged group nor brings a
//! deleted one back. A new group starts at each partition's log
//! start: it delivers everything the topic still holds.

pub mod dlq;
pub mod redrive;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use pigeon_protocol::validate_topic_name;

use crate::delivery::GroupSettings;
use crate::delivery::engine::{self, GroupHandle};
use crate::delivery::store::{GroupMeta, GroupStore, META_FILE};
use crate::error::{BrokerError, ErrorKind};
use crate::io::{FileSystem, create_dir_durably, sync_parent};
use crate::log::{Clock, LogConfig};
use crate::topics::{NewTopic, Topic, Topics};
use dlq::{DlqSink, dlq_topic};
use source::TopicSource;

/// A running group.
#[derive(Debug, Clone)]
pub struct GroupEntry {
    /// Its engine.
    pub handle: GroupHandle,
    /// Its settings when last set.
    pub settings: GroupSettings,
}

/// Every consumer group of the broker.
pub struct Groups {
    root: PathBuf,
    fs: Arc<dyn FileSystem>,
    clock: Arc<dyn Clock>,
    journal_config: LogConfig,
    /// Journal bytes between two snapshots of a group partition's state.
    snapshot_every: u64,
    groups: Mutex<BTreeMap<(String, String), GroupEntry>>,
    /// Serialises create and delete.
    admin: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> BrokerError {
    BrokerError::new(kind, message)
}

impl Groups {
    /// Opens every group under `<data_dir>/groups` and starts its engine.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        data_dir: &std::path::Path,
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
        // segments however long the group runs.
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
            admin: tokio::sync::Mutex::new(()),
        };
        let list = |dir: &std::path::Path| {
            groups.fs.read_dir(dir).map_err(|e| {
                error(
                    ErrorKind::Storage,
                    format!("listing {}: {e}", dir.display()),
                )
            })
        };
        for topic_dir in list(&groups.root)? {
            for group_dir in list(&topic_dir)? {
                groups.open_one(&topic_dir, &group_dir, topics)?;
            }
        }
        Ok(groups)
    }

    /// Opens the group stored in `group_dir` (under `topic_dir`) and
    /// starts its engine; skips a directory that holds no group, and a
    /// group whose topic or dead-letter topic is gone.
    fn open_one(
        &self,
        topic_dir: &std::path::Path,
        group_dir: &std::path::Path,
        topics: &Topics,
    ) -> Result<(), BrokerError> {
        if !self.fs.exists(&group_dir.join(META_FILE)) {
            return Ok(());
        }
        let names = (topic_dir.file_name(), group_dir.file_name());
        let (Some(topic), Some(group)) = (
            names.0.and_then(|n| n.to_str()),
            names.1.and_then(|n| n.to_str()),
        ) else {
            return Ok(());
        };
        let (Some(source), Some(dlq)) = (topics.get(topic), topics.get(&dlq_topic(topic, group)))
        else {
            tracing::warn!(
                topic,
                group,
                "skipping a group whose topic or dead-letter topic is gone"
            );
            return Ok(());
        };
        let starts = starts(&source);
        let (store, states) = GroupStore::open(
            self.fs.clone(),
            group_dir,
            &starts,
            self.journal_config.clone(),
            self.clock.clone(),
        )
        .map_err(|e| {
            error(
                ErrorKind::Storage,
                format!("opening group {group} of topic {topic}: {e}"),
            )
        })?;
        let store = store.with_snapshot_every(self.snapshot_every);
        let entry = self.run(topic, group, store, states, source, dlq);
        self.groups
            .lock()
            .insert((topic.to_owned(), group.to_owned()), entry);
        Ok(())
    }

    fn run(
        &self,
        topic: &str,
        group: &str,
        store: GroupStore,
        states: Vec<crate::delivery::PartitionDelivery>,
        source: Arc<Topic>,
        dlq: Arc<Topic>,
    ) -> GroupEntry {
        let settings = store.meta().settings();
        let paused = store.meta().paused;
        let sink = DlqSink {
            dlq,
            source_topic: topic.to_owned(),
            group: group.to_owned(),
        };
        let handle = engine::start(
            settings,
            paused,
            states,
            Some(store),
            Arc::new(TopicSource(source)),
            Arc::new(sink),
        );
        GroupEntry { handle, settings }
    }

    /// The running group `group` of `topic`.
    pub fn get(&self, topic: &str, group: &str) -> Result<GroupEntry, BrokerError> {
        self.groups
            .lock()
            .get(&(topic.to_owned(), group.to_owned()))
            .cloned()
            .ok_or_else(|| BrokerError::unknown_group(topic, group))
    }

    /// Creates a group (and its dead-letter topic) and starts it.
    pub async fn create(
        &self,
        topics: &Topics,
        topic: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<(), BrokerError> {
        validate_topic_name(group)
            .map_err(|e| error(ErrorKind::InvalidRequest, format!("group name: {e}")))?;
        settings
            .validate()
            .map_err(|e| error(ErrorKind::InvalidConfig, e))?;
        let _admin = self.admin.lock().await;
        if self.get(topic, group).is_ok() {
            return Err(error(
                ErrorKind::GroupExists,
                format!("group {group} of topic {topic} already exists"),
            ));
        }
        let source = topics.get(topic).ok_or_else(|| {
            error(
                ErrorKind::UnknownTopic,
                format!("topic {topic} does not exist"),
            )
        })?;
        let dlq_name = dlq_topic(topic, group);
        validate_topic_name(&dlq_name).map_err(|_| error(ErrorKind::InvalidRequest, format!("the dead-letter topic name {dlq_name} would be too long: shorten the topic or group name")))?;
        let dlq = match topics.get(&dlq_name) {
            Some(dlq) => dlq,
            None => {
                let new = NewTopic {
                    name: dlq_name,
                    partitions: source.metadata.partitions,
                    retention_ms: None,
                    retention_bytes: None,
                };
                topics.create(new).await?
            }
        };
        let meta = GroupMeta::new(topic, group, &settings, self.clock.now_ms());
        let dir = self.root.join(topic).join(group);
        if self.fs.exists(&dir) {
            // Not a live group (checked above): state left by a group of an
            // earlier topic of this name (deleted while the broker was
            // down, or skipped at startup). It must not steer the new group.
            tracing::warn!(topic, group, dir = %dir.display(), "removing stale state of an earlier group of this name");
            self.fs.remove_dir_all(&dir).map_err(|e| {
                error(
                    ErrorKind::Storage,
                    format!("removing stale group state {}: {e}", dir.display()),
                )
            })?;
        }
        let (store, states) = GroupStore::create(
            self.fs.clone(),
            &dir,
            meta,
            &starts(&source),
            self.journal_config.clone(),
            self.clock.clone(),
        )
        .map_err(|e| error(ErrorKind::Storage, format!("creating group {group}: {e}")))?;
        let store = store.with_snapshot_every(self.snapshot_every);
        let entry = self.run(topic, group, store, states, source, dlq);
        self.groups
            .lock()
            .insert((topic.to_owned(), group.to_owned()), entry);
        Ok(())
    }

    /// Stops and deletes a group (its dead-letter topic stays).
    pub async fn delete(&self, topic: &str, group: &str) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let removed = self
            .groups
            .lock()
            .remove(&(topic.to_owned(), group.to_owned()));
        let entry = removed.ok_or_else(|| {
            error(
                ErrorKind::UnknownGroup,
                format!("group {group} of topic {topic} does not exist"),
            )
        })?;
        // The engine appends its last journal events and ends before its
        // files go.
        entry.handle.stop().await;
        self.remove_durably(&self.root.join(topic).join(group))
    }

    /// Removes `dir` and everything in it, then syncs its parent (or a
    /// power cut brings it back).
    fn remove_durably(&self, dir: &std::path::Path) -> Result<(), BrokerError> {
        self.fs
            .remove_dir_all(dir)
            .and_then(|()| sync_parent(self.fs.as_ref(), dir))
            .map_err(|e| {
                error(
                    ErrorKind::Storage,
                    format!("deleting {}: {e}", dir.display()),
                )
            })
    }

    /// Stops every group's engine at broker shutdown: each writes its last
    /// journal events (acks answered just before the shutdown included)
    /// and closes its journals cleanly, so a graceful restart redelivers
    /// nothing that was acked.
    pub async fn close(&self) {
        let handles: Vec<GroupHandle> = self
            .groups
            .lock()
            .values()
            .map(|entry| entry.handle.clone())
            .collect();
        futures_util::future::join_all(handles.iter().map(GroupHandle::stop)).await;
    }

    /// Deletes every group of `topic` (the topic is being deleted: its
    /// groups' progress would be meaningless, and harmful, on a new topic
    /// of the same name). Returns the groups deleted.
    pub async fn delete_all_of(&self, topic: &str) -> Result<Vec<String>, BrokerError> {
        let names: Vec<String> = self
            .groups
            .lock()
            .keys()
            .filter(|(t, _)| t == topic)
            .map(|(_, g)| g.clone())
            .collect();
        for group in &names {
            match self.delete(topic, group).await {
                Ok(()) => {}
                // Deleted meanwhile by someone else.
                Err(e) if e.kind == ErrorKind::UnknownGroup => {}
                Err(e) => return Err(e),
            }
        }
        let dir = self.root.join(topic);
        if self.fs.exists(&dir) {
            self.remove_durably(&dir)?;
        }
        Ok(names)
    }

    /// Moves parked messages back to the source topic (see [`redrive`]).
    pub async fn redrive(
        &self,
        topics: &Topics,
        topic: &str,
        group: &str,
        max: u64,
        dry_run: bool,
        rate_per_sec: u32,
    ) -> Result<Vec<redrive::Redriven>, BrokerError> {
        self.get(topic, group)?;
        let source = topics.get(topic).ok_or_else(|| {
            error(
                ErrorKind::UnknownTopic,
                format!("topic {topic} does not exist"),
            )
        })?;
        let dlq = topics.get(&dlq_topic(topic, group)).ok_or_else(|| {
            error(
                ErrorKind::UnknownTopic,
                format!("the dead-letter topic of group {group} is gone"),
            )
        })?;
        // One redrive of a group at a time.
        let _admin = self.admin.lock().await;
        let dir = self.root.join(topic).join(group);
        redrive::redrive(
            self.fs.as_ref(),
            &dir,
            &source,
            &dlq,
            max,
            dry_run,
            rate_per_sec,
        )
        .await
        .map_err(|e| error(ErrorKind::Storage, e))
    }

    /// Every running group: `(topic, group, entry)`.
    pub fn list(&self) -> Vec<(String, String, GroupEntry)> {
        let groups = self.groups.lock();
        let all = groups
            .iter()
            .map(|((t, g), e)| (t.clone(), g.clone(), e.clone()));
        all.collect()
    }

    /// Records the new settings of a group.
    pub fn set_settings(&self, topic: &str, group: &str, settings: GroupSettings) {
        if let Some(entry) = self
            .groups
            .lock()
            .get_mut(&(topic.to_owned(), group.to_owned()))
        {
            entry.settings = settings;
        }
    }
}

/// Where a new group starts in each partition: the log start.
fn starts(topic: &Topic) -> Vec<u64> {
    topic
        .partitions
        .iter()
        .map(|p| p.reader().start_offset())
        .collect()
}
