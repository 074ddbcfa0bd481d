//! Produce and fetch quotas against the real `pigeon-broker`, end to end:
//!
//! - with users, one user's connections share one produce bucket: two
//!   connections of alice producing as fast as they can are held together
//!   near alice's quota, while bob's connection is never throttled;
//! - the produce quota charges whole request frames: a flood of tiny
//!   produces (a long topic name, a one-byte record) is held near the
//!   quota counted in frame bytes, far below what its record batches alone
//!   would allow;
//! - the fetch quota holds a reader near it (the responses' frame bytes),
//!   while another connection's small reads are not slowed.
//!
//! Rates are measured after the bucket's saved-up second, over a window of
//! a few seconds, with generous bounds (the machine is shared and noisy).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pigeon_client::client::{Client, ClientConfig, Credentials, Producer, ProducerConfig};
use pigeon_client::protocol::*;
use pigeon_suite::load::produce_until_stopped;
use pigeon_suite::process::run;
use pigeon_suite::raw::{RawClient, batch};
use pigeon_suite::{Broker, binary, metric, runtime};
use tokio_util::codec::Encoder;

const ALICE_PASSWORD: &str = "alice quota password 7";
const BOB_PASSWORD: &str = "bob quota password 9";

/// The users file: alice and bob, each with a SCRAM verifier and every
/// right.
fn users_file(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for (name, password) in [("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)] {
        let mut command = Command::new(binary("pigeon-broker"));
        command.args(["hash-password", "--toml"]);
        let out = run(
            command,
            format!("{password}\n").as_bytes(),
            Duration::from_secs(60),
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        text.push_str(&format!(
            "[[users]]\nname = \"{name}\"\n{}allow = [{{ topics = \"*\", ops = [\"all\"] }}]\n\n",
            String::from_utf8(out.stdout).expect("utf-8")
        ));
    }
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write users");
    path
}

async fn connect_as(broker: &Broker, user: &str, password: &str) -> Client {
    let config = ClientConfig {
        credentials: Some(Credentials::new(user, password)),
        ..ClientConfig::default()
    };
    Client::connect_with(broker.addr.to_string(), config)
        .await
        .expect("connect and authenticate")
}

/// `pigeon_produce_bytes_total` of one topic.
fn produced_bytes(http: std::net::SocketAddr, topic: &str) -> f64 {
    metric(
        http,
        &format!("pigeon_produce_bytes_total{{topic=\"{topic}\"}}"),
    )
}

#[test]
fn two_connections_of_one_user_share_its_produce_quota_and_another_user_is_not_slowed() {
    const QUOTA: u64 = 128 * 1024;
    const RUN: Duration = Duration::from_secs(5);
    // The first second spends the bucket's saved-up burst; measure after.
    const FROM: Duration = Duration::from_millis(1500);
    const MAX_BATCH: usize = 32 * 1024;
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = users_file(tmp.path()).display().to_string();
    let broker = Broker::start(
        &tmp.path().join("data"),
        &[
            "--users",
            &users,
            "--produce-quota-bytes-per-sec",
            &QUOTA.to_string(),
            "--fsync",
            "never",
        ],
    );
    let rt = runtime();
    let (alice_stats, bob_latencies, bob_throttle, marks) = rt.block_on(async {
        let admin = connect_as(&broker, "alice", ALICE_PASSWORD).await;
        for topic in ["alice", "bob"] {
            let create = CreateTopicRequest {
                topic: topic.into(),
                partitions: 2,
                retention_ms: None,
                retention_bytes: None,
            };
            admin.request(create.into()).await.expect("create topic");
        }
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        // Two connections of alice, each a producer sending 1 KiB records
        // as fast as its buffer lets it.
        let mut producers = Vec::new();
        let mut heavy = Vec::new();
        for i in 0..2 {
            let client = connect_as(&broker, "alice", ALICE_PASSWORD).await;
            let config = ProducerConfig {
                producer_name: Some(format!("alice-{i}")),
                buffer_memory: 128 * 1024,
                max_batch_bytes: MAX_BATCH,
                ..ProducerConfig::default()
            };
            let producer = Producer::new(client, config);
            producers.push(producer.clone());
            let stop = stop.clone();
            heavy.push(tokio::spawn(async move {
                let what = "every record of alice delivered";
                produce_until_stopped(&producer, "alice", &[b'a'; 1024], &stop, what).await;
            }));
        }
        // bob: 200 bytes every 50 ms, timed, with Produce v1 (negotiated)
        // so that a throttle would show.
        let bob = {
            let client = connect_as(&broker, "bob", BOB_PASSWORD).await;
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut latencies, mut throttle_ms) = (Vec::new(), 0u32);
                let value = vec![b'b'; 200];
                while !stop.load(Ordering::SeqCst) {
                    let request = ProduceRequest {
                        timeout_ms: 30_000,
                        topic: "bob".into(),
                        partitions: vec![ProducePartition {
                            partition: 0,
                            batches: vec![batch(&[&value])],
                        }],
                    };
                    let sent = Instant::now();
                    match client.request(request.into()).await.expect("bob produces") {
                        Response::Produce(r) => {
                            assert_eq!(r.partitions[0].error_code, ErrorCode::None);
                            throttle_ms += r.throttle_ms;
                        }
                        other => panic!("bob's produce: {other:?}"),
                    }
                    latencies.push(sent.elapsed());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (latencies, throttle_ms)
            })
        };
        tokio::time::sleep_until((started + FROM).into()).await;
        let http = broker.http;
        let sample = move || (Instant::now(), produced_bytes(http, "alice"));
        let first = tokio::task::spawn_blocking(sample).await.expect("sample");
        tokio::time::sleep_until((started + RUN).into()).await;
        let last = tokio::task::spawn_blocking(sample).await.expect("sample");
        stop.store(true, Ordering::SeqCst);
        for task in heavy {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("alice's producers drained their buffers")
                .expect("alice");
        }
        let (latencies, throttle_ms) = bob.await.expect("bob");
        let stats: Vec<_> = producers.iter().map(|p| p.throttle_stats()).collect();
        (stats, latencies, throttle_ms, (first, last))
    });
    let ((t0, alice0), (t1, alice1)) = marks;
    let window = t1.duration_since(t0).as_secs_f64();
    let alice_rate = (alice1 - alice0) / window;
    let mut bob = bob_latencies;
    bob.sort();
    let bob_max = bob.last().copied().unwrap_or_default();
    println!(
        "produce quota {} KiB/s per user, over {window:.1} s after the burst: alice's two connections together {:.0} KiB/s \
         (throttled answers per connection: {:?}); bob: {} produces, max latency {bob_max:?}, throttle_ms {bob_throttle}",
        QUOTA / 1024,
        alice_rate / 1024.0,
        alice_stats
            .iter()
            .map(|s| s.throttled_responses)
            .collect::<Vec<_>>(),
        bob.len(),
    );
    let quota = QUOTA as f64;
    // The user's two connections together get at most the quota, plus the
    // saved-up second and one request over per connection; two separate
    // buckets would let through about twice the quota.
    let most = quota + (quota + 2.0 * (MAX_BATCH as f64 + 2048.0)) / window;
    assert!(
        alice_rate <= most,
        "alice's connections together: {alice_rate:.0} B/s, quota {quota} B/s (at most {most:.0})"
    );
    assert!(
        alice_rate >= 0.4 * quota,
        "alice's connections together: only {alice_rate:.0} B/s, quota {quota} B/s"
    );
    for stats in &alice_stats {
        assert!(
            stats.throttled_responses > 0,
            "each of alice's connections is throttled: {stats:?}"
        );
    }
    assert_eq!(bob_throttle, 0, "bob was throttled by alice's quota");
    assert!(
        bob_max < Duration::from_secs(2),
        "bob's produce waited {bob_max:?}"
    );
}

