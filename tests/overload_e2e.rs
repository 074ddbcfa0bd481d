//! Overload against the real `pigeon-broker`, end to end, measuring both
//! sides:
//!
//! - the per-connection produce quota holds a heavy connection near its
//!   byte rate (the Rust producer is told `throttle_ms` and waits; a
//!   version-0 client that is not told is slowed by the broker all the
//!   same), while a light connection is not slowed;
//! - a flood of producers on one topic does not starve a consumer group of
//!   another topic (its receive latency stays bounded), and a consumer that
//!   joined and then stopped (holding its leases, never acking) and a
//!   reader that never reads its responses block neither the producers nor
//!   another group of the flooded topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pigeon_client::client::{Client, Producer, ProducerConfig};
use pigeon_client::protocol::*;
use pigeon_suite::load::produce_until_stopped;
use pigeon_suite::raw::{RawClient, batch};
use pigeon_suite::{Broker, memory, metric, runtime};

fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    (tmp, data)
}

/// Bytes per second each connection may produce in the quota test.
const QUOTA: u64 = 256 * 1024;

/// `pigeon_produce_bytes_total` of one topic.
fn produced_bytes(broker: &Broker, topic: &str) -> f64 {
    metric(
        broker.http,
        &format!("pigeon_produce_bytes_total{{topic=\"{topic}\"}}"),
    )
}

