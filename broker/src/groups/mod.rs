//! Consumer groups of the broker: creating, opening (at start), finding and
//! deleting them, running one [`engine`](crate::delivery::engine) each,
//! and redriving their dead-letter topics.
//!
//! ```text
//! <data-dir>/groups/<topic>/<group>/     a group's store (see delivery::store)
//! <topic>.<group>.dlq                    its dead-letter topic (an ordinary topic,
//!                                        as many partitions as the source)
//! ```
//!
//! | module | job |
//! | --- | --- |
//! | `mod.rs` | [`Groups`]: the running groups; create, delete, find; the DLQ topic's protection |
//! | [`open`] | opening the groups at start; groups that cannot run (broken) |
//! | [`dlq`] | the dead-letter sink: copies with an identity, "already parked?" |
//! | [`redrive`] | moving a group's parked messages back, a page at a time |
//! | [`source`] | the engine's view of its source topic; paged reads |
//!
//! Create writes the store (metadata first, atomically) after creating the
//! dead-letter topic; a crash in between leaves a DLQ topic without a group,
//! which the next create reuses. Every directory is created durably (its
//! name synced in its parent, up to `groups/`, which is itself synced into
//! the data directory at open), and a delete syncs the parent after the
//! removal, so a power cut neither loses an acknowledged group nor brings a
//! deleted one back. A new group starts at each partition's log
//! start: it delivers everything the topic still holds.
//!
//! Invariants: a running group's dead-letter topic exists — deleting it is
//! refused while the group lives ([`Groups::delete_topic`]), and one found
//! missing at start is created again ([`open`]). Create, delete and topic
//! deletion are serialised by one admin lock; a redrive takes only its
//! group's [`RedriveSlot`], never that lock.

pub mod dlq;
pub mod open;
pub mod redrive;
pub mod source;

#[cfg(test)]
mod crash_tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use pigeon_protocol::validate_topic_name;
use tokio_util::sync::CancellationToken;

use crate::delivery::GroupSettings;
use crate::delivery::engine::{self, GroupHandle};
use crate::delivery::store::{GroupMeta, GroupStore};
use crate::error::{BrokerError, ErrorKind};
use crate::io::{FileSystem, sync_parent};
use crate::log::{Clock, LogConfig};
use crate::topics::{DeadLettersOf, NewTopic, Topic, Topics};
use dlq::{DlqIdentity, DlqSink, dlq_topic};
use redrive::{RedriveFilter, RedriveOptions, RedriveReport, RedriveSlot, Stop};
use source::TopicSource;

/// A running group.
#[derive(Debug, Clone)]
pub struct GroupEntry {
    /// Its engine.
    pub handle: GroupHandle,
    /// Its settings when last set.
    pub settings: GroupSettings,
    /// The identity its dead-letter copies carry.
    pub identity: Arc<DlqIdentity>,
    /// Its redrive turn (one at a time; cancelled when it is deleted).
    pub redrive: Arc<RedriveSlot>,
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
    /// Groups found at start that cannot run: why, and what to do. Every
    /// operation on one answers that; deleting it removes its state.
    broken: Mutex<BTreeMap<(String, String), String>>,
    /// Serialises create, delete and topic deletion.
    admin: tokio::sync::Mutex<()>,
    /// `max_groups_per_topic` (see `crate::caps`), checked at create
    /// under `admin`.
    max_per_topic: std::sync::atomic::AtomicU32,
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

fn key(topic: &str, group: &str) -> (String, String) {
    (topic.to_owned(), group.to_owned())
}

impl Groups {
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
        let identity = Arc::new(DlqIdentity {
            source_topic: topic.to_owned(),
            topic_created_ms: source.metadata.created_ms,
            group: group.to_owned(),
            group_created_ms: store.meta().created_ms,
        });
        let sink = DlqSink::new(dlq, DlqIdentity::clone(&identity));
        let handle = engine::start(
            settings,
            paused,
            states,
            Some(store),
            Arc::new(TopicSource(source)),
            Arc::new(sink),
        );
        GroupEntry {
            handle,
            settings,
            identity,
            redrive: Arc::new(RedriveSlot::default()),
        }
    }