/// The size of `request`'s frame at `version`, as the client encodes it.
fn frame_size(request: Request, api_version: u16) -> usize {
    let mut buf = BytesMut::new();
    ClientCodec::default()
        .encode(
            RequestFrame {
                request_id: 1,
                api_version,
                request,
            },
            &mut buf,
        )
        .expect("encode");
    buf.len()
}

#[test]
fn a_flood_of_tiny_produces_is_throttled_by_its_frame_overhead() {
    const QUOTA: u64 = 16 * 1024;
    const RUN: Duration = Duration::from_secs(5);
    const FROM: Duration = Duration::from_millis(1500);
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(
        &tmp.path().join("data"),
        &[
            "--produce-quota-bytes-per-sec",
            &QUOTA.to_string(),
            "--fsync",
            "never",
        ],
    );
    // The longest topic name and a one-byte record: most of each frame is
    // overhead.
    let topic = "t".repeat(MAX_TOPIC_NAME_LEN);
    let record = batch(&[b"x"]);
    let request = ProduceRequest {
        timeout_ms: 30_000,
        topic: topic.clone(),
        partitions: vec![ProducePartition {
            partition: 0,
            batches: vec![record.clone()],
        }],
    };
    let frame = frame_size(request.clone().into(), 1);
    let rt = runtime();
    let (answers, throttled_answers) = rt.block_on(async {
        let mut c = RawClient::connect(broker.addr).await;
        c.create_topic(&topic, 1).await;
        let started = Instant::now();
        let (mut answers, mut throttled) = (Vec::new(), 0);
        // A client that ignores throttle_ms: the broker mutes it anyway.
        while started.elapsed() < RUN {
            match c.call_version(request.clone().into(), 1).await {
                ResponseBody::Ok(Response::Produce(r)) => {
                    assert_eq!(r.partitions[0].error_code, ErrorCode::None);
                    if r.throttle_ms > 0 {
                        throttled += 1;
                    }
                }
                other => panic!("tiny produce: {other:?}"),
            }
            answers.push(started.elapsed());
        }
        (answers, throttled)
    });
    let in_window = answers.iter().filter(|t| **t >= FROM).count();
    let window = (RUN - FROM).as_secs_f64();
    let per_second = in_window as f64 / window;
    let frame_rate = per_second * frame as f64;
    let batch_only = QUOTA as f64 / record.len() as f64;
    println!(
        "tiny produces: frame {frame} B (record batch {} B), quota {QUOTA} B/s: {per_second:.0} produces/s \
         = {frame_rate:.0} frame B/s over {window:.1} s after the burst ({throttled_answers} answers with throttle_ms); \
         charging record batches only would allow {batch_only:.0} produces/s",
        record.len()
    );
    let quota = QUOTA as f64;
    let most = quota + (quota + frame as f64) / window;
    assert!(
        frame_rate <= most,
        "{frame_rate:.0} frame bytes/s with a quota of {quota} (at most {most:.0})"
    );
    assert!(
        per_second < 0.5 * batch_only,
        "{per_second:.0} produces/s: the frame overhead is not charged"
    );
    assert!(
        frame_rate >= 0.4 * quota,
        "only {frame_rate:.0} frame bytes/s with a quota of {quota}"
    );
    assert!(throttled_answers > 0, "no answer carried throttle_ms");
    assert!(metric(broker.http, "pigeon_produce_throttled_total") > 0.0);
}

