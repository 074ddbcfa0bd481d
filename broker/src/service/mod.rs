//! The service layer: the broker as one application root ([`Broker`]) with
//! protocol-neutral operations. Every way into the broker (the binary
//! protocol in [`crate::server`], HTTP in [`crate::http`], later others) is
//! a thin adapter that decodes its request, makes one call here and
//! encodes the answer; no adapter decides a domain question.
//!
//! Adapters reach the operations through [`Checked`] (`broker.checked(&caller)`),
//! which applies the caller's permissions first; the unchecked operations
//! are `pub(super)`, visible inside this module only.
//!
//! Operations take plain Rust values and fail with
//! [`BrokerError`](crate::error::BrokerError), which carries a kind and a
//! sentence but no wire code: each adapter maps the kind in one place.
//!
//! ## Layout
//!
//! | file | operations |
//! | --- | --- |
//! | `mod.rs` | [`Broker`]: open, shut down, the state every operation shares |
//! | `admin.rs` | list groups with their progress, alter a topic's retention, describe the broker |
//! | `auth.rs` | who a caller is ([`Caller`]); authentication by certificate, password (TLS only) or SCRAM-SHA-256; failures limited per address |
//! | `audit.rs` | the audit trail: admin operations, failed authentications and refusals as JSON records in `__audit` |
//! | `checked.rs` | [`Checked`]: every operation as a caller may do it; the permission rules, reserved names, producer ownership. Adapters call operations only through it (the unchecked ones are visible in `service` only) |
//! | `topics.rs` | create, delete, list, describe topics; find a partition |
//! | `produce.rs` | register a producer; validate and queue a produce, wait for its commits |
//! | `quota.rs` | byte-rate quotas: each user's (or connection's) produce and fetch token buckets, shared by every listener |
//! | `fetch.rs` | fetch (long-poll, read budget); list offsets |
//! | `groups.rs` | create, delete, alter, describe, seek, pause a group; redrive its DLQ |
//! | `members.rs` | consumer members (sessions): join, receive, settle, leave, expiry |
//! | `message.rs` | one message's state in a group (`message show`) |
//! | `samples.rs` | what the per-resource `/metrics` families show, gathered at a scrape |
//! | `pending.rs` | a group's open leases listed, acked by their holder, moved between consumers |
//! | `records.rs` | record-level reads of a partition, waiting for records, trimming whole segments |
//! | `tombstones.rs` | deleted records (`XDEL`): a durable set kept in the internal topic `__deleted` |
//! | `lock.rs` | [`DataDirLock`](lock::DataDirLock): one broker per data directory |
//!
//! ## Lifecycle
//!
//! [`Broker::open`] creates the data directory if it is missing (durably:
//! its parent is synced) and locks it ([`DataDirLock`]: one broker per
//! directory) before it reads anything in it; then it takes the directory
//! as it finds it: producer registry, then topics (recovering each
//! partition log), then groups (each group's engine starts; a group that
//! cannot run is kept as broken and named by readiness, see
//! `groups/open.rs`). The lock is
//! held for the broker's lifetime. [`Broker::close`] is the reverse: groups
//! first (their engines may still write dead letters into topics and must
//! append their last journal events), then every partition log is closed
//! cleanly (final fsync, clean checkpoint).

mod admin;
#[cfg(test)]
mod admin_tests;
mod audit;
mod auth;
mod checked;
#[cfg(test)]
mod checked_tests;
mod fetch;
mod groups;
mod lock;
mod members;
mod message;
mod pending;
mod produce;
pub mod quota;
mod records;
mod samples;
mod tombstones;
mod topics;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::caps::PeerConnections;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::groups::Groups;
use crate::io::{FileSystem, create_dir_durably, existing_ancestor};
use crate::log::Clock;
use crate::log::producers::EpochSource;
use crate::registry::{ProducerRegistry, RegistryLimits};
use crate::topics::Topics;

pub use admin::{BrokerDescription, GroupSummary, RetentionInEffect};
pub use audit::{AUDIT_TOPIC, AuditLog, Outcome};
pub use auth::{Authenticator, Caller, Identity, MAX_CONCURRENT_CHECKS, PLAIN};
pub use checked::{Checked, RESERVED_PREFIX};
pub use fetch::{FetchOutcome, FetchQuery, FetchRead, FetchedPartition, OffsetFound, OffsetSpec};
pub use groups::{GroupDescription, SeekTarget};
pub use lock::{DataDirLock, LOCK_FILE};
pub use members::{MemberOwner, Members, SettleAction, SettleRequest};
pub use message::{MessageReport, MessageStatus};
pub use produce::{Appended, PartitionBatches, ProduceOutcome, SubmittedProduce};
pub use records::RecordsRead;
pub use tombstones::{DELETED_TOPIC, Tombstones};
pub use topics::{PartitionSummary, TopicDescription, TopicSummary};

