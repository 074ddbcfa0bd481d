//! End-to-end produce throughput: one batching `Producer` sending 100-byte
//! records over loopback to a real `pigeon-broker` (release build,
//! `fsync=always`), with idempotence on and off, alternating rounds in the
//! same run so the ratio is measured side by side.
//!
//! ```sh
//! cargo bench --bench produce_e2e                      # 1,000,000 records per round, 5 rounds each
//! PIGEON_BENCH_RECORDS=200000 PIGEON_BENCH_ROUNDS=9 cargo bench --bench produce_e2e
//! ```
//!
//! Prints a markdown table (medians) for `docs/benchmarks.md`.

use std::time::{Duration, Instant};

use pigeon_client::client::{
    Admin, Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use pigeon_suite::Broker;

const VALUE_BYTES: usize = 100;
/// Deliveries awaited lazily: at most this many outstanding futures.
const WINDOW: usize = 200_000;

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let records = env("PIGEON_BENCH_RECORDS", 1_000_000);
    let rounds = env("PIGEON_BENCH_ROUNDS", 5);
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &["--fsync", "always"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut on = Vec::new();
    let mut off = Vec::new();
    runtime.block_on(async {
        let admin = Admin::new(Client::connect(broker.addr.to_string()).await.expect("connect"));
        for round in 0..rounds {
            for idempotent in [true, false] {
                let topic = format!("bench-{round}-{idempotent}");
                admin.create_topic(NewTopic::new(&topic, 1)).await.expect("create topic");
                let elapsed = run(broker.addr, &topic, records, idempotent).await;
                let rate = records as f64 / elapsed.as_secs_f64();
                eprintln!("round {round} idempotent={idempotent}: {records} records in {elapsed:.2?} = {rate:.0} msgs/s");
                if idempotent { on.push(rate) } else { off.push(rate) }
                admin.delete_topic(&topic).await.expect("delete topic");
            }
        }
    });
    let (on, off) = (median(&mut on), median(&mut off));
    let mb = |rate: f64| rate * VALUE_BYTES as f64 / 1e6;
    println!("| producer | msgs/s (median of {rounds}) | MB/s of values |");
    println!("| --- | --- | --- |");
    println!("| idempotent (default) | {on:.0} | {:.1} |", mb(on));
    println!("| not idempotent | {off:.0} | {:.1} |", mb(off));
    println!();
    println!("idempotent / not idempotent = {:.3}", on / off);
}

/// Sends `records` records and waits for every acknowledgement.
async fn run(
    addr: std::net::SocketAddr,
    topic: &str,
    records: usize,
    idempotent: bool,
) -> Duration {
    let client = Client::connect_with(addr.to_string(), ClientConfig::default())
        .await
        .expect("connect");
    let config = ProducerConfig {
        idempotent,
        producer_name: Some(format!("bench-{topic}")),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let value = vec![b'x'; VALUE_BYTES];
    let started = Instant::now();
    let records = (0..records).map(|_| ProducerRecord::new(value.clone()).partition(0));
    pigeon_suite::load::produce_all(&producer, topic, records, WINDOW).await;
    let elapsed = started.elapsed();
    producer.close().await;
    elapsed
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
