//! A consumer group over a long run: journal on disk and restart time
//! after `kill -9` as the group's history grows (issue 13, "bounded group
//! state"). One real `pigeon-broker` (release), one topic of one partition,
//! one group; at each checkpoint (1M, 5M and 20M messages produced and
//! acked by default) the bench measures the group's directory (journal
//! segments and snapshot), kills the broker with SIGKILL, starts it again
//! and measures how long until the group answers a Receive.
//!
//! ```sh
//! cargo bench --bench group_journal_e2e                          # 1M, 5M, 20M
//! PIGEON_BENCH_CHECKPOINTS=1000000,2000000 cargo bench --bench group_journal_e2e
//! # without snapshots, as before they ran (the journal keeps everything):
//! PIGEON_BENCH_SNAPSHOT_BYTES=1099511627776 PIGEON_BENCH_CHECKPOINTS=1000000,5000000 \
//!   cargo bench --bench group_journal_e2e
//! ```
//!
//! Values are 100 bytes; the broker runs with its defaults (`fsync=always`,
//! group snapshots every 4 MiB of journal) unless
//! `PIGEON_BENCH_SNAPSHOT_BYTES` sets `--group-snapshot-bytes`. Results are
//! in docs/benchmarks.md ("Group state over a long run").

use std::time::{Duration, Instant};

use pigeon_client::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, GroupDelivery, NewTopic, ProducerRecord,
};
use pigeon_client::protocol::GroupSettings;
use pigeon_suite::{Broker, dir_size};

const TOPIC: &str = "journal-bench";
const GROUP: &str = "g";
const VALUE_BYTES: usize = 100;

fn main() {
    let checkpoints: Vec<u64> = std::env::var("PIGEON_BENCH_CHECKPOINTS")
        .unwrap_or_else(|_| "1000000,5000000,20000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("PIGEON_BENCH_CHECKPOINTS: counts"))
        .collect();
    let snapshot_bytes = std::env::var("PIGEON_BENCH_SNAPSHOT_BYTES").ok();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut flags = vec![];
    if let Some(bytes) = &snapshot_bytes {
        flags.extend(["--group-snapshot-bytes", bytes.as_str()]);
    }
    let mut broker = Broker::start(&data, &flags);
    let runtime = pigeon_suite::runtime();
    runtime.block_on(setup(broker.addr.to_string()));
    let group_dir = data.join("groups").join(TOPIC).join(GROUP);

    println!(
        "group snapshots every {} bytes of journal",
        snapshot_bytes.as_deref().unwrap_or("4194304 (default)")
    );
    println!(
        "| acked messages | journal + snapshot on disk | journal segments | run time (produce + consume) | restart after kill -9 until a Receive answers | redelivered after the kill (acks of the last commit window) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut done = 0;
    for &target in &checkpoints {
        let started = Instant::now();
        runtime.block_on(produce(broker.addr.to_string(), target - done));
        runtime.block_on(consume(broker.addr.to_string(), target - done));
        done = target;
        let run_time = started.elapsed();
        let (bytes, segments) = (dir_size(&group_dir), segments(&group_dir));
        broker.kill();
        let restarted = Instant::now();
        broker.restart();
        let (restart, again) = runtime.block_on(first_receive(broker.addr.to_string(), restarted));
        println!(
            "| {target} | {:.1} MiB | {segments} | {run_time:.1?} | {restart:.0?} | {again} |",
            bytes as f64 / (1 << 20) as f64
        );
    }
}

async fn connect(addr: String) -> Client {
    Client::connect_with(addr, ClientConfig::default())
        .await
        .expect("connect")
}

async fn setup(addr: String) {
    let admin = Admin::new(connect(addr).await);
    admin
        .create_topic(NewTopic::new(TOPIC, 1))
        .await
        .expect("create topic");
    admin
        .create_group(TOPIC, GROUP, GroupSettings::default())
        .await
        .expect("create group");
}

/// Produces `n` records of [`VALUE_BYTES`].
async fn produce(addr: String, n: u64) {
    let producer = pigeon_suite::load::loader(connect(addr).await);
    let value = bytes::Bytes::from(vec![b'x'; VALUE_BYTES]);
    let records = (0..n).map(|_| ProducerRecord::new(value.clone()).partition(0));
    pigeon_suite::load::produce_all(&producer, TOPIC, records, 50_000).await;
    producer.close().await;
}

/// Receives and acks `n` messages, each batch's ack overlapping the next
/// receive.
async fn consume(addr: String, n: u64) {
    let client = connect(addr).await;
    let mut consumer = Consumer::join(&client, TOPIC, GROUP, ConsumerConfig::default())
        .await
        .expect("join");
    let mut acked = 0;
    let mut acking: Option<tokio::task::JoinHandle<()>> = None;
    while acked < n {
        let batch = consumer
            .next_batch_within(1000, Duration::from_secs(10))
            .await
            .expect("receive");
        assert!(
            !batch.is_empty(),
            "no message within 10 s at {acked} of {n}"
        );
        acked += batch.len() as u64;
        if let Some(previous) = acking.take() {
            previous.await.expect("ack task");
        }
        acking = Some(tokio::spawn(ack(batch)));
    }
    if let Some(last) = acking {
        last.await.expect("ack task");
    }
    consumer.close().await;
}

async fn ack(batch: Vec<GroupDelivery>) {
    for result in GroupDelivery::ack_all(&batch).await.expect("settle") {
        result.expect("ack");
    }
}

/// Joins the group and waits for one Receive to answer; returns the time
/// that took. Then acks whatever comes back (acks of the last commit
/// window before the kill may be forgotten: at-least-once) until nothing
/// does, and returns how many came back.
async fn first_receive(addr: String, started: Instant) -> (Duration, u64) {
    let client = connect(addr).await;
    let mut consumer = Consumer::join(&client, TOPIC, GROUP, ConsumerConfig::default())
        .await
        .expect("join after the restart");
    let mut batch = consumer
        .next_batch_within(1000, Duration::from_millis(1))
        .await
        .expect("receive after the restart");
    let answered = started.elapsed();
    let mut again = 0;
    while !batch.is_empty() {
        again += batch.len() as u64;
        ack(batch).await;
        batch = consumer
            .next_batch_within(1000, Duration::from_millis(100))
            .await
            .expect("receive");
    }
    consumer.close().await;
    (answered, again)
}

fn segments(group_dir: &std::path::Path) -> usize {
    std::fs::read_dir(group_dir.join("0")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .count()
    })
}
