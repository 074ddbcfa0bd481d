//! Topics: their metadata, their partition logs, and the data directory
//! layout under `<data-dir>/topics/`.
//!
//! ```text
//! <data-dir>/topics/<topic>/topic.json          metadata (see `metadata`)
//! <data-dir>/topics/<topic>/<partition>/        one partition log each
//! <data-dir>/trash/                             topics being deleted
//! ```
//!
//! ## Crash story
//!
//! - Open: `topics/` and `trash/` are created if missing, durably (their
//!   names synced in the data directory). The partition logs of every
//!   topic are then opened (recovered) side by side, a bounded number at a
//!   time ([`crate::log::recovery::many`]); each log's recovery is its
//!   own, so this changes nothing in what is on disk when. The first
//!   failure in listing order (topics, then partition ids) fails the
//!   open, with the same error as when they were opened one by one.
//! - Create: make the topic directory and sync `topics/` (the new name is
//!   durable), write `topic.json` atomically, then open the partition logs
//!   (side by side, as at open); each log creates
//!   its directory and syncs it into the topic directory before it takes an
//!   append, so no acknowledged record sits in a directory a power cut can
//!   lose. A directory without `topic.json` at start is an interrupted
//!   create and is removed.
//! - Alter (retention): write the new `topic.json` atomically (temp file,
//!   fsync, rename, fsync dir: after a crash the file holds the old
//!   settings or the new, whole), then hand the new limits to each
//!   partition's writer, which deletes what is past them at once. A crash
//!   between the two steps loses nothing: the next start opens the logs
//!   with the settings of the file, and retention runs then.
//! - Delete: close the partition logs, rename the topic directory into
//!   `trash/` (one atomic step: the topic is gone), sync both directories,
//!   then remove the files. `trash/` is emptied at start.
//!
//! Topic names are checked against `[A-Za-z0-9._-]{1,200}`, not `.` or
//! `..`, before they touch the file system, so no name can escape the data
//! directory. Create, alter and delete are serialised by one lock.

pub mod metadata;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use pigeon_protocol::validate_topic_name;

use crate::error::{BrokerError, ErrorKind};

use crate::io::{FileSystem, create_dir_durably, read_all, write_atomically};
use crate::log::producers::EpochSource;
use crate::log::recovery::many::{open_all, open_threads};
use crate::log::{Clock, LogConfig, PartitionLog};
pub use metadata::{DeadLettersOf, TopicMetadata};

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Largest `topic.json` read.
const MAX_METADATA_BYTES: usize = 64 * 1024;

/// A topic and its open partition logs.
#[derive(Debug)]
pub struct Topic {
    /// What is persisted.
    pub metadata: TopicMetadata,
    /// Partition logs, indexed by partition id.
    pub partitions: Vec<PartitionLog>,
}

impl Topic {
    /// Partition `id`, if it exists.
    pub fn partition(&self, id: u32) -> Option<&PartitionLog> {
        self.partitions.get(id as usize)
    }
}

/// What `create` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count (1..=MAX_PARTITIONS).
    pub partitions: u32,
    /// Retention by age override.
    pub retention_ms: Option<u64>,
    /// Retention by size override.
    pub retention_bytes: Option<u64>,
}

/// How an alter changes one retention setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetentionChange {
    /// Left as it is.
    #[default]
    Keep,
    /// The topic's own setting is dropped: the broker default applies.
    Default,
    /// The topic's own limit; 0: no limit.
    Set(u64),
}

impl RetentionChange {
    fn apply(self, current: Option<u64>) -> Option<u64> {
        match self {
            RetentionChange::Keep => current,
            RetentionChange::Default => None,
            RetentionChange::Set(limit) => Some(limit),
        }
    }
}

/// What an alter left in effect.
#[derive(Debug, Clone)]
pub struct Altered {
    /// The topic as it is now.
    pub topic: Arc<Topic>,
    /// Retention by age in effect (defaults applied); `None`: forever.
    pub retention_ms: Option<u64>,
    /// Retention by size in effect (defaults applied); `None`: unlimited.
    pub retention_bytes: Option<u64>,
    /// Segments deleted at once under the new limits.
    pub segments_deleted: usize,
}

/// All topics of the broker.
#[derive(Debug)]
pub struct Topics {
    root: PathBuf,
    fs: Arc<dyn FileSystem>,
    clock: Arc<dyn Clock>,
    defaults: LogConfig,
    /// Current producer epochs, for fencing in every partition.
    epochs: Option<Arc<dyn EpochSource>>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises create and delete.
    admin: tokio::sync::Mutex<()>,
    /// `max_topics` and `max_partitions` (see `crate::caps`), checked at
    /// create under `admin`.
    caps: parking_lot::Mutex<(u32, u32)>,
}