/// The broker: everything the operations share. One per process.
#[derive(Debug)]
pub struct Broker {
    /// Effective settings.
    pub config: BrokerConfig,
    /// Topics and their logs.
    pub topics: Topics,
    /// Idempotent producers' names, ids and epochs.
    pub producers: Arc<ProducerRegistry>,
    /// Consumer groups.
    pub groups: Groups,
    /// Consumers joined to groups, by the adapter that joined them.
    pub members: Members,
    /// Records deleted for reads by entry (`XDEL`).
    pub tombstones: Tombstones,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// Connections open per peer address, on every listener.
    pub peers: Arc<PeerConnections>,
    /// The produce and fetch quota buckets of each user with an open
    /// connection (see [`crate::service::quota`]).
    pub quotas: crate::service::quota::UserQuotas,
    /// True while the broker accepts requests (for `/health`).
    serving: AtomicBool,
    /// When the broker opened its data directory (for its uptime).
    started: Instant,
    /// Users and their credentials (`--users`); `None`: no authentication.
    auth: Option<Authenticator>,
    /// The audit trail (written with users only, once started).
    audit: AuditLog,
    /// The data directory's lock, released when the broker is dropped
    /// (last, after everything that writes into the directory).
    _lock: DataDirLock,
}

impl Broker {
    /// Opens the broker's state in `config.data_dir` (created if missing):
    /// locks the directory, then opens the producer registry, every topic
    /// (recovering its partition logs) and every group (starting its
    /// engine). Fails without touching the directory if another broker
    /// holds it.
    pub async fn open(
        config: BrokerConfig,
        fs: Arc<dyn FileSystem>,
        clock: Arc<dyn Clock>,
    ) -> Result<Broker, BrokerError> {
        let data_dir = config.data_dir.clone();
        // A bad users file stops the start before the directory is touched.
        let auth = config.users.clone().map(Authenticator::load).transpose()?;
        // Its nearest existing ancestor: the new directories below it are
        // made durable there.
        let existing = existing_ancestor(fs.as_ref(), &data_dir);
        create_dir_durably(fs.as_ref(), &data_dir, existing).map_err(|e| {
            BrokerError::storage(
                format_args!("cannot create the data directory {}", data_dir.display()),
                e,
            )
        })?;
        // Before anything in the directory is read.
        let lock = DataDirLock::acquire(&data_dir)?;
        let limits = RegistryLimits {
            max_names: config.caps.max_producer_names as usize,
            expiry: std::time::Duration::from_millis(config.log.producer_expiry_ms),
        };
        let producers = ProducerRegistry::open_with(fs.clone(), &data_dir, limits)
            .map_err(|e| BrokerError::new(crate::error::ErrorKind::Storage, e))?;
        let producers = Arc::new(producers);
        let epochs: Arc<dyn EpochSource> = producers.clone();
        let topics = Topics::open_with_epochs(
            fs.clone(),
            &data_dir,
            config.log.clone(),
            clock.clone(),
            Some(epochs),
        )
        .map_err(|e| {
            let what = format!("cannot open the data directory {}: {e}", data_dir.display());
            BrokerError::new(e.kind, what)
        })?;
        let groups = Groups::open(
            fs,
            &data_dir,
            &config.log,
            config.group_snapshot_bytes,
            clock,
            &topics,
        )
        .await
        .map_err(|e| BrokerError::new(e.kind, format!("cannot open the consumer groups: {e}")))?;
        let caps = config.caps;
        topics.set_caps(caps.max_topics, caps.max_partitions);
        groups.set_max_per_topic(caps.max_groups_per_topic);
        Ok(Broker {
            peers: Arc::new(PeerConnections::default()),
            quotas: crate::service::quota::UserQuotas::default(),
            config,
            topics,
            producers,
            groups,
            members: Members::default(),
            tombstones: Tombstones::default(),
            shutdown: CancellationToken::new(),
            serving: AtomicBool::new(true),
            started: Instant::now(),
            auth,
            audit: AuditLog::default(),
            _lock: lock,
        })
    }

    /// Whether the broker still accepts requests.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Stops accepting requests: `is_serving` turns false and the
    /// `shutdown` token is cancelled, which ends listeners and long-polls.
    pub fn begin_shutdown(&self) {
        self.serving.store(false, Ordering::Release);
        self.shutdown.cancel();
    }

