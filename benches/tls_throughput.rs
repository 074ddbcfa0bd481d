//! Throughput with TLS on next to plain TCP: one batching `Producer`
//! sending records of 100 B and of 1 KiB over loopback to a real
//! `pigeon-broker` (release build, `fsync=always`, the defaults otherwise),
//! then one `Reader` reading them back, against two brokers started side
//! by side, one plain and one with `--tls-cert`/`--tls-key` (a certificate
//! made in the run with rcgen). Plain and TLS rounds alternate in the same
//! run, so the ratio is measured on the same footing.
//!
//! ```sh
//! cargo bench --bench tls_throughput                      # 300,000 records per round, 5 rounds each
//! PIGEON_BENCH_RECORDS=100000 PIGEON_BENCH_ROUNDS=3 cargo bench --bench tls_throughput
//! ```
//!
//! Prints a markdown table (medians) for `docs/benchmarks.md`, with the
//! load average before and after the run.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pigeon_client::client::{
    Admin, Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord, Reader,
    ReaderConfig, StartAt, TlsConfig,
};
use pigeon_suite::Broker;
use pigeon_suite::pki::Ca;

/// Deliveries awaited lazily: at most this many outstanding futures.
const WINDOW: usize = 100_000;
const SIZES: [usize; 2] = [100, 1024];

/// One listener to measure: its address and how to reach it.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    config: ClientConfig,
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let records = env("PIGEON_BENCH_RECORDS", 300_000);
    let rounds = env("PIGEON_BENCH_ROUNDS", 5);
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(tmp.path(), "bench");
    let cert = ca.broker("broker");
    let plain = Broker::start(&tmp.path().join("plain"), &["--fsync", "always"]);
    let mut tls_flags = vec!["--fsync".to_owned(), "always".to_owned()];
    tls_flags.extend(cert.flags());
    let tls_flags: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
    let tls = Broker::start(&tmp.path().join("tls"), &tls_flags);
    let targets = [
        Target {
            name: "plain TCP",
            addr: plain.addr,
            config: ClientConfig::default(),
        },
        Target {
            name: "TLS",
            addr: tls.addr,
            config: tls_config(&ca.cert),
        },
    ];
    let load_before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // (size, target) -> produce and read rates of each round.
    let mut produced = vec![vec![Vec::new(); targets.len()]; SIZES.len()];
    let mut read = vec![vec![Vec::new(); targets.len()]; SIZES.len()];
    runtime.block_on(async {
        for round in 0..rounds {
            for (s, &size) in SIZES.iter().enumerate() {
                for (t, target) in targets.iter().enumerate() {
                    let topic = format!("bench-{round}-{size}");
                    let client = Client::connect_with(target.addr.to_string(), target.config.clone())
                        .await
                        .expect("connect");
                    let admin = Admin::new(client.clone());
                    admin.create_topic(NewTopic::new(&topic, 1)).await.expect("create topic");
                    let wrote = produce(client.clone(), &topic, records, size).await;
                    let took = read_all(&client, &topic, records).await;
                    admin.delete_topic(&topic).await.expect("delete topic");
                    let (p, r) = (rate(records, wrote), rate(records, took));
                    eprintln!(
                        "round {round} {size:>4} B {:<9}: produce {p:>9.0} msgs/s, read {r:>9.0} msgs/s",
                        target.name
                    );
                    produced[s][t].push(p);
                    read[s][t].push(r);
                }
            }
        }
    });
    let load_after = load_average();
    println!(
        "load average (1 min) before {load_before}, after {load_after}; {records} records per round, medians of {rounds} rounds"
    );
    println!();
    println!("| record | listener | produce msgs/s | produce MB/s | read msgs/s | read MB/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (s, &size) in SIZES.iter().enumerate() {
        for (t, target) in targets.iter().enumerate() {
            let (p, r) = (median(&mut produced[s][t]), median(&mut read[s][t]));
            let mb = |rate: f64| rate * size as f64 / 1e6;
            println!(
                "| {size} B | {} | {p:.0} | {:.1} | {r:.0} | {:.1} |",
                target.name,
                mb(p),
                mb(r)
            );
        }
    }
    println!();
    for (s, &size) in SIZES.iter().enumerate() {
        let ratio = |rates: &mut Vec<Vec<f64>>| median(&mut rates[1]) / median(&mut rates[0]);
        println!(
            "{size} B: TLS / plain = {:.3} (produce), {:.3} (read)",
            ratio(&mut produced[s]),
            ratio(&mut read[s])
        );
    }
}

fn tls_config(ca: &Path) -> ClientConfig {
    ClientConfig {
        tls: Some(TlsConfig::from_pem_files(ca, None).expect("tls config")),
        ..ClientConfig::default()
    }
}

/// Sends `records` records of `size` bytes and waits for every
/// acknowledgement.
async fn produce(client: Client, topic: &str, records: usize, size: usize) -> Duration {
    let config = ProducerConfig {
        producer_name: Some(format!("bench-{topic}")),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let value = vec![b'x'; size];
    let started = Instant::now();
    let records = (0..records).map(|_| ProducerRecord::new(value.clone()).partition(0));
    pigeon_suite::load::produce_all(&producer, topic, records, WINDOW).await;
    let elapsed = started.elapsed();
    producer.close().await;
    elapsed
}

/// Reads partition 0 of `topic` from the start to its end (`records`
/// records).
async fn read_all(client: &Client, topic: &str, records: usize) -> Duration {
    let started = Instant::now();
    let config = ReaderConfig::new(StartAt::Earliest).follow(false);
    let mut reader = Reader::open(client, topic, 0, config)
        .await
        .expect("open reader");
    let mut seen = 0;
    while let Some(record) = reader.next().await {
        record.expect("record");
        seen += 1;
    }
    assert_eq!(seen, records, "the reader read every record");
    started.elapsed()
}

fn rate(records: usize, took: Duration) -> f64 {
    records as f64 / took.as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The 1-minute load average, as text.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