impl Topics {
    /// Opens every topic under `<data_dir>/topics`, recovering their logs.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        data_dir: &Path,
        defaults: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Topics, BrokerError> {
        Self::open_with_epochs(fs, data_dir, defaults, clock, None)
    }

    /// [`Topics::open`], fencing producers whose epoch `epochs` says is old.
    pub fn open_with_epochs(
        fs: Arc<dyn FileSystem>,
        data_dir: &Path,
        defaults: LogConfig,
        clock: Arc<dyn Clock>,
        epochs: Option<Arc<dyn EpochSource>>,
    ) -> Result<Topics, BrokerError> {
        let root = data_dir.join("topics");
        let trash = data_dir.join("trash");
        for dir in [&root, &trash] {
            create_dir_durably(fs.as_ref(), dir, data_dir)
                .map_err(|e| BrokerError::storage(format!("creating {}", dir.display()), e))?;
        }
        for leftover in fs
            .read_dir(&trash)
            .map_err(|e| BrokerError::storage(format!("listing {}", trash.display()), e))?
        {
            if let Err(e) = fs.remove_dir_all(&leftover) {
                tracing::warn!(path = %leftover.display(), error = %e, "could not remove a deleted topic");
            }
        }
        let topics = Topics {
            root,
            fs,
            clock,
            defaults,
            epochs,
            topics: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            caps: parking_lot::Mutex::new((u32::MAX, u32::MAX)),
        };
        topics.open_existing()?;
        Ok(topics)
    }

