//! Cost in the number of partitions and of consumer groups (issue 16 item
//! 3): a real `pigeon-broker` (release) on a temp data dir, measured from
//! outside through `/proc`.
//!
//! **Partitions.** For each N of `PIGEON_SCALE_PARTITIONS`, a fresh broker
//! gets N partitions over topics of at most 1,000 partitions each; the
//! bench reads the broker's threads, RSS and open fds idle, then runs
//! `PIGEON_SCALE_CONNECTIONS` producers (each on its own connection)
//! sending 1 KiB records round-robin over all N partitions for
//! `PIGEON_SCALE_SECS` seconds (at most 20,000 unacknowledged each), and
//! reports the records acknowledged per second (until the last one's
//! acknowledgement), the partition-log fsyncs per second during that time
//! and the records each one made durable on average (from `/metrics`; the
//! disk's own ceiling for many files syncing at once is
//! `cargo bench --bench log -- fsync_threads`), the threads, RSS and fds
//! under that load; then it kills the broker with
//! SIGKILL (at once, or `PIGEON_SCALE_IDLE_SECS` seconds after the last
//! acknowledgement, giving the broker time to checkpoint the idle
//! partitions) and times the restart until its "serving" line, and until a
//! produce to the last partition is acknowledged.
//!
//! **Groups.** For each G of `PIGEON_SCALE_GROUPS`, a fresh broker gets
//! one topic of `PIGEON_SCALE_GROUP_PARTITIONS` partitions (default 1)
//! filled with `PIGEON_SCALE_GROUP_RECORDS` 1 KiB records, and G groups
//! on it (each with its dead-letter topic), each with one consumer on its
//! own connection that receives and acks for `PIGEON_SCALE_SECS` seconds
//! (or until it read everything); it reports the aggregate acked msgs/s
//! (acks over the time until the last consumer stopped), threads, RSS and
//! fds.
//!
//! ```sh
//! cargo bench --bench scale_e2e          # 1, 100, 1000, 10000 partitions; 1, 100, 1000 groups
//! PIGEON_SCALE_PARTITIONS=1,100 PIGEON_SCALE_GROUPS=1,10 PIGEON_SCALE_SECS=3 \
//!   cargo bench --bench scale_e2e         # a quick run
//! PIGEON_SCALE_FLAGS="--writer-threads 8" cargo bench --bench scale_e2e   # extra broker flags
//! PIGEON_BENCH_BROKER=path/to/pigeon-broker cargo bench --bench scale_e2e  # another build
//! PIGEON_BENCH_START_TIMEOUT_SECS=600 cargo bench --bench scale_e2e       # slow restarts (default 30 s)
//! PIGEON_SCALE_IDLE_SECS=7 cargo bench --bench scale_e2e                  # kill 7 s after the traffic stopped
//! ```
//!
//! The broker runs with its defaults (`fsync=always`) but for the caps the
//! runs need raised (`--max-partitions`, `--max-topics`,
//! `--max-connections-per-peer`). Each partition holds one file open, its
//! active segment's `.log` (index files are not held open, and sealed
//! segments' files are bounded broker-wide by `max_open_segments`, see
//! docs/storage.md, "Open files and maps"); a size is skipped when that
//! estimate does not fit the open-file limit. The bench raises its
//! open-file limit (which the broker inherits) to 200,000 when it may (as
//! root); it prints the limit it got. Results are in docs/benchmarks.md
//! ("Scale: partitions and groups").

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pigeon_client::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, GroupDelivery, NewTopic, Producer,
    ProducerConfig, ProducerRecord,
};
use pigeon_client::protocol::GroupSettings;
use pigeon_suite::Broker;

const VALUE_BYTES: usize = 1024;
/// Most partitions of one topic in the bench.
const TOPIC_PARTITIONS: u32 = 1000;
/// Records a producer may have unacknowledged.
const WINDOW: usize = 20_000;
/// Open files besides one per partition: sealed segments' files (the
/// broker's default `max_open_segments`), connections, the rest.
const OTHER_FILES: u64 = 1024 + 1000;

fn list(name: &str, default: &str) -> Vec<u32> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: counts"))
        })
        .collect()
}

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// What `/proc` says of the broker.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    threads: u64,
    rss_kib: u64,
    fds: u64,
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Sample {
        threads: field("Threads:"),
        rss_kib: field("VmRSS:"),
        fds,
    }
}

