//! Crash tests of the dead-letter pipeline over real topics and a real
//! group store: a broker that dies part-way through parking a batch of
//! dead letters, and the restart that finishes the batch.
//!
//! The crash is a dead-letter sink that, after a number of copies, never
//! returns: the engine is stuck in the pipeline, so the copies written so
//! far are durable in the DLQ while their `DeadLettered` events were never
//! handed to the journal — what a `kill -9` at that moment leaves on disk.
//! Nothing of the stuck run is closed (its journals and logs stay as a
//! crash leaves them); a second set of topics and a second store are opened
//! on the same directory, as the next broker process would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, Record, RecordBatch};

use super::dlq::{DlqIdentity, DlqSink};
use super::source::{TopicSource, read_records};
use crate::delivery::engine::{self, DeadLetterSink};
use crate::delivery::store::{GroupMeta, GroupStore};
use crate::delivery::{DeadLetter, GroupSettings};
use crate::io::StdFs;
use crate::log::{Clock, FsyncPolicy, LogConfig, SystemClock};
use crate::topics::{NewTopic, Topic, Topics};

/// Writes through the real sink `after` times, then hangs for good (the
/// process "died" in the middle of the next copy).
struct CrashingSink {
    inner: DlqSink,
    after: usize,
    written: AtomicUsize,
    crashed: tokio::sync::Notify,
}

impl DeadLetterSink for CrashingSink {
    fn end_offset(&self, partition: usize) -> u64 {
        self.inner.end_offset(partition)
    }

    fn parked(
        &self,
        partition: usize,
        dead: &[DeadLetter],
    ) -> Result<std::collections::HashSet<u64>, String> {
        self.inner.parked(partition, dead)
    }

    async fn write(
        &self,
        partition: usize,
        dead: &DeadLetter,
        record: &Record,
    ) -> Result<(), String> {
        if self.written.fetch_add(1, Ordering::SeqCst) >= self.after {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.write(partition, dead, record).await
    }
}

fn log_config() -> LogConfig {
    LogConfig {
        // Appends are in the page cache, which the reopen reads: the test
        // is about a process crash, not a power cut.
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

fn open_topics(dir: &std::path::Path) -> Topics {
    Topics::open(Arc::new(StdFs), dir, log_config(), Arc::new(SystemClock)).expect("topics")
}

fn new_topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions: 1,
        retention_ms: None,
        retention_bytes: None,
    }
}

async fn produce(topic: &Topic, count: u64) {
    for chunk in 0..count.div_ceil(100) {
        let mut builder = BatchBuilder::new();
        for i in chunk * 100..((chunk + 1) * 100).min(count) {
            builder.push(None, format!("message {i}").as_bytes(), &[]);
        }
        let batch = RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), usize::MAX)
            .expect("batch");
        topic.partitions[0].append(batch).await.expect("append");
    }
}

/// Every DLQ record's `pigeon.dlq.source-offset`, in DLQ order.
fn parked_offsets(dlq: &Topic) -> Vec<u64> {
    let reader = dlq.partitions[0].reader();
    let all: Vec<u64> = (reader.start_offset()..reader.end_offset()).collect();
    read_records(reader, &all)
        .iter()
        .map(|r| {
            let text = super::dlq::header_text(r, "pigeon.dlq.source-offset").expect("header");
            text.parse().expect("decimal")
        })
        .collect()
}

fn settings() -> GroupSettings {
    GroupSettings {
        ack_timeout: Duration::from_millis(500),
        max_deliveries: 1,
        max_in_flight: 2_000,
        ..GroupSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_leases_expiring_into_the_dlq_with_a_crash_midway_are_each_parked_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let group_dir = tmp.path().join("groups").join("t").join("g");
    let topics = open_topics(tmp.path());
    let source = topics.create(new_topic("t")).await.expect("source");
    let dlq = topics.create(new_topic("t.g.dlq")).await.expect("dlq");
    produce(&source, 1_000).await;
    let meta = GroupMeta::new("t", "g", &settings(), clock.now_ms());
    let (store, states) = GroupStore::create(
        Arc::new(StdFs),
        &group_dir,
        meta.clone(),
        &[0],
        log_config(),
        clock.clone(),
    )
    .expect("store");
    let identity = DlqIdentity {
        source_topic: "t".into(),
        topic_created_ms: source.metadata.created_ms,
        group: "g".into(),
        group_created_ms: meta.created_ms,
    };
    let sink = Arc::new(CrashingSink {
        inner: DlqSink::new(dlq.clone(), identity.clone()),
        after: 513,
        written: AtomicUsize::new(0),
        crashed: tokio::sync::Notify::new(),
    });
    let group = engine::start(
        settings(),
        false,
        states,
        Some(store),
        Arc::new(TopicSource(source.clone())),
        sink.clone(),
    );
    let consumer = group.join("doomed").await.expect("join");
    let leased = group
        .receive(consumer, 1_000, Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(leased.len(), 1_000);
    // The 1,000 leases expire together, each on its last delivery: one
    // batch of dead letters. The "process" dies during copy 514.
    tokio::time::timeout(Duration::from_secs(60), sink.crashed.notified())
        .await
        .expect("the leases expired into the dead-letter pipeline");
    assert_eq!(parked_offsets(&dlq), (0..513).collect::<Vec<_>>());
    // Nothing of the crashed run is closed or stopped.
    std::mem::forget((group, sink, topics, source, dlq));

    let topics = open_topics(tmp.path());
    let source = topics.get("t").expect("source");
    let dlq = topics.get("t.g.dlq").expect("dlq");
    let (store, states) = GroupStore::open(
        Arc::new(StdFs),
        &group_dir,
        &[0],
        log_config(),
        clock.clone(),
    )
    .expect("reopen");
    let sink = DlqSink::new(dlq.clone(), identity);
    let group = engine::start(
        settings(),
        false,
        states,
        Some(store),
        Arc::new(TopicSource(source.clone())),
        Arc::new(sink),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, figures) = group.describe().await.expect("describe");
        if figures[0].dead_lettered >= 1_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restart did not finish the batch: {figures:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut parked = parked_offsets(&dlq);
    assert_eq!(parked.len(), 1_000, "each message parked exactly once");
    parked.sort_unstable();
    assert_eq!(parked, (0..1_000).collect::<Vec<_>>());
    group.stop().await;
    topics.close().await;
}