    /// Opens every topic found, their partition logs side by side (see
    /// [`open_all`](crate::log::recovery::many::open_all)). The first
    /// failure in listing order fails the open, as if the topics and
    /// their partitions were opened one after another.
    fn open_existing(&self) -> Result<(), BrokerError> {
        let listing = self
            .fs
            .read_dir(&self.root)
            .map_err(|e| BrokerError::storage(format!("listing {}", self.root.display()), e))?;
        let mut found = Vec::new();
        // A topic whose metadata cannot be read: reported once the topics
        // listed before it are open (or failed first).
        let mut unreadable = None;
        for dir in listing {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if validate_topic_name(&name).is_err() {
                tracing::warn!(path = %dir.display(), "ignoring a directory that is not a topic");
                continue;
            }
            let metadata = match self.read_metadata(&dir) {
                Ok(Some(metadata)) => metadata,
                Ok(None) => {
                    tracing::warn!(topic = %name, "removing a topic whose creation was interrupted");
                    if let Err(e) = self.fs.remove_dir_all(&dir) {
                        unreadable = Some(BrokerError::storage(
                            format!("removing {}", dir.display()),
                            e,
                        ));
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    unreadable = Some(e);
                    break;
                }
            };
            found.push(metadata);
        }
        let started = std::time::Instant::now();
        let partitions: u64 = found.iter().map(|m| u64::from(m.partitions)).sum();
        for topic in self.open_topics(found)? {
            self.topics
                .write()
                .insert(topic.metadata.name.clone(), Arc::new(topic));
        }
        tracing::info!(
            topics = self.topics.read().len(),
            partitions,
            threads = open_threads(),
            took_ms = started.elapsed().as_millis() as u64,
            "opened the partition logs"
        );
        match unreadable {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn read_metadata(&self, dir: &Path) -> Result<Option<TopicMetadata>, BrokerError> {
        let path = dir.join(metadata::FILE_NAME);
        if !self.fs.exists(&path) {
            return Ok(None);
        }

        let bytes = read_all(self.fs.as_ref(), &path, MAX_METADATA_BYTES)
            .map_err(|e| BrokerError::storage(format!("reading {}", path.display()), e))?;
        TopicMetadata::from_json(&bytes).map(Some).map_err(|e| {
            BrokerError::new(
                ErrorKind::Storage,
                format!(
                    "{} is damaged: {e}; restore it or delete the topic directory",
                    path.display()
                ),
            )
        })
    }

    /// Opens the partition logs of `topics`, up to
    /// [`open_threads`] at once. Fails with the first partition (in the
    /// order of `topics`, then of partition ids) that could not be opened.
    fn open_topics(&self, topics: Vec<TopicMetadata>) -> Result<Vec<Topic>, BrokerError> {
        let mut logs = Vec::new();
        // Whose each log is: (topic name, partition id).
        let mut owners = Vec::new();
        for metadata in &topics {
            let config = self.log_config(metadata);
            let dir = self.root.join(&metadata.name);
            for id in 0..metadata.partitions {
                logs.push((dir.join(id.to_string()), config.clone()));
                owners.push((metadata.name.as_str(), id));
            }
        }
        let opened =
            open_all(&self.fs, &self.clock, &logs, open_threads()).map_err(|(at, e)| {
                let (topic, id) = owners.get(at).copied().unwrap_or(("?", 0));
                BrokerError::storage(format!("opening partition {id} of topic {topic}"), e)
            })?;
        let mut opened = opened.into_iter();
        let mut out = Vec::with_capacity(topics.len());
        for metadata in topics {
            let partitions = opened
                .by_ref()
                .take(metadata.partitions as usize)
                .map(|log| match &self.epochs {
                    Some(epochs) => PartitionLog::start(log.with_epochs(epochs.clone())),
                    None => PartitionLog::start(log),
                })
                .collect();
            out.push(Topic {
                metadata,
                partitions,
            });
        }
        Ok(out)
    }

    fn log_config(&self, metadata: &TopicMetadata) -> LogConfig {
        LogConfig {
            retention_ms: metadata
                .retention_ms
                .map_or(self.defaults.retention_ms, |ms| (ms > 0).then_some(ms)),
            retention_bytes: metadata
                .retention_bytes
                .map_or(self.defaults.retention_bytes, |b| (b > 0).then_some(b)),
            ..self.defaults.clone()
        }
    }

    /// The topic called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// Every topic, by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    /// Creates a topic.
    pub async fn create(&self, new: NewTopic) -> Result<Arc<Topic>, BrokerError> {
        self.create_topic(new, None).await
    }

    /// Creates the dead-letter topic of group `of`: a topic like any other
    /// whose `topic.json` names the group (so that a group of that name
    /// created later knows the topic for its own).
    pub async fn create_dead_letter_topic(
        &self,
        new: NewTopic,
        of: DeadLettersOf,
    ) -> Result<Arc<Topic>, BrokerError> {
        self.create_topic(new, Some(of)).await
    }

    async fn create_topic(
        &self,
        new: NewTopic,
        dead_letters_of: Option<DeadLettersOf>,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(&new.name)
            .map_err(|e| BrokerError::new(ErrorKind::InvalidTopicName, e.to_string()))?;
        if new.partitions == 0 || new.partitions > MAX_PARTITIONS {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "a topic needs 1 to {MAX_PARTITIONS} partitions, not {}",
                    new.partitions
                ),
            ));
        }
        let _admin = self.admin.lock().await;
        if self.get(&new.name).is_some() {
            return Err(BrokerError::new(
                ErrorKind::TopicExists,
                format!("topic {} already exists", new.name),
            ));
        }
        self.check_caps(&new)?;
        let metadata = TopicMetadata {
            version: 1,
            name: new.name.clone(),
            partitions: new.partitions,
            retention_ms: new.retention_ms,
            retention_bytes: new.retention_bytes,
            created_ms: self.clock.now_ms(),
            dead_letters_of,
        };
        let dir = self.root.join(&new.name);
        let persisted = create_dir_durably(self.fs.as_ref(), &dir, &self.root).and_then(|_| {
            write_atomically(
                self.fs.as_ref(),
                &dir.join(metadata::FILE_NAME),
                &metadata.to_json(),
            )
        });
        if let Err(e) = persisted {
            let _ = self.fs.remove_dir_all(&dir);
            return Err(BrokerError::storage(
                format!("creating topic {}", new.name),
                e,
            ));
        }
        let topic = self.open_topics(vec![metadata])?.pop().ok_or_else(|| {
            BrokerError::new(
                ErrorKind::Storage,
                format!(
                    "creating topic {}: its partitions were not opened (a bug)",
                    new.name
                ),
            )
        })?;
        let topic = Arc::new(topic);
        self.topics.write().insert(new.name, topic.clone());
        Ok(topic)
    }

    /// Sets `max_topics` and `max_partitions` (the broker's `__` topics
    /// are not counted).
    pub fn set_caps(&self, max_topics: u32, max_partitions: u32) {
        *self.caps.lock() = (max_topics, max_partitions);
    }