/// The broker's partition-log fsyncs so far: the sum of every partition's
/// `pigeon_log_fsync_seconds_count` in `/metrics` (one scrape; at 10,000
/// partitions it is tens of MB, so it is read only before and after the
/// produce phase).
fn fsyncs(broker: &Broker) -> u64 {
    let (_, body) = pigeon_suite::http_get(broker.http, "/metrics");
    body.lines()
        .filter(|l| l.starts_with("pigeon_log_fsync_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The larger of each figure.
fn max(a: Sample, b: Sample) -> Sample {
    Sample {
        threads: a.threads.max(b.threads),
        rss_kib: a.rss_kib.max(b.rss_kib),
        fds: a.fds.max(b.fds),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Samples the broker every 200 ms until `stop`; the largest figures.
fn sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Sample> {
    std::thread::spawn(move || {
        let mut peak = Sample::default();
        while !stop.load(Ordering::Relaxed) {
            peak = max(peak, sample(pid));
            std::thread::sleep(Duration::from_millis(200));
        }
        peak
    })
}

/// Raises this process's open-file limit (inherited by the broker, which
/// raises its soft limit to the hard one) to `want` if it can, for runs
/// beyond a common hard limit of 20,000 (one file per partition, plus
/// [`OTHER_FILES`]). Returns the hard limit.
fn raise_file_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_max < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_max
}

fn main() {
    let files = raise_file_limit(200_000);
    let partitions = list("PIGEON_SCALE_PARTITIONS", "1,100,1000,10000");
    let groups = list("PIGEON_SCALE_GROUPS", "1,100,1000");
    let secs = number("PIGEON_SCALE_SECS", 10);
    let connections = number("PIGEON_SCALE_CONNECTIONS", 4) as usize;
    let idle_before_kill = Duration::from_secs(number("PIGEON_SCALE_IDLE_SECS", 0));
    let extra = std::env::var("PIGEON_SCALE_FLAGS").unwrap_or_default();
    let mut flags: Vec<String> = [
        "--max-partitions",
        "30000",
        "--max-topics",
        "5000",
        "--max-connections-per-peer",
        "10000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(extra.split_whitespace().map(str::to_owned));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let runtime = pigeon_suite::runtime();
    println!(
        "{} s of produce per run, {connections} producer connections, 1 KiB records; kill -9 {} s after the last acknowledgement; open-file limit {files}; broker flags: {}",
        secs,
        idle_before_kill.as_secs(),
        flags.join(" ")
    );

    if !partitions.is_empty() {
        println!();
        println!(
            "| partitions | topics | idle: threads / RSS / fds | create time | msgs/s (acked) | fsyncs/s / records per fsync | under load: threads / RSS / fds (peak) | restart after kill -9: serving / produce acked | load average |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    }
    for &n in &partitions {
        let needed = u64::from(n) + OTHER_FILES;
        if needed > files {
            println!(
                "| {n} | — | skipped: needs about {needed} open files (one per partition), the limit is {files} | | | | | | {} |",
                load_average()
            );
            continue;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mut broker = Broker::start(&data, &flags);
        let addr = broker.addr.to_string();
        let created = Instant::now();
        let layout = runtime.block_on(create_topics(addr.clone(), n));
        let create_time = created.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        let idle = sample(broker.pid());

        let synced_before = fsyncs(&broker);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = sampler(broker.pid(), stop.clone());
        let (acked, took) = runtime.block_on(produce(
            addr,
            layout.clone(),
            connections,
            Duration::from_secs(secs),
        ));
        stop.store(true, Ordering::Relaxed);
        let loaded = peak.join().expect("sampler");
        let rate = acked as f64 / took.as_secs_f64();
        let synced = fsyncs(&broker).saturating_sub(synced_before);
        let syncs = if synced == 0 {
            "— / —".to_owned()
        } else {
            format!(
                "{:.0} / {:.1}",
                synced as f64 / took.as_secs_f64(),
                acked as f64 / synced as f64
            )
        };
        let load = load_average();

        // The partitions' writes have stopped: the broker may checkpoint
        // them (the idle checkpoint) before the kill.
        std::thread::sleep(idle_before_kill);
        broker.kill();
        let started = Instant::now();
        broker.restart();
        let serving = started.elapsed();
        let (topic, partition) = layout
            .iter()
            .map(|(t, p)| (t.clone(), p - 1))
            .next_back()
            .expect("a topic");
        runtime.block_on(produce_one(broker.addr.to_string(), topic, partition));
        let usable = started.elapsed();
        println!(
            "| {n} | {} | {} / {} / {} | {create_time:.1?} | {rate:.0} | {syncs} | {} / {} / {} | {serving:.0?} / {usable:.0?} | {load} |",
            layout.len(),
            idle.threads,
            mib(idle.rss_kib),
            idle.fds,
            loaded.threads,
            mib(loaded.rss_kib),
            loaded.fds,
        );
    }

    if !groups.is_empty() {
        let group_partitions = number("PIGEON_SCALE_GROUP_PARTITIONS", 1) as u32;
        let records = number("PIGEON_SCALE_GROUP_RECORDS", 200_000);
        println!();
        println!(
            "one topic of {group_partitions} partition(s) holding {records} records of 1 KiB; each group has one consumer that receives and acks for {secs} s"
        );
        println!();
        println!(
            "| groups | idle: threads / RSS / fds | acked msgs/s (all groups) | groups that read everything | under load: threads / RSS / fds (peak) | load average |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
    }
    for &g in &groups {
        let group_partitions = number("PIGEON_SCALE_GROUP_PARTITIONS", 1) as u32;
        let records = number("PIGEON_SCALE_GROUP_RECORDS", 200_000);
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let broker = Broker::start(&data, &flags);
        let addr = broker.addr.to_string();
        runtime.block_on(fill_for_groups(addr.clone(), group_partitions, records, g));
        std::thread::sleep(Duration::from_millis(500));
        let idle = sample(broker.pid());
        let stop = Arc::new(AtomicBool::new(false));
        let peak = sampler(broker.pid(), stop.clone());
        let (acked, drained, took) =
            runtime.block_on(consume_groups(addr, g, records, Duration::from_secs(secs)));
        stop.store(true, Ordering::Relaxed);
        let loaded = peak.join().expect("sampler");
        println!(
            "| {g} | {} / {} / {} | {:.0} | {drained} | {} / {} / {} | {} |",
            idle.threads,
            mib(idle.rss_kib),
            idle.fds,
            acked as f64 / took.as_secs_f64(),
            loaded.threads,
            mib(loaded.rss_kib),
            loaded.fds,
            load_average(),
        );
    }
}

async fn connect(addr: String) -> Client {
    Client::connect_with(addr, ClientConfig::default())
        .await
        .expect("connect")
}

/// Creates `n` partitions over topics of at most [`TOPIC_PARTITIONS`];
/// returns each topic with its partition count.
async fn create_topics(addr: String, n: u32) -> Vec<(String, u32)> {
    let admin = Admin::new(connect(addr).await);
    let mut layout = Vec::new();
    let topics = n.div_ceil(TOPIC_PARTITIONS);
    for t in 0..topics {
        let count = n / topics + u32::from(t < n % topics);
        let name = format!("scale-{t}");
        admin
            .create_topic(NewTopic::new(&name, count))
            .await
            .expect("create topic");
        layout.push((name, count));
    }
    layout
}

/// Runs `connections` producers over every partition of `layout`,
/// enqueueing for `duration`; returns the records acknowledged and the time
/// until the last acknowledgement.
async fn produce(
    addr: String,
    layout: Vec<(String, u32)>,
    connections: usize,
    duration: Duration,
) -> (u64, Duration) {
    let started = Instant::now();
    let targets: Arc<Vec<(String, u32)>> = Arc::new(
        layout
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
            .collect(),
    );
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let targets = targets.clone();
        let acked = acked.clone();
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let producer = pigeon_suite::load::loader(connect(addr).await);
            let value = bytes::Bytes::from(vec![b'x'; VALUE_BYTES]);
            let mut pending = VecDeque::new();
            let mut next = c;
            while Instant::now() < deadline {
                let (topic, partition) = &targets[next % targets.len()];
                next += connections;
                let record = ProducerRecord::new(value.clone()).partition(*partition);
                pending.push_back(producer.enqueue(topic, record).await.expect("enqueue"));
                if pending.len() >= WINDOW
                    && let Some(oldest) = pending.pop_front()
                {
                    oldest.await.expect("delivered");
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            for delivery in pending {
                delivery.await.expect("delivered");
                acked.fetch_add(1, Ordering::Relaxed);
            }
            producer.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
    (acked.load(Ordering::Relaxed), started.elapsed())
}

/// One record to `partition` of `topic`, acknowledged.
async fn produce_one(addr: String, topic: String, partition: u32) {
    let producer = Producer::new(connect(addr).await, ProducerConfig::default());
    producer
        .enqueue(
            &topic,
            ProducerRecord::new(vec![b'y'; VALUE_BYTES]).partition(partition),
        )
        .await
        .expect("enqueue")
        .await
        .expect("delivered after the restart");
    producer.close().await;
}

const GROUP_TOPIC: &str = "scale-groups";

/// One topic of `partitions` filled with `records` records, and `groups`
/// groups on it.
async fn fill_for_groups(addr: String, partitions: u32, records: u64, groups: u32) {
    let client = connect(addr).await;
    let admin = Admin::new(client.clone());
    admin
        .create_topic(NewTopic::new(GROUP_TOPIC, partitions))
        .await
        .expect("create topic");
    let producer = pigeon_suite::load::loader(client);
    let value = bytes::Bytes::from(vec![b'x'; VALUE_BYTES]);
    let load = (0..records)
        .map(|i| ProducerRecord::new(value.clone()).partition((i % partitions as u64) as u32));
    pigeon_suite::load::produce_all(&producer, GROUP_TOPIC, load, 50_000).await;
    producer.close().await;
    for g in 0..groups {
        admin
            .create_group(GROUP_TOPIC, &format!("g{g}"), GroupSettings::default())
            .await
            .expect("create group");
    }
}

/// `groups` consumers, one per group, each receiving and acking for
/// `duration` or until it read all `records`; returns the acks done within
/// `duration`, how many groups read everything, and the time until the
/// last consumer stopped (at most `duration`).
async fn consume_groups(
    addr: String,
    groups: u32,
    records: u64,
    duration: Duration,
) -> (u64, u64, Duration) {
    let acked = Arc::new(AtomicU64::new(0));
    let drained = Arc::new(AtomicU64::new(0));
    let client = connect(addr).await;
    let mut consumers = Vec::new();
    for g in 0..groups {
        let consumer = Consumer::join(
            &client,
            GROUP_TOPIC,
            &format!("g{g}"),
            ConsumerConfig {
                max_messages: 1000,
                ..ConsumerConfig::default()
            },
        )
        .await
        .expect("join");
        consumers.push(consumer);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for mut consumer in consumers {
        let acked = acked.clone();
        let drained = drained.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            let mut acking: Option<tokio::task::JoinHandle<u64>> = None;
            while Instant::now() < deadline && mine < records {
                let left = deadline.saturating_duration_since(Instant::now());
                let batch = consumer
                    .next_batch_within(1000, left.min(Duration::from_secs(1)))
                    .await
                    .expect("receive");
                mine += batch.len() as u64;
                if let Some(previous) = acking.take() {
                    acked.fetch_add(previous.await.expect("ack task"), Ordering::Relaxed);
                }
                acking = Some(tokio::spawn(ack(batch, deadline)));
            }
            if let Some(last) = acking {
                acked.fetch_add(last.await.expect("ack task"), Ordering::Relaxed);
            }
            if mine >= records {
                drained.fetch_add(1, Ordering::Relaxed);
            }
            consumer.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("consumer");
    }
    (
        acked.load(Ordering::Relaxed),
        drained.load(Ordering::Relaxed),
        started.elapsed().min(duration),
    )
}

/// Acks `batch`; returns how many acks were done before `deadline`.
async fn ack(batch: Vec<GroupDelivery>, deadline: Instant) -> u64 {
    if batch.is_empty() {
        return 0;
    }
    let results = GroupDelivery::ack_all(&batch).await.expect("settle");
    let done = Instant::now() < deadline;
    let mut n = 0;
    for result in results {
        result.expect("ack");
        n += 1;
    }
    if done { n } else { 0 }
}
