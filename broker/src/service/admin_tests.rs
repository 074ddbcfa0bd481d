//! Tests of the administration and metric-sample operations over a real
//! data directory: series that vanish with their topic or group, the age
//! of the oldest unsettled message, and a retention change that takes
//! effect at once and survives a power cut.

use std::path::Path;
use std::sync::Arc;

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch};

use super::Broker;
use crate::config::{BrokerConfig, FileConfig};
use crate::delivery::GroupSettings;
use crate::io::{PowerCutFs, StdFs};
use crate::log::{Clock, FsyncPolicy, ManualClock, SystemClock};
use crate::topics::{NewTopic, RetentionChange};

fn config(data_dir: &Path) -> BrokerConfig {
    let mut config = BrokerConfig::from_file_config(FileConfig::default()).expect("config");
    config.data_dir = data_dir.to_path_buf();
    config.log.fsync = FsyncPolicy::Always;
    config
}

fn topic(name: &str, partitions: u32) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions,
        retention_ms: None,
        retention_bytes: None,
    }
}

fn batch(value: &[u8]) -> RecordBatch {
    let mut builder = BatchBuilder::new();
    builder.push(None, value, &[]);
    RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1 << 20).expect("batch")
}

async fn scrape(broker: &Broker) -> String {
    let mut out = String::new();
    crate::metrics::scrape::render(&broker.metric_samples().await, &mut out);
    out
}