    /// Refuses a topic beyond `max_topics` or `max_partitions`.
    fn check_caps(&self, new: &NewTopic) -> Result<(), BrokerError> {
        if new.name.starts_with("__") {
            return Ok(());
        }
        let (max_topics, max_partitions) = *self.caps.lock();
        let topics = self.topics.read();
        let counted = topics
            .values()
            .filter(|t| !t.metadata.name.starts_with("__"));
        let (count, partitions) = counted.fold((0u64, 0u64), |(n, p), t| {
            (n + 1, p + u64::from(t.metadata.partitions))
        });
        let what = format!("cannot create topic {}", new.name);
        if count >= u64::from(max_topics) {
            return Err(crate::caps::cap_reached(
                &what,
                "max_topics",
                max_topics,
                "delete unused topics (dead-letter topics count too) or raise max_topics",
            ));
        }
        if partitions + u64::from(new.partitions) > u64::from(max_partitions) {
            let advice = format!(
                "the topics have {partitions} partitions and this one would add {}; delete unused topics, create it with fewer partitions, or raise max_partitions",
                new.partitions
            );
            return Err(crate::caps::cap_reached(
                &what,
                "max_partitions",
                max_partitions,
                &advice,
            ));
        }
        Ok(())
    }

    /// Changes a topic's retention: durably in `topic.json` first, then in
    /// every partition log, which deletes what is past the new limits at
    /// once (see the crash story in the module doc).
    pub async fn alter_retention(
        &self,
        name: &str,
        retention_ms: RetentionChange,
        retention_bytes: RetentionChange,
    ) -> Result<Altered, BrokerError> {
        let _admin = self.admin.lock().await;
        let old = self
            .get(name)
            .ok_or_else(|| BrokerError::unknown_topic(name))?;
        let mut metadata = old.metadata.clone();
        metadata.retention_ms = retention_ms.apply(metadata.retention_ms);
        metadata.retention_bytes = retention_bytes.apply(metadata.retention_bytes);
        let path = self.root.join(name).join(metadata::FILE_NAME);
        write_atomically(self.fs.as_ref(), &path, &metadata.to_json())
            .map_err(|e| BrokerError::storage(format!("saving topic {name}'s settings"), e))?;
        let config = self.log_config(&metadata);
        let topic = Arc::new(Topic {
            metadata,
            partitions: old.partitions.clone(),
        });
        self.topics.write().insert(name.to_owned(), topic.clone());
        let mut segments_deleted = 0;
        for (id, log) in topic.partitions.iter().enumerate() {
            let applied = log.set_retention(config.retention_ms, config.retention_bytes);
            segments_deleted += applied.await.map_err(|e| {
                BrokerError::storage(
                    format!("topic {name}'s new retention is saved, but applying it to partition {id} failed (it is retried every minute and at the next start)"),
                    e,
                )
            })?;
        }
        Ok(Altered {
            topic,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segments_deleted,
        })
    }

