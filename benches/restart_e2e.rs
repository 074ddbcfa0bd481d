//! Restart time after `kill -9` with a large log: fills one partition of a
//! real `pigeon-broker` (release) with `PIGEON_BENCH_GIB` GiB (default 5)
//! of 1 KiB records, kills it with SIGKILL, starts it again on the same data
//! directory and measures how long until it serves: until its "serving"
//! log line, and until a fetch at the log end and a produce succeed.
//!
//! docs/design.md's target: serving again in under one second with ≥ 5 GB of
//! log (startup must grow with the unflushed tail, not the log size).
//!
//! ```sh
//! cargo bench --bench restart_e2e                       # 5 GiB, 3 restarts
//! PIGEON_BENCH_GIB=1 PIGEON_BENCH_ROUNDS=5 cargo bench --bench restart_e2e
//! PIGEON_BENCH_DROP_CACHES=1 cargo bench --bench restart_e2e   # cold page cache (root)
//! ```
//!
//! The fill runs with `fsync=never` (the fill's speed is not what is
//! measured; every restart scans what the last checkpoint does not cover
//! either way) and needs that much free disk in the temp directory.

use std::time::{Duration, Instant};

use pigeon_client::client::{
    Admin, Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord, Reader,
    ReaderConfig, StartAt,
};
use pigeon_suite::{Broker, dir_size};

const VALUE_BYTES: usize = 1024;

fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let gib = env("PIGEON_BENCH_GIB", 5);
    let rounds = env("PIGEON_BENCH_ROUNDS", 3);
    let records = gib * (1 << 30) / VALUE_BYTES as u64;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut broker = Broker::start(&data, &["--fsync", "never"]);
    let runtime = pigeon_suite::runtime();

    let filled = Instant::now();
    runtime.block_on(fill(broker.addr.to_string(), records));
    let fill_time = filled.elapsed();
    let log_bytes = dir_size(&data.join("topics"));
    eprintln!(
        "filled {records} records ({:.2} GiB on disk) in {fill_time:.1?}",
        log_bytes as f64 / (1u64 << 30) as f64
    );

    println!("| round | log on disk | to the serving line | to a fetch at the end and a produce |");
    println!("| --- | --- | --- | --- |");
    let mut serving = Vec::new();
    let mut usable = Vec::new();
    let cold = std::env::var("PIGEON_BENCH_DROP_CACHES").is_ok_and(|v| v == "1");
    for round in 0..rounds {
        broker.kill();
        if cold {
            drop_page_cache();
        }
        let started = Instant::now();
        broker.restart();
        let to_serving = started.elapsed();
        runtime.block_on(first_use(broker.addr.to_string(), records + round));
        let to_use = started.elapsed();
        println!(
            "| {round} | {:.2} GiB | {to_serving:.0?} | {to_use:.0?} |",
            log_bytes as f64 / (1u64 << 30) as f64
        );
        serving.push(to_serving);
        usable.push(to_use);
    }
    serving.sort();
    usable.sort();
    println!();
    println!(
        "median of {rounds}: serving after {:.0?}, fetch and produce done after {:.0?} (target < 1 s)",
        serving[serving.len() / 2],
        usable[usable.len() / 2]
    );
}

/// Produces `records` records of [`VALUE_BYTES`] to partition 0 of `bench`.
async fn fill(addr: String, records: u64) {
    let client = Client::connect_with(addr, ClientConfig::default())
        .await
        .expect("connect");
    Admin::new(client.clone())
        .create_topic(NewTopic::new("bench", 1))
        .await
        .expect("create topic");
    let producer = pigeon_suite::load::loader(client);
    let value = bytes::Bytes::from(vec![b'x'; VALUE_BYTES]);
    let records = (0..records).map(|_| ProducerRecord::new(value.clone()).partition(0));
    pigeon_suite::load::produce_all(&producer, "bench", records, 50_000).await;
    producer.close().await;
}

/// A fetch of the last record (at `end - 1`) and one produce, as a client
/// would do right after the restart.
async fn first_use(addr: String, end: u64) {
    let client = Client::connect_with(addr, ClientConfig::default())
        .await
        .expect("connect");
    let mut reader = Reader::open(
        &client,
        "bench",
        0,
        ReaderConfig::new(StartAt::Offset(end - 1)),
    )
    .await
    .expect("open a reader");
    let record = tokio::time::timeout(Duration::from_secs(30), reader.next_record())
        .await
        .expect("fetch in time")
        .expect("a record")
        .expect("fetch");
    assert_eq!(record.offset, end - 1, "the last record survived the kill");
    let producer = Producer::new(client, ProducerConfig::default());
    producer
        .send(
            "bench",
            ProducerRecord::new(&b"after restart"[..]).partition(0),
        )
        .await
        .expect("produce after restart");
    producer.close().await;
}

/// Writes dirty pages back and empties the page cache, so the restart
/// reads from the disk (root only; says so otherwise).
fn drop_page_cache() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3\n") {
        eprintln!("cannot drop the page cache ({e}): this restart is not cold");
    }
}