/// The value of the series `series` in `text`, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_go_with_their_group_and_their_topic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(SystemClock.now_ms() - 90_000);
    let broker = Broker::open(config(tmp.path()), Arc::new(StdFs), Arc::new(clock.clone()))
        .await
        .expect("open");
    broker
        .create_topic(topic("orders", 2))
        .await
        .expect("topic");
    let orders = broker.topics.get("orders").expect("orders");
    orders.partitions[1]
        .append(batch(b"a"))
        .await
        .expect("append");
    clock.advance(30_000);
    orders.partitions[1]
        .append(batch(b"b"))
        .await
        .expect("append");
    broker
        .create_group("orders", "billing", GroupSettings::default())
        .await
        .expect("group");

    let text = scrape(&broker).await;
    let group = "{topic=\"orders\",partition=\"1\",group=\"billing\"}";
    assert_eq!(
        value(&text, &format!("pigeon_group_lag_messages{group}")),
        Some(2.0)
    );
    // Appended 90 s ago by the broker's clock: the oldest unsettled one.
    let age = value(
        &text,
        &format!("pigeon_group_oldest_unacked_age_seconds{group}"),
    )
    .expect("age series");
    assert!((89.0..200.0).contains(&age), "{age}");
    let idle = "{topic=\"orders\",partition=\"0\",group=\"billing\"}";
    assert_eq!(
        value(
            &text,
            &format!("pigeon_group_oldest_unacked_age_seconds{idle}")
        ),
        Some(0.0),
        "nothing unsettled"
    );
    let log = "{topic=\"orders\",partition=\"1\"}";
    assert_eq!(
        value(&text, &format!("pigeon_log_end_offset{log}")),
        Some(2.0)
    );
    assert_eq!(
        value(&text, &format!("pigeon_partition_read_only{log}")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("pigeon_log_commit_batch_records_count{log}")
        ),
        Some(2.0)
    );
    assert!(
        value(&text, &format!("pigeon_log_fsync_seconds_count{log}")).is_some_and(|n| n >= 2.0)
    );
    assert_eq!(
        value(&text, "pigeon_produce_records_total{topic=\"orders\"}"),
        Some(2.0)
    );

    broker
        .delete_group("orders", "billing")
        .await
        .expect("delete group");
    let text = scrape(&broker).await;
    assert!(!text.contains("group=\"billing\""), "{text}");
    assert!(text.contains(&format!("pigeon_log_end_offset{log}")));

    drop(orders);
    broker.delete_topic("orders").await.expect("delete topic");
    let text = scrape(&broker).await;
    assert!(!text.contains("topic=\"orders\""), "{text}");
    // The group's dead-letter topic is an ordinary topic: it stays.
    assert!(text.contains("topic=\"orders.billing.dlq\""), "{text}");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_refuses_appends_shows_as_read_only() {
    use crate::io::{Fault, FaultPlan, FaultyFs, Op};
    let tmp = tempfile::tempdir().expect("tempdir");
    let plan = FaultPlan::new();
    let fs = Arc::new(FaultyFs::new(plan.clone()));
    let broker = Broker::open(config(tmp.path()), fs, Arc::new(SystemClock))
        .await
        .expect("open");
    broker
        .create_topic(topic("orders", 2))
        .await
        .expect("topic");
    plan.inject(Op::Sync, "orders/1/", Fault::Io, 0, None);
    let log = broker.partition("orders", 1).expect("partition");
    log.append(batch(b"x")).await.expect_err("the fsync fails");
    plan.clear();
    let text = scrape(&broker).await;
    for (partition, read_only) in [("0", 0.0), ("1", 1.0)] {
        let series =
            format!("pigeon_partition_read_only{{topic=\"orders\",partition=\"{partition}\"}}");
        assert_eq!(value(&text, &series), Some(read_only), "{text}");
    }
    drop(log);
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_change_applies_at_once_and_survives_a_power_cut() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut small = config(tmp.path());
    small.log.segment_bytes = 4096;
    let fs = PowerCutFs::new();
    let broker = Broker::open(small.clone(), Arc::new(fs.clone()), Arc::new(SystemClock))
        .await
        .expect("open");
    broker
        .create_topic(topic("orders", 1))
        .await
        .expect("topic");
    let log = broker.partition("orders", 0).expect("partition");
    for i in 0..40u32 {
        log.append(batch(&[i as u8; 500])).await.expect("append");
    }
    let segments = log.reader().segment_count();
    assert!(segments >= 4, "{segments} segments");
    let changed = broker
        .alter_topic("orders", RetentionChange::Keep, RetentionChange::Set(8192))
        .await
        .expect("alter");
    assert!(changed.segments_deleted >= 2, "{changed:?}");
    assert_eq!(changed.retention_bytes, Some(8192));
    let start = log.reader().start_offset();
    assert!(start > 0, "old segments are gone before the alter returns");
    let nothing = broker
        .alter_topic("orders", RetentionChange::Keep, RetentionChange::Keep)
        .await;
    assert!(nothing.is_err(), "an alter that changes nothing is refused");

    // The power goes right after the answer.
    fs.fail_after(0);
    broker.close().await;
    drop((log, broker));
    fs.power_cut(11).expect("power cut");
    let broker = Broker::open(small, Arc::new(StdFs), Arc::new(SystemClock))
        .await
        .expect("reopen");
    let described = broker.describe_topic("orders").expect("describe");
    assert_eq!(
        described.retention_bytes,
        Some(8192),
        "the change is durable"
    );
    assert_eq!(described.retention_ms, None, "kept as it was");
    assert_eq!(described.partitions[0].log_start_offset, start);
    let back = broker
        .alter_topic("orders", RetentionChange::Keep, RetentionChange::Default)
        .await
        .expect("back to the default");
    assert_eq!(back.retention_bytes, None, "the broker default: unlimited");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_listed_with_their_lag_and_the_broker_describes_itself() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::open(config(tmp.path()), Arc::new(StdFs), Arc::new(SystemClock))
        .await
        .expect("open");
    for name in ["a", "b"] {
        broker.create_topic(topic(name, 2)).await.expect("topic");
    }
    let log = broker.partition("b", 1).expect("partition");
    for _ in 0..3 {
        log.append(batch(b"x")).await.expect("append");
    }
    for (t, g) in [("b", "two"), ("a", "one"), ("b", "three")] {
        broker
            .create_group(t, g, GroupSettings::default())
            .await
            .expect("group");
    }
    let all = broker
        .list_groups(None, |_, _| true, |_, _| Ok(()))
        .await
        .expect("list");
    let names: Vec<(&str, &str, u64)> = all
        .iter()
        .map(|g| (g.topic.as_str(), g.group.as_str(), g.lag))
        .collect();
    assert_eq!(names, [("a", "one", 0), ("b", "three", 3), ("b", "two", 3)]);
    let of_b = broker
        .list_groups(Some("b"), |_, _| true, |_, _| Ok(()))
        .await
        .expect("list");
    assert_eq!(of_b.len(), 2);
    assert_eq!(of_b[0].partitions, 2);
    assert!(
        broker
            .list_groups(Some("nope"), |_, _| true, |_, _| Ok(()))
            .await
            .is_err()
    );

    let described = broker.describe_broker().await;
    assert!(described.version.starts_with("pigeon-broker "));
    assert_eq!(
        (described.topics, described.groups),
        (5, 3),
        "with the 3 DLQ topics"
    );
    assert!(described.data_dir_bytes > 0);
    assert!(described.config.contains(&("fsync", "always".to_owned())));
    drop(log);
    broker.close().await;
}