    /// Deletes a topic and all its data.
    pub async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let topic = self.topics.write().remove(name).ok_or_else(|| {
            BrokerError::new(
                ErrorKind::UnknownTopic,
                format!("topic {name} does not exist"),
            )
        })?;
        for partition in &topic.partitions {
            if let Err(e) = partition.close().await {
                tracing::warn!(topic = name, error = %e, "closing a partition of a deleted topic");
            }
        }
        let trash_dir = self.root.with_file_name("trash");
        let trash = trash_dir.join(format!("{name}.{}", self.clock.now_ms()));
        let moved = self
            .fs
            .rename(&self.root.join(name), &trash)
            .and_then(|()| self.fs.sync_dir(&self.root))
            .and_then(|()| self.fs.sync_dir(&trash_dir));
        moved.map_err(|e| BrokerError::storage(format!("deleting topic {name}"), e))?;
        if let Err(e) = self.fs.remove_dir_all(&trash) {
            tracing::warn!(path = %trash.display(), error = %e, "could not remove a deleted topic's files; they go at next start");
        }
        Ok(())
    }

    /// Closes every partition log cleanly (sync, clean checkpoint).
    pub async fn close(&self) {
        for topic in self.list() {
            for (id, partition) in topic.partitions.iter().enumerate() {
                if let Err(e) = partition.close().await {
                    tracing::error!(topic = %topic.metadata.name, partition = id, error = %e, "closing a partition failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdFs;
    use crate::log::SystemClock;

    fn new_topic(name: &str, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            retention_ms: None,
            retention_bytes: None,
        }
    }

    fn open(dir: &Path) -> Topics {
        Topics::open(
            Arc::new(StdFs),
            dir,
            LogConfig::default(),
            Arc::new(SystemClock),
        )
        .expect("open")
    }

    #[tokio::test]
    async fn topics_survive_restarts_and_deletes_are_final() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let topics = open(tmp.path());
        topics.create(new_topic("orders", 3)).await.expect("create");
        topics
            .create(new_topic("audit.log", 1))
            .await
            .expect("create");
        assert!(tmp.path().join("topics/orders/2").is_dir());
        let err = topics
            .create(new_topic("orders", 1))
            .await
            .expect_err("exists");
        assert_eq!(err.kind, ErrorKind::TopicExists);
        topics.delete("audit.log").await.expect("delete");
        topics.close().await;
        drop(topics);
        let topics = open(tmp.path());
        let names: Vec<String> = topics
            .list()
            .iter()
            .map(|t| t.metadata.name.clone())
            .collect();
        assert_eq!(names, ["orders"]);
        assert_eq!(topics.get("orders").expect("orders").partitions.len(), 3);
        assert!(!tmp.path().join("topics/audit.log").exists());
    }

    #[tokio::test]
    async fn names_that_could_escape_the_data_dir_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let topics = open(tmp.path());
        for bad in ["..", ".", "a/b", "../x", "", "with space", &"x".repeat(201)] {
            let err = topics.create(new_topic(bad, 1)).await.expect_err(bad);
            assert_eq!(err.kind, ErrorKind::InvalidTopicName, "{bad:?}");
        }
        let err = topics
            .create(new_topic("ok", 0))
            .await
            .expect_err("zero partitions");
        assert_eq!(err.kind, ErrorKind::InvalidConfig);
    }

    fn one_record(value: &[u8]) -> pigeon_protocol::batch::RecordBatch {
        use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch};
        let mut builder = BatchBuilder::new();
        builder.push(None, value, &[]);
        RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1 << 20).expect("batch")
    }

    fn values(partition: &PartitionLog) -> Vec<Vec<u8>> {
        let read = partition.reader().read(0, 1 << 20).expect("read");
        pigeon_protocol::batch::records_of_batches(read.bytes)
            .map(|r| r.expect("record").value.to_vec())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_records_of_a_new_topic_survive_a_power_cut() {
        use crate::io::PowerCutFs;
        use crate::log::FsyncPolicy;
        let tmp = tempfile::tempdir().expect("tempdir");
        // `topics/` and `trash/` exist from an earlier run.
        open(tmp.path()).close().await;
        let fs = PowerCutFs::new();
        let config = LogConfig {
            fsync: FsyncPolicy::Always,
            ..LogConfig::default()
        };
        for seed in 0..4 {
            let name = format!("t{seed}");
            let topics = Topics::open(
                Arc::new(fs.clone()),
                tmp.path(),
                config.clone(),
                Arc::new(SystemClock),
            )
            .expect("open");
            let topic = topics.create(new_topic(&name, 2)).await.expect("create");
            for (id, partition) in topic.partitions.iter().enumerate() {
                partition
                    .append(one_record(format!("{name}/{id}").as_bytes()))
                    .await
                    .expect("acknowledged under fsync=always");
            }
            // The power goes right after the acknowledgements.
            fs.fail_after(0);
            topics.close().await;
            drop((topic, topics));
            fs.power_cut(seed).expect("power cut");

            let topics = open(tmp.path());
            let topic = topics.get(&name).expect("the created topic survives");
            for (id, partition) in topic.partitions.iter().enumerate() {
                assert_eq!(
                    values(partition),
                    [format!("{name}/{id}").into_bytes()],
                    "partition {id} of {name} lost an acknowledged record"
                );
            }
            topics.close().await;
        }
    }

    /// The partitions are opened side by side, but a failure is reported
    /// as when they were opened one after another: the first partition
    /// (in order) that cannot be opened fails the open, naming itself.
    #[tokio::test]
    async fn the_first_partition_that_cannot_be_opened_fails_the_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let topics = open(tmp.path());
        topics.create(new_topic("a", 3)).await.expect("create");
        topics.create(new_topic("b", 40)).await.expect("create");
        topics.close().await;
        drop(topics);
        for broken in [29, 11] {
            let checkpoint = tmp.path().join(format!("topics/b/{broken}/checkpoint"));
            std::fs::remove_file(&checkpoint).expect("remove");
            std::fs::create_dir(&checkpoint).expect("a directory cannot be read as one");
        }
        let err = Topics::open(
            Arc::new(StdFs),
            tmp.path(),
            LogConfig::default(),
            Arc::new(SystemClock),
        )
        .expect_err("a partition cannot be opened");
        assert_eq!(err.kind, ErrorKind::Storage);
        let message = err.to_string();
        assert!(
            message.contains("opening partition 11 of topic b:")
                && message.contains("reading the checkpoint in")
                && message.contains("b/11"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn interrupted_create_is_cleaned_up() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("topics/half/0")).expect("mkdir");
        let topics = open(tmp.path());
        assert!(topics.get("half").is_none());
        assert!(!tmp.path().join("topics/half").exists());
    }
}