#[test]
fn the_produce_quota_holds_heavy_connections_near_it_and_leaves_a_light_one_alone() {
    let (_tmp, data) = temp();
    let broker = Broker::start(
        &data,
        &["--produce-quota-bytes-per-sec", &QUOTA.to_string()],
    );
    const RUN: Duration = Duration::from_secs(5);
    // The first second spends the bucket's saved-up burst; measure after.
    const FROM: Duration = Duration::from_millis(1500);
    let rt = runtime();
    let (stats, light_latencies, light_throttle, marks) = rt.block_on(async {
        let mut admin = RawClient::connect(broker.addr).await;
        for topic in ["heavy", "ignorer", "light"] {
            admin.create_topic(topic, 2).await;
        }
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));

        // The Rust producer, on its own connection, sending 1 KiB records
        // as fast as its (small) buffer lets it.
        let client = Client::connect(broker.addr.to_string())
            .await
            .expect("connect");
        let config = ProducerConfig {
            buffer_memory: 256 * 1024,
            max_batch_bytes: 64 * 1024,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client, config);
        let heavy = {
            let (producer, stop) = (producer.clone(), stop.clone());
            tokio::spawn(async move {
                let what = "every heavy record delivered";
                produce_until_stopped(&producer, "heavy", &[b'h'; 1024], &stop, what).await;
            })
        };

        // A version-0 client that does not know about throttling: it sends
        // its next 32 KiB batch as soon as it has an answer.
        let ignorer = {
            let stop = stop.clone();
            let addr = broker.addr;
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                let value = vec![b'i'; 1024];
                let values: Vec<&[u8]> = (0..32).map(|_| value.as_slice()).collect();
                while !stop.load(Ordering::SeqCst) {
                    let ack = c.produce("ignorer", 0, &values).await;
                    assert_eq!(ack.error_code, ErrorCode::None, "{}", ack.error_message);
                }
            })
        };

        // A light connection: 200 bytes every 50 ms (4 KB/s), timed, at
        // version 1 so that it would see a throttle if it had one.
        let light = {
            let stop = stop.clone();
            let addr = broker.addr;
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                let mut latencies = Vec::new();
                let mut throttle_ms = 0;
                let value = vec![b'l'; 200];
                while !stop.load(Ordering::SeqCst) {
                    let request = ProduceRequest {
                        timeout_ms: 30_000,
                        topic: "light".into(),
                        partitions: vec![ProducePartition {
                            partition: 0,
                            batches: vec![batch(&[&value])],
                        }],
                    };
                    let sent = Instant::now();
                    match c.call_version(request.into(), 1).await {
                        ResponseBody::Ok(Response::Produce(r)) => {
                            assert_eq!(r.partitions[0].error_code, ErrorCode::None);
                            throttle_ms += r.throttle_ms;
                        }
                        other => panic!("light produce: {other:?}"),
                    }
                    latencies.push(sent.elapsed());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (latencies, throttle_ms)
            })
        };

        tokio::time::sleep_until((started + FROM).into()).await;
        let http = broker.http;
        let sample = move || {
            (
                Instant::now(),
                metric(http, "pigeon_produce_bytes_total{topic=\"heavy\"}"),
                metric(http, "pigeon_produce_bytes_total{topic=\"ignorer\"}"),
            )
        };
        let first = tokio::task::spawn_blocking(sample).await.expect("sample");
        tokio::time::sleep_until((started + RUN).into()).await;
        let last = tokio::task::spawn_blocking(sample).await.expect("sample");
        stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(20), heavy)
            .await
            .expect("the heavy producer drained its buffer")
            .expect("heavy");
        ignorer.await.expect("ignorer");
        let (latencies, throttle_ms) = light.await.expect("light");
        (
            producer.throttle_stats(),
            latencies,
            throttle_ms,
            (first, last),
        )
    });
    let ((t0, heavy0, ignorer0), (t1, heavy1, ignorer1)) = marks;
    let window = t1.duration_since(t0).as_secs_f64();
    let heavy_rate = (heavy1 - heavy0) / window;
    let ignorer_rate = (ignorer1 - ignorer0) / window;
    let mut light = light_latencies;
    light.sort();
    let light_max = light.last().copied().unwrap_or_default();
    let light_p99 = light[light.len() * 99 / 100];
    let throttled = metric(broker.http, "pigeon_produce_throttled_total");
    let throttle_seconds = metric(broker.http, "pigeon_produce_throttle_seconds_sum");
    println!(
        "produce quota {} KiB/s per connection, measured over {window:.1} s after the burst: \
         Rust producer {:.0} KiB/s ({} throttled responses asking for {:.1} s in all, waited {:.1} s), \
         v0 client that ignores throttling {:.0} KiB/s; light connection: {} produces, p99 {:?}, max {:?}, throttle_ms {}; \
         broker: {throttled} throttled responses, {throttle_seconds:.1} s of throttle; light topic {} B",
        QUOTA / 1024,
        heavy_rate / 1024.0,
        stats.throttled_responses,
        stats.throttle_time.as_secs_f64(),
        stats.waited.as_secs_f64(),
        ignorer_rate / 1024.0,
        light.len(),
        light_p99,
        light_max,
        light_throttle,
        produced_bytes(&broker, "light"),
    );
    let quota = QUOTA as f64;
    // Within the window a connection gets at most the quota, plus what the
    // bucket held at its start (at most one second) and one request over.
    let most = quota + (quota + 64.0 * 1024.0) / window;
    for (who, rate) in [("Rust producer", heavy_rate), ("v0 client", ignorer_rate)] {
        assert!(
            rate <= most,
            "{who}: {rate:.0} B/s with a quota of {quota} B/s"
        );
        assert!(
            rate >= 0.5 * quota,
            "{who}: only {rate:.0} B/s with a quota of {quota} B/s"
        );
    }
    assert!(stats.throttled_responses > 0, "{stats:?}");
    assert!(
        stats.waited.as_secs_f64() >= 0.5 * (RUN - FROM).as_secs_f64(),
        "the producer did not wait out its throttle: {stats:?}"
    );
    assert!(throttled > 0.0 && throttle_seconds > 0.0);
    assert_eq!(light_throttle, 0, "the light connection was throttled");
    assert!(
        light_max < Duration::from_secs(1),
        "the light connection waited {light_max:?}"
    );
}

/// Timestamps, relative to a shared origin, packed into record values.
fn stamp(origin: Instant) -> [u8; 8] {
    (origin.elapsed().as_micros() as u64).to_le_bytes()
}

/// When (since the origin) a stamped value was produced.
fn stamped_at(value: &[u8]) -> Duration {
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&value[..8]);
    Duration::from_micros(u64::from_le_bytes(micros))
}

async fn ack(client: &mut RawClient, topic: &str, group: &str, consumer: u64, d: &[Delivery]) {
    if d.is_empty() {
        return;
    }
    let items = d
        .iter()
        .map(|d| SettleItem::ack(d.partition, d.offset, d.attempt))
        .collect();
    client.settle_ok(topic, group, consumer, items).await;
}