#[test]
fn the_fetch_quota_holds_a_reader_near_it_and_leaves_another_connection_alone() {
    const QUOTA: u64 = 64 * 1024;
    const RUN: Duration = Duration::from_secs(5);
    const FROM: Duration = Duration::from_millis(1500);
    const FETCH_MAX: u32 = 16 * 1024;
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(
        &tmp.path().join("data"),
        &[
            "--fetch-quota-bytes-per-sec",
            &QUOTA.to_string(),
            "--fsync",
            "never",
        ],
    );
    let rt = runtime();
    let (reads, light_latencies) = rt.block_on(async {
        let mut admin = RawClient::connect(broker.addr).await;
        admin.create_topic("data", 1).await;
        admin.create_topic("light", 1).await;
        // 1 MiB in 64 batches of 16 1 KiB records (no produce quota).
        let value = vec![b'd'; 1024];
        let values: Vec<&[u8]> = (0..16).map(|_| value.as_slice()).collect();
        for _ in 0..64 {
            let ack = admin.produce("data", 0, &values).await;
            assert_eq!(ack.error_code, ErrorCode::None, "{}", ack.error_message);
        }
        let ack = admin.produce("light", 0, &[b"small"]).await;
        assert_eq!(ack.error_code, ErrorCode::None);
        let end = 64 * 16;
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let light = {
            let stop = stop.clone();
            let addr = broker.addr;
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                let mut latencies = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let r = c.fetch("light", 0, 0, 0).await;
                    assert_eq!(r.error_code, ErrorCode::None, "{}", r.error_message);
                    assert!(!r.records.is_empty());
                    latencies.push(sent.elapsed());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                latencies
            })
        };
        // The reader fetches 16 KiB at a time, round and round the log.
        let mut reader = RawClient::connect(broker.addr).await;
        let (mut offset, mut reads) = (0u64, Vec::new());
        while started.elapsed() < RUN {
            let request = FetchRequest {
                max_wait_ms: 0,
                min_bytes: 1,
                max_bytes: FETCH_MAX,
                partitions: vec![FetchPartition {
                    topic: "data".into(),
                    partition: 0,
                    offset,
                    max_bytes: FETCH_MAX,
                }],
            };
            let response = match reader.call(request.into()).await {
                ResponseBody::Ok(Response::Fetch(r)) => r,
                other => panic!("fetch: {other:?}"),
            };
            let records = &response.partitions[0].records;
            assert!(!records.is_empty(), "{response:?}");
            let last = pigeon_suite::raw::decode_records(records)
                .last()
                .map(|r| r.offset)
                .expect("a record");
            offset = if last + 1 >= end { 0 } else { last + 1 };
            reads.push((started.elapsed(), records.len()));
        }
        stop.store(true, Ordering::SeqCst);
        (reads, light.await.expect("light"))
    });
    let window = (RUN - FROM).as_secs_f64();
    let bytes: usize = reads
        .iter()
        .filter(|(t, _)| *t >= FROM)
        .map(|(_, n)| n)
        .sum();
    let rate = bytes as f64 / window;
    let light_max = light_latencies.iter().max().copied().unwrap_or_default();
    let throttled = metric(broker.http, "pigeon_fetch_throttled_total");
    let throttle_seconds = metric(broker.http, "pigeon_fetch_throttle_seconds_sum");
    println!(
        "fetch quota {} KiB/s per connection: the reader got {:.0} KiB/s of records over {window:.1} s after the burst \
         ({} fetches in all); broker: {throttled} throttled responses, {throttle_seconds:.1} s of throttle; \
         light connection: {} fetches, max latency {light_max:?}",
        QUOTA / 1024,
        rate / 1024.0,
        reads.len(),
        light_latencies.len(),
    );
    let quota = QUOTA as f64;
    // Record bytes are a little less than the frames charged.
    let most = quota + (quota + 2.0 * f64::from(FETCH_MAX)) / window;
    assert!(
        rate <= most,
        "{rate:.0} B/s fetched with a quota of {quota} (at most {most:.0})"
    );
    assert!(
        rate >= 0.4 * quota,
        "only {rate:.0} B/s fetched with a quota of {quota}"
    );
    assert!(throttled > 0.0 && throttle_seconds > 0.0);
    assert!(
        light_max < Duration::from_secs(2),
        "the light reader waited {light_max:?}"
    );
}
