//! The byte-rate quotas on the Redis listener, end to end against the real
//! `pigeon-broker`:
//!
//! - pipelined `XADD`s are held near `produce_quota_bytes_per_sec`
//!   (counted in whole RESP requests), while another connection's
//!   commands are not slowed;
//! - `XRANGE` reads are held near `fetch_quota_bytes_per_sec` (counted in
//!   whole replies).
//!
//! Rates are measured after the bucket's saved-up second, with generous
//! bounds (the machine is shared and noisy); without the quota each runs
//! many times faster than the bound.

use std::time::{Duration, Instant};

use pigeon_suite::resp::{RespClient, Value, encode};
use pigeon_suite::{Broker, metric};

const QUOTA: usize = 32 * 1024;

fn start(flag: &str) -> (tempfile::TempDir, Broker) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[flag, &QUOTA.to_string()]);
    (tmp, broker)
}

#[test]
fn pipelined_appends_are_held_near_the_produce_quota_and_another_connection_is_not() {
    let (_tmp, broker) = start("--produce-quota-bytes-per-sec");
    let addr = broker.resp.expect("the Redis listener");
    let mut heavy = RespClient::connect(addr);
    let mut light = RespClient::connect(addr);
    let value = vec![b'v'; 1024];
    let request = encode(&[b"XADD", b"orders", b"*", b"v", &value]);
    let pipeline = 16;
    // The first second's worth goes at once (the bucket starts full); the
    // rate is measured over the next few seconds.
    let started = Instant::now();
    let mut sent = 0usize;
    let mut window: Option<(Instant, usize)> = None;
    let mut slowest_light = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(5) {
        for _ in 0..pipeline {
            heavy.send_raw(&request);
        }
        for _ in 0..pipeline {
            let reply = heavy.read_reply().expect("an XADD reply");
            assert!(matches!(reply, Value::Bulk(_)), "{reply:?}");
        }
        sent += pipeline * request.len();
        if window.is_none() && started.elapsed() >= Duration::from_secs(1) {
            window = Some((Instant::now(), sent));
        }
        let asked = Instant::now();
        assert_eq!(light.cmd(&["PING"]), Value::Status("PONG".into()));
        slowest_light = slowest_light.max(asked.elapsed());
    }
    let (from, sent_before) = window.expect("a measuring window");
    let rate = (sent - sent_before) as f64 / from.elapsed().as_secs_f64();
    eprintln!(
        "XADD {rate:.0} B/s of requests at a quota of {QUOTA} B/s; slowest PING of the other connection {slowest_light:?}"
    );
    assert!(
        rate <= 2.0 * QUOTA as f64,
        "appends ran at {rate:.0} B/s, over twice the quota of {QUOTA} B/s"
    );
    assert!(
        rate >= 0.3 * QUOTA as f64,
        "appends ran at {rate:.0} B/s, far below the quota of {QUOTA} B/s"
    );
    assert!(
        slowest_light < Duration::from_secs(2),
        "another connection waited {slowest_light:?} for PING"
    );
    assert!(metric(broker.http, "pigeon_produce_throttled_total") > 0.0);
}

#[test]
fn range_reads_are_held_near_the_fetch_quota() {
    let (_tmp, broker) = start("--fetch-quota-bytes-per-sec");
    let addr = broker.resp.expect("the Redis listener");
    let mut client = RespClient::connect(addr);
    let value = "v".repeat(1024);
    for _ in 0..160 {
        let reply = client.cmd(&["XADD", "orders", "*", "v", &value]);
        assert!(matches!(reply, Value::Bulk(_)), "{reply:?}");
    }
    // Page through the stream with XRANGE, 8 entries (about 8.5 KiB of
    // reply) at a time, counting the reply bytes; measured after the
    // first second's worth.
    let started = Instant::now();
    let mut start = "-".to_owned();
    let (mut entries, mut bytes) = (0usize, 0usize);
    let mut window: Option<(Instant, usize)> = None;
    loop {
        let reply = client.cmd(&["XRANGE", "orders", &start, "+", "COUNT", "8"]);
        let page = reply.items().to_vec();
        if page.is_empty() {
            break;
        }
        entries += page.len();
        // Each entry: its ID and one 1 KiB field value, about 1,060 bytes
        // of reply.
        bytes += page.len() * 1060;
        let last = page
            .last()
            .and_then(|e| e.items().first())
            .and_then(Value::text);
        start = format!("({}", last.expect("an entry ID"));
        if window.is_none() && bytes >= QUOTA {
            window = Some((Instant::now(), bytes));
        }
    }
    assert_eq!(entries, 160);
    let (from, bytes_before) = window.expect("a measuring window");
    let rate = (bytes - bytes_before) as f64 / from.elapsed().as_secs_f64();
    eprintln!(
        "XRANGE {rate:.0} B/s of replies at a quota of {QUOTA} B/s, {entries} entries in {:?}",
        started.elapsed()
    );
    assert!(
        rate <= 2.0 * QUOTA as f64,
        "reads ran at {rate:.0} B/s, over twice the quota of {QUOTA} B/s"
    );
    assert!(metric(broker.http, "pigeon_fetch_throttled_total") > 0.0);
}