    /// Closes the state once the listeners are done: every group's engine
    /// appends its last journal events and closes its journals, then every
    /// partition log is closed cleanly.
    pub async fn close(&self) {
        self.begin_shutdown();
        tracing::info!("closing consumer groups");
        self.groups.close().await;
        self.close_audit().await;
        tracing::info!("closing partition logs");
        self.topics.close().await;
    }

    /// What stops the broker from serving fully now: draining, each
    /// partition that refuses writes (with why), and each consumer group
    /// that could not open at start (with why and what to do). Empty when
    /// ready.
    pub fn readiness_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.is_serving() {
            problems.push("the broker is shutting down (draining)".to_owned());
        }
        for topic in self.topics.list() {
            for (id, log) in topic.partitions.iter().enumerate() {
                if let Some(cause) = log.reader().read_only() {
                    problems.push(format!(
                        "partition {id} of topic {} is read-only: {cause}",
                        topic.metadata.name
                    ));
                }
            }
        }
        problems.extend(self.groups.broken());
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use crate::delivery::GroupSettings;
    use crate::io::{PowerCutFs, StdFs};
    use crate::log::{FsyncPolicy, SystemClock};
    use crate::topics::NewTopic;
    use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch, records_of_batches};
    use std::path::Path;

    fn config(data_dir: &Path) -> BrokerConfig {
        let mut config = BrokerConfig::from_file_config(FileConfig::default()).expect("config");
        config.data_dir = data_dir.to_path_buf();
        config.log.fsync = FsyncPolicy::Always;
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_data_dir_with_its_first_topic_and_group_survives_a_power_cut() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Neither the data directory nor its parent exists yet.
        let data = tmp.path().join("var/pigeon");
        let fs = PowerCutFs::new();
        let broker = Broker::open(config(&data), Arc::new(fs.clone()), Arc::new(SystemClock))
            .await
            .expect("open");
        let topic = NewTopic {
            name: "orders".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
        };
        broker.create_topic(topic).await.expect("topic");
        let mut builder = BatchBuilder::new();
        builder.push(None, b"first order", &[]);
        let batch =
            RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1 << 20).expect("batch");
        let orders = broker.topics.get("orders").expect("orders");
        orders.partitions[0]
            .append(batch)
            .await
            .expect("acknowledged under fsync=always");
        broker
            .create_group("orders", "billing", GroupSettings::default())
            .await
            .expect("group");
        // The power goes right after the acknowledgements.
        fs.fail_after(0);
        broker.close().await;
        drop((orders, broker));
        fs.power_cut(7).expect("power cut");

        let broker = Broker::open(config(&data), Arc::new(StdFs), Arc::new(SystemClock))
            .await
            .expect("reopen");
        let orders = broker.topics.get("orders").expect("the topic survives");
        let read = orders.partitions[0]
            .reader()
            .read(0, 1 << 20)
            .expect("read");
        let values: Vec<Vec<u8>> = records_of_batches(read.bytes)
            .map(|r| r.expect("record").value.to_vec())
            .collect();
        assert_eq!(values, [b"first order".to_vec()], "the acknowledged record");
        broker
            .groups
            .get("orders", "billing")
            .expect("the created group survives");
        broker.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_names_a_read_only_partition_and_the_drain() {
        use crate::io::{Fault, FaultPlan, FaultyFs, Op};
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = FaultPlan::new();
        let fs = Arc::new(FaultyFs::new(plan.clone()));
        let broker = Broker::open(config(tmp.path()), fs, Arc::new(SystemClock))
            .await
            .expect("open");
        let topic = NewTopic {
            name: "orders".into(),
            partitions: 2,
            retention_ms: None,
            retention_bytes: None,
        };
        broker.create_topic(topic).await.expect("topic");
        assert!(broker.readiness_problems().is_empty());
        plan.inject(Op::Sync, "orders/1/", Fault::Io, 0, None);
        let mut builder = BatchBuilder::new();
        builder.push(None, b"order", &[]);
        let batch =
            RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1 << 20).expect("batch");
        let orders = broker.topics.get("orders").expect("orders");
        orders.partitions[1]
            .append(batch)
            .await
            .expect_err("the fsync fails");
        let problems = broker.readiness_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("partition 1 of topic orders is read-only: "),
            "{problems:?}"
        );
        plan.clear();
        broker.begin_shutdown();
        let problems = broker.readiness_problems();
        assert!(problems[0].contains("draining"), "{problems:?}");
        drop(orders);
        broker.close().await;
    }
}