/// Counts of events per second since `origin`.
fn per_second(origin: Instant, events: &[Instant], seconds: usize) -> Vec<usize> {
    let mut counts = vec![0; seconds];
    for e in events {
        let s = e.duration_since(origin).as_secs() as usize;
        if s < seconds {
            counts[s] += 1;
        }
    }
    counts
}

#[test]
fn a_producer_flood_starves_no_consumer_and_a_dead_consumer_blocks_nobody() {
    let (_tmp, data) = temp();
    let fsync = std::env::var("PIGEON_FLOOD_FSYNC").unwrap_or_else(|_| "never".into());
    let broker = Broker::start(&data, &["--fsync", &fsync]);
    const FLOOD: Duration = Duration::from_secs(6);
    const FLOODERS: usize = 4;
    let rt = runtime();
    let origin = Instant::now();
    let report = rt.block_on(async {
        let mut admin = RawClient::connect(broker.addr).await;
        admin.create_topic("flooded", 2).await;
        admin.create_topic("quiet", 1).await;
        let settings = GroupSettings {
            ack_timeout_ms: 60_000,
            max_in_flight: 200,
            ..GroupSettings::default()
        };
        for (topic, group) in [("flooded", "live"), ("flooded", "dead"), ("quiet", "live")] {
            let create = CreateGroupRequest {
                topic: topic.into(),
                group: group.into(),
                settings,
            };
            admin.ok(create.into()).await;
        }
        // Something for the dead consumer to take before the flood.
        let value = vec![b'f'; 1024];
        let values: Vec<&[u8]> = (0..50).map(|_| value.as_slice()).collect();
        for partition in 0..2 {
            admin.produce("flooded", partition, &values).await;
        }

        // The dead consumer: joins, takes all it may (200 leases for 60 s),
        // then never receives or acks again, and keeps its connection.
        let mut dead = RawClient::connect(broker.addr).await;
        let dead_id = dead.join_group("flooded", "dead", "dead-consumer").await;
        let held = dead.receive("flooded", "dead", dead_id, 10_000, 1000).await;
        assert_eq!(held.len(), 100, "the dead consumer took every message");

        // A reader that asks for a lot and never reads the answers.
        let mut deaf = RawClient::connect(broker.addr).await;
        let mut requests = bytes::BytesMut::new();
        for id in 0..64u32 {
            let fetch = FetchRequest {
                max_wait_ms: 10_000,
                min_bytes: 1 << 20,
                max_bytes: 1 << 20,
                partitions: vec![FetchPartition {
                    topic: "flooded".into(),
                    partition: 0,
                    offset: 0,
                    max_bytes: 1 << 20,
                }],
            };
            let frame = RequestFrame {
                request_id: 100 + id,
                api_version: 0,
                request: fetch.into(),
            };
            encode_request(&frame, Limits::default(), &mut requests).expect("encode");
        }
        deaf.send_raw(&requests).await;

        let stop = Arc::new(AtomicBool::new(false));
        let flood_started = Instant::now();
        // The flood: 4 connections appending 50 KiB batches back to back.
        let flooders: Vec<_> = (0..FLOODERS)
            .map(|i| {
                let (stop, addr) = (stop.clone(), broker.addr);
                tokio::spawn(async move {
                    let mut c = RawClient::connect(addr).await;
                    let value = vec![b'f'; 1024];
                    let values: Vec<&[u8]> = (0..50).map(|_| value.as_slice()).collect();
                    let mut acks = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let ack = c.produce("flooded", (i % 2) as u32, &values).await;
                        assert_eq!(ack.error_code, ErrorCode::None, "{}", ack.error_message);
                        acks.push(Instant::now());
                    }
                    acks
                })
            })
            .collect();

        // The other group of the flooded topic: receives and acks.
        let live_a = {
            let (stop, addr) = (stop.clone(), broker.addr);
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                let id = c.join_group("flooded", "live", "live-consumer").await;
                let (mut acked, mut caught_up) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    let got = c.receive("flooded", "live", id, 200, 200).await;
                    ack(&mut c, "flooded", "live", id, &got).await;
                    let now = Instant::now();
                    if got.is_empty() {
                        caught_up.push(now);
                    }
                    acked.extend(got.iter().map(|_| now));
                }
                (acked, caught_up)
            })
        };

        // The quiet topic: one timestamped message every 20 ms, and its
        // group's consumer measuring how long each took to arrive.
        let quiet_producer = {
            let (stop, addr) = (stop.clone(), broker.addr);
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                let mut sent = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let ack = c.produce("quiet", 0, &[&stamp(origin)]).await;
                    assert_eq!(ack.error_code, ErrorCode::None, "{}", ack.error_message);
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                sent
            })
        };
        let (done_sending, sending_done) = tokio::sync::watch::channel(None::<u32>);
        let quiet_consumer = {
            let addr = broker.addr;
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                let id = c.join_group("quiet", "live", "live-consumer").await;
                let mut latencies = Vec::new();
                let deadline = Instant::now() + FLOOD + Duration::from_secs(20);
                loop {
                    if let Some(sent) = *sending_done.borrow()
                        && latencies.len() >= sent as usize
                    {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the quiet group fell behind");
                    let got = c.receive("quiet", "live", id, 100, 200).await;
                    let now = origin.elapsed();
                    for d in &got {
                        latencies.push(now.saturating_sub(stamped_at(&d.value)));
                    }
                    ack(&mut c, "quiet", "live", id, &got).await;
                }
                latencies
            })
        };

        tokio::time::sleep(FLOOD).await;
        stop.store(true, Ordering::SeqCst);
        let mut flood_acks = Vec::new();
        for f in flooders {
            flood_acks.extend(f.await.expect("flooder"));
        }
        let (live_acked, live_caught_up) = live_a.await.expect("live group");
        let sent = quiet_producer.await.expect("quiet producer");
        let _ = done_sending.send(Some(sent));
        let quiet = quiet_consumer.await.expect("quiet consumer");

        // The dead consumer still holds its leases: it really was stuck.
        let state = MessageStateRequest {
            topic: "flooded".into(),
            group: "dead".into(),
            partition: held[0].partition,
            offset: held[0].offset,
        };
        match admin.ok(state.into()).await {
            Response::MessageState(s) => assert_eq!(s.state, MessageState::InFlight),
            other => panic!("{other:?}"),
        }
        drop((dead, deaf));
        (
            flood_started,
            flood_acks,
            live_acked,
            live_caught_up,
            sent,
            quiet,
        )
    });
    let (flood_started, flood_acks, live_acked, live_caught_up, sent, mut quiet) = report;
    let seconds = FLOOD.as_secs() as usize;
    let flood_per_s = per_second(flood_started, &flood_acks, seconds);
    let live_per_s = per_second(flood_started, &live_acked, seconds);
    let caught_up_per_s = per_second(flood_started, &live_caught_up, seconds);
    quiet.sort();
    let p50 = quiet[quiet.len() / 2];
    let p99 = quiet[quiet.len() * 99 / 100];
    let max = quiet.last().copied().unwrap_or_default();
    let rss = memory(broker.pid()).unwrap_or_default();
    println!(
        "flood (fsync {fsync}): {FLOODERS} producers, 50 KiB batches, {:.0} batches/s ({:.1} MB/s), per second: {flood_per_s:?}; \
         flooded topic's live group acked per second: {live_per_s:?}, caught up {caught_up_per_s:?} times \
         (its dead group holds 100 leases; a reader never reads); \
         quiet topic: {sent} sent, {} received, latency p50 {p50:?} p99 {p99:?} max {max:?}; broker peak RSS {} KiB",
        flood_acks.len() as f64 / FLOOD.as_secs_f64(),
        flood_acks.len() as f64 * 51_200.0 / FLOOD.as_secs_f64() / 1e6,
        quiet.len(),
        rss.peak_kib,
    );
    assert_eq!(quiet.len(), sent as usize, "every quiet message arrived");
    assert!(max < Duration::from_secs(2), "a quiet message took {max:?}");
    for (second, n) in flood_per_s.iter().enumerate() {
        assert!(
            *n > 0,
            "no produce was acknowledged in second {second}: {flood_per_s:?}"
        );
    }
    for (second, n) in live_per_s.iter().enumerate().skip(1) {
        assert!(
            *n > 0 || caught_up_per_s[second] > 0,
            "the live group neither acked nor was caught up in second {second}: {live_per_s:?}"
        );
    }
    assert!(
        live_acked.len() >= 100,
        "the live group acked only {}",
        live_acked.len()
    );
}