    /// The running group `group` of `topic`; a group that could not open
    /// at start answers why and what to do.
    pub fn get(&self, topic: &str, group: &str) -> Result<GroupEntry, BrokerError> {
        let key = key(topic, group);
        if let Some(entry) = self.groups.lock().get(&key) {
            return Ok(entry.clone());
        }
        match self.broken.lock().get(&key) {
            Some(why) => Err(error(ErrorKind::CorruptStoredData, why.clone())),
            None => Err(BrokerError::unknown_group(topic, group)),
        }
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
        match self.get(topic, group) {
            Ok(_) => {
                return Err(error(
                    ErrorKind::GroupExists,
                    format!("group {group} of topic {topic} already exists"),
                ));
            }
            Err(e) if e.kind == ErrorKind::CorruptStoredData => {
                return Err(error(ErrorKind::GroupExists, e.message));
            }
            Err(_) => {}
        }
        let source = topics.get(topic).ok_or_else(|| {
            error(
                ErrorKind::UnknownTopic,
                format!("topic {topic} does not exist"),
            )
        })?;
        self.check_cap(topic, group)?;
        let dlq = self.dlq_of(topics, topic, group, &source).await?;
        let meta = GroupMeta::new(topic, group, &settings, self.clock.now_ms());
        let dir = self.root.join(topic).join(group);
        if self.fs.exists(&dir) {
            // Not a live group (checked above): state left by a group of an
            // earlier topic of this name (deleted while the broker was
            // down). It must not steer the new group.
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
        self.groups.lock().insert(key(topic, group), entry);
        Ok(())
    }

    /// Sets `max_groups_per_topic`.
    pub fn set_max_per_topic(&self, max: u32) {
        self.max_per_topic
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refuses a group beyond `max_groups_per_topic` (broken groups count:
    /// they hold state on disk).
    fn check_cap(&self, topic: &str, group: &str) -> Result<(), BrokerError> {
        let max = self
            .max_per_topic
            .load(std::sync::atomic::Ordering::Relaxed);
        let of_topic = |keys: &mut dyn Iterator<Item = &(String, String)>| {
            keys.filter(|(t, _)| t == topic).count()
        };
        let count =
            of_topic(&mut self.groups.lock().keys()) + of_topic(&mut self.broken.lock().keys());
        if count >= max as usize {
            let what = format!("cannot create group {group} of topic {topic}");
            let advice = "delete unused groups of the topic or raise max_groups_per_topic";
            return Err(crate::caps::cap_reached(
                &what,
                "max_groups_per_topic",
                max,
                advice,
            ));
        }
        Ok(())
    }

    /// The dead-letter topic of `group` of `topic` (`source`), created if
    /// missing with the source's partition count.
    async fn dlq_of(
        &self,
        topics: &Topics,
        topic: &str,
        group: &str,
        source: &Topic,
    ) -> Result<Arc<Topic>, BrokerError> {
        let name = dlq_topic(topic, group);
        validate_topic_name(&name).map_err(|_| error(ErrorKind::InvalidRequest, format!("the dead-letter topic name {name} would be too long: shorten the topic or group name")))?;
        let taken = self.groups.lock().keys().find_map(|(t, g)| {
            (dlq_topic(t, g) == name && (t != topic || g != group)).then(|| (t.clone(), g.clone()))
        });
        if let Some((other_topic, other_group)) = taken {
            return Err(error(
                ErrorKind::InvalidRequest,
                format!(
                    "group {group} of topic {topic} would dead-letter into {name}, which is already the dead-letter topic of group {other_group} of topic {other_topic}; rename the group (or the topic) so that <topic>.<group>.dlq differs"
                ),
            ));
        }
        if name.starts_with("__") {
            return Err(error(
                ErrorKind::InvalidRequest,
                format!(
                    "the dead-letter topic {name} would begin with __, which is reserved for the broker; rename the group or the topic"
                ),
            ));
        }
        if let Some(existing) = topics.get(&name) {
            dlq::adopt::check_adoptable(&existing, topic, group, source)?;
            return Ok(existing);
        }
        let new = NewTopic {
            name,
            partitions: source.metadata.partitions,
            retention_ms: None,
            retention_bytes: None,
        };
        let of = DeadLettersOf {
            topic: topic.to_owned(),
            group: group.to_owned(),
        };
        topics.create_dead_letter_topic(new, of).await
    }

    /// Stops and deletes a group (its dead-letter topic stays); a running
    /// redrive of it stops at its next page first. A group that could not
    /// open at start is deleted too (its state is removed).
    pub async fn delete(&self, topic: &str, group: &str) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        self.delete_locked(topic, group).await
    }

    /// [`delete`](Self::delete), with the admin lock held.
    async fn delete_locked(&self, topic: &str, group: &str) -> Result<(), BrokerError> {
        let dir = self.root.join(topic).join(group);
        let removed = self.groups.lock().remove(&key(topic, group));
        let Some(entry) = removed else {
            if !self.broken.lock().contains_key(&key(topic, group)) {
                return Err(error(
                    ErrorKind::UnknownGroup,
                    format!("group {group} of topic {topic} does not exist"),
                ));
            }
            self.remove_durably(&dir)?;
            self.broken.lock().remove(&key(topic, group));
            return Ok(());
        };
        entry.redrive.cancel.cancel();
        let _redrive = entry.redrive.turn.lock().await;
        // The engine appends its last journal events and ends before its
        // files go.
        entry.handle.stop().await;
        self.remove_durably(&dir)
    }

    /// Removes `dir` and everything in it, then syncs its parent (or a
    /// power cut brings it back).
    fn remove_durably(&self, dir: &std::path::Path) -> Result<(), BrokerError> {
        if !self.fs.exists(dir) {
            return Ok(());
        }
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

    /// Deletes topic `name` with its groups (their progress would be
    /// meaningless, and harmful, on a new topic of the same name; their
    /// dead-letter topics stay). Refused while `name` is the dead-letter
    /// topic of a running group: that group would have nowhere to park.
    /// Returns the groups deleted.
    pub async fn delete_topic(
        &self,
        topics: &Topics,
        name: &str,
    ) -> Result<Vec<String>, BrokerError> {
        let _admin = self.admin.lock().await;
        if let Some((topic, group)) = self.dlq_owner(name) {
            return Err(error(
                ErrorKind::InvalidRequest,
                format!(
                    "topic {name} is the dead-letter topic of group {group} of topic {topic}; delete the group first (`pigeon group delete {group} --topic {topic}`), then the topic"
                ),
            ));
        }
        let mut deleted = Vec::new();
        if topics.get(name).is_some() {
            // Its groups go first: a crash in between leaves a topic without
            // groups, never groups whose progress would apply to a new topic.
            deleted = self.delete_all_of(name).await?;
        }
        topics.delete(name).await?;
        Ok(deleted)
    }

    /// The running group whose dead-letter topic is `name`, if any.
    fn dlq_owner(&self, name: &str) -> Option<(String, String)> {
        let groups = self.groups.lock();
        let owner = groups.keys().find(|(t, g)| dlq_topic(t, g) == name);
        owner.cloned()
    }

    /// Deletes every group of `topic`, running or broken (admin lock held).
    async fn delete_all_of(&self, topic: &str) -> Result<Vec<String>, BrokerError> {
        let of_topic = |(t, g): &(String, String)| (t == topic).then(|| g.clone());
        let mut names: Vec<String> = self.groups.lock().keys().filter_map(of_topic).collect();
        names.extend(self.broken.lock().keys().filter_map(of_topic));
        for group in &names {
            self.delete_locked(topic, group).await?;
        }
        self.remove_durably(&self.root.join(topic))?;
        Ok(names)
    }

    /// Moves the group's parked messages back to the source topic (see
    /// [`redrive`]), holding only the group's redrive turn; stops between
    /// pages once `shutdown` is cancelled or the group is deleted.
    pub async fn redrive(
        &self,
        topics: &Topics,
        topic: &str,
        group: &str,
        options: RedriveOptions,
        shutdown: &CancellationToken,
    ) -> Result<RedriveReport, BrokerError> {
        let entry = self.get(topic, group)?;
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
        let stop = Stop::new(shutdown.clone(), entry.redrive.cancel.clone());
        let _turn = tokio::select! {
            turn = entry.redrive.turn.lock() => turn,
            () = stop.wait() => return Err(BrokerError::group_stopped()),
        };
        if stop.is_set() {
            return Err(BrokerError::group_stopped());
        }
        let filter = RedriveFilter {
            source_topic: topic.to_owned(),
            group: group.to_owned(),
        };
        let dir = self.root.join(topic).join(group);
        redrive::redrive(
            self.fs.as_ref(),
            &dir,
            &source,
            &dlq,
            &filter,
            options,
            &stop,
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

    /// Every group that could not open at start, with why and what to do.
    pub fn broken(&self) -> Vec<String> {
        self.broken.lock().values().cloned().collect()
    }

    /// Records the new settings of a group.
    pub fn set_settings(&self, topic: &str, group: &str, settings: GroupSettings) {
        if let Some(entry) = self.groups.lock().get_mut(&key(topic, group)) {
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
