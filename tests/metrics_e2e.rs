//! End-to-end tests of `/metrics` against a real `pigeon-broker`: a
//! consume with every kind of redelivery (nack, lease expiry, consumer
//! gone) and two dead letters, scraped as it goes, must move the group's
//! series as the operations say; the whole output must be valid
//! Prometheus text at every scrape (checked by the strict parser of
//! `tests/support/prometheus.rs`); and deleting the group removes its
//! series.
//!
//! Waits poll the metrics with a deadline, never a fixed sleep.

use std::collections::BTreeMap;
use std::time::Duration;

use pigeon_client::protocol::*;
use pigeon_suite::prometheus::{self, Family};
use pigeon_suite::raw::RawClient;
use pigeon_suite::{Broker, http_get, runtime};

const TOPIC: &str = "jobs";
const GROUP: &str = "workers";
/// Generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// Scrapes `/metrics` and parses it strictly.
fn scrape(broker: &Broker) -> BTreeMap<String, Family> {
    let (status, body) = http_get(broker.http, "/metrics");
    assert_eq!(status, 200, "{body}");
    prometheus::parse(&body).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{body}"))
}

/// The value of the first sample named `name` (a family's, or a
/// histogram's `_count` or `_sum`) whose labels include `labels`.
fn series(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|s| s.name == name && labels.iter().all(|(n, v)| s.label(n) == Some(*v)))
        .map(|s| s.value)
}

/// The group's series `family` (0 when absent).
fn group_value(families: &BTreeMap<String, Family>, family: &str) -> f64 {
    let labels = [("topic", TOPIC), ("partition", "0"), ("group", GROUP)];
    series(families, family, &labels).unwrap_or(0.0)
}

fn redeliveries(families: &BTreeMap<String, Family>, cause: &str) -> f64 {
    let labels = [
        ("topic", TOPIC),
        ("partition", "0"),
        ("group", GROUP),
        ("cause", cause),
    ];
    series(families, "pigeon_group_redeliveries_total", &labels).unwrap_or(0.0)
}

/// Scrapes until `done` holds (or panics after [`WAIT`]); the last scrape.
fn scrape_until(
    broker: &Broker,
    what: &str,
    done: impl Fn(&BTreeMap<String, Family>) -> bool,
) -> BTreeMap<String, Family> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let families = scrape(broker);
        if done(&families) {
            return families;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn item(offset: u64, action: SettleAction) -> SettleItem {
    SettleItem {
        partition: 0,
        offset,
        attempt: 0,
        action,
        delay_ms: 0,
        reason: if action == SettleAction::Reject {
            "bad".into()
        } else {
            String::new()
        },
    }
}

async fn settle(client: &mut RawClient, consumer: u64, items: Vec<SettleItem>) {
    client.settle_ok(TOPIC, GROUP, consumer, items).await;
}

/// Receives until exactly `offsets` (with these attempts) are leased.
async fn receive_exactly(client: &mut RawClient, consumer: u64, expected: &[(u64, u32)]) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < expected.len() {
        assert!(tokio::time::Instant::now() < deadline, "got only {got:?}");
        let more = client.receive(TOPIC, GROUP, consumer, 10, 1_000).await;
        got.extend(more.iter().map(|d| (d.offset, d.attempt)));
    }
    got.sort_unstable();
    assert_eq!(got, expected);
}

#[test]
fn a_consume_with_redeliveries_and_dead_letters_moves_the_group_series() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    let rt = runtime();
    let mut first = rt.block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic(TOPIC, 1).await;
        let values: Vec<&[u8]> = vec![b"0", b"1", b"2", b"3", b"4", b"5"];
        client.produce(TOPIC, 0, &values).await;
        let settings = GroupSettings {
            ack_timeout_ms: 2_000,
            max_deliveries: 3,
            backoff_initial_ms: 10,
            backoff_max_ms: 10,
            backoff_jitter_permille: 0,
            ..GroupSettings::default()
        };
        let create = CreateGroupRequest {
            topic: TOPIC.into(),
            group: GROUP.into(),
            settings,
        };
        client.ok(create.into()).await;
        client
    });
    let families = scrape(&broker);
    assert_eq!(group_value(&families, "pigeon_group_lag_messages"), 6.0);
    assert_eq!(group_value(&families, "pigeon_group_acks_total"), 0.0);

    // Attempt 1: ack 0 and 1, nack 2, reject 3 (dead letter), leave 4 and
    // 5 to expire.
    let consumer = rt.block_on(async {
        let consumer = first.join_group(TOPIC, GROUP, "first").await;
        let all: Vec<(u64, u32)> = (0..6).map(|o| (o, 1)).collect();
        receive_exactly(&mut first, consumer, &all).await;
        let items = vec![
            item(0, SettleAction::Ack),
            item(1, SettleAction::Ack),
            item(2, SettleAction::Nack),
            item(3, SettleAction::Reject),
        ];
        settle(&mut first, consumer, items).await;
        consumer
    });
    let dlq = [("topic", "jobs.workers.dlq"), ("partition", "0")];
    let families = scrape_until(&broker, "the two lease expiries", |f| {
        redeliveries(f, "lease_expired") == 2.0
            && group_value(f, "pigeon_group_dead_lettered_total") == 1.0
            && series(f, "pigeon_log_end_offset", &dlq) == Some(1.0)
    });
    assert_eq!(group_value(&families, "pigeon_group_acks_total"), 2.0);
    assert_eq!(redeliveries(&families, "nack"), 1.0);
    assert_eq!(redeliveries(&families, "consumer_gone"), 0.0);
    assert_eq!(group_value(&families, "pigeon_group_lag_messages"), 3.0);
    // The oldest unsettled message (2) was appended before the leases
    // (2 s) expired.
    let age = group_value(&families, "pigeon_group_oldest_unacked_age_seconds");
    assert!(age >= 1.9, "oldest unacked age {age}");

    // Attempt 2 (2, 4 and 5 are all due by now): ack 4, nack 2, and the
    // connection goes with 5 leased.
    rt.block_on(async {
        receive_exactly(&mut first, consumer, &[(2, 2), (4, 2), (5, 2)]).await;
        let items = vec![item(4, SettleAction::Ack), item(2, SettleAction::Nack)];
        settle(&mut first, consumer, items).await;
    });
    let families = scrape(&broker);
    assert_eq!(
        group_value(&families, "pigeon_group_in_flight_messages"),
        1.0
    );
    drop(first);
    let families = scrape_until(&broker, "the consumer gone", |f| {
        redeliveries(f, "consumer_gone") == 1.0
    });
    assert_eq!(group_value(&families, "pigeon_group_acks_total"), 3.0);
    assert_eq!(redeliveries(&families, "nack"), 2.0);
    assert_eq!(
        group_value(&families, "pigeon_group_in_flight_messages"),
        0.0
    );

    // Attempt 3 on a new connection: 2 is nacked at max_deliveries (a dead
    // letter, not a redelivery), 5 is acked.
    let second = rt.block_on(async {
        let mut second = RawClient::connect(broker.addr).await;
        let consumer = second.join_group(TOPIC, GROUP, "second").await;
        receive_exactly(&mut second, consumer, &[(2, 3), (5, 3)]).await;
        let items = vec![item(2, SettleAction::Nack), item(5, SettleAction::Ack)];
        settle(&mut second, consumer, items).await;
        second
    });
    // A scrape reads the logs before it asks the groups: wait for both.
    let families = scrape_until(&broker, "the second dead letter", |f| {
        group_value(f, "pigeon_group_dead_lettered_total") == 2.0
            && series(f, "pigeon_log_end_offset", &dlq) == Some(2.0)
    });
    assert_eq!(group_value(&families, "pigeon_group_acks_total"), 4.0);
    assert_eq!(redeliveries(&families, "nack"), 2.0);
    assert_eq!(redeliveries(&families, "lease_expired"), 2.0);
    assert_eq!(redeliveries(&families, "consumer_gone"), 1.0);
    assert_eq!(group_value(&families, "pigeon_group_lag_messages"), 0.0);
    assert_eq!(
        group_value(&families, "pigeon_group_oldest_unacked_age_seconds"),
        0.0
    );
    assert_eq!(series(&families, "pigeon_log_end_offset", &dlq), Some(2.0));
    let records = series(
        &families,
        "pigeon_produce_records_total",
        &[("topic", "jobs.workers.dlq")],
    );
    assert_eq!(
        records,
        Some(2.0),
        "the dead letters were appended to the DLQ topic"
    );
    check_partition_families(&families);

    // Deleting the group removes its series; the topics' stay.
    drop(second);
    rt.block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        let delete = DeleteGroupRequest {
            topic: TOPIC.into(),
            group: GROUP.into(),
        };
        client.ok(delete.into()).await;
    });
    let (_, body) = http_get(broker.http, "/metrics");
    assert!(!body.contains("group=\"workers\""), "{body}");
    assert!(body.contains("pigeon_log_end_offset{topic=\"jobs\",partition=\"0\"} 6"));
}

/// The partition families of the topic: writable, and fsync and commit
/// histograms that saw the commits.
fn check_partition_families(families: &BTreeMap<String, Family>) {
    let jobs = [("topic", TOPIC), ("partition", "0")];
    assert_eq!(
        series(families, "pigeon_partition_read_only", &jobs),
        Some(0.0)
    );
    let commits = series(families, "pigeon_log_commit_batch_records_count", &jobs);
    assert_eq!(commits, Some(1.0), "one produce, one commit");
    let records = series(families, "pigeon_log_commit_batch_records_sum", &jobs);
    assert_eq!(records, Some(6.0));
    let fsyncs = series(families, "pigeon_log_fsync_seconds_count", &jobs).unwrap_or(0.0);
    assert!(fsyncs >= 1.0, "fsync=always syncs each commit: {fsyncs}");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
    ] {
        let value = families
            .get(name)
            .and_then(|f| f.samples.first())
            .map_or(-1.0, |s| s.value);
        assert!(value >= 0.0, "{name} is missing");
    }
    assert!(families["process_resident_memory_bytes"].samples[0].value > 1e6);
    // The writer pool: its core runs (at least 4), within its most, and the
    // synced commit of the produce moved the commit-size average off 0.
    let gauge = |name: &str| series(families, name, &[]).unwrap_or(-1.0);
    let threads = gauge("pigeon_writer_threads");
    assert!(threads >= 4.0, "pigeon_writer_threads {threads}");
    assert!(gauge("pigeon_writer_threads_max") >= threads);
    assert!(gauge("pigeon_writer_jobs_waiting") >= 0.0);
    let average = gauge("pigeon_writer_commit_bytes_average");
    assert!(
        average > 0.0,
        "pigeon_writer_commit_bytes_average {average}"
    );
}

#[test]
fn the_whole_output_is_valid_prometheus_text_with_a_help_line_for_every_metric() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(
        &tmp.path().join("data"),
        &["--produce-quota-bytes-per-sec", "1024"],
    );
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("a", 2).await;
        client.create_topic("b", 1).await;
        client.produce("a", 1, &[&[7u8; 2048]]).await; // over the quota: throttled
        client.fetch("a", 1, 0, 0).await;
        client.fetch("a", 5, 0, 0).await; // an error, counted
        let create = CreateGroupRequest {
            topic: "a".into(),
            group: "g".into(),
            settings: GroupSettings::default(),
        };
        client.ok(create.into()).await;
    });
    let families = scrape(&broker);
    for family in families.values() {
        assert!(
            !family.help.trim().is_empty(),
            "{} has an empty # HELP",
            family.name
        );
    }
    promtool_check(&broker);
    for expected in [
        "pigeon_produce_latency_seconds",
        "pigeon_produce_throttle_seconds",
        "pigeon_errors_total",
        "pigeon_log_fsync_seconds",
        "pigeon_append_stage_seconds",
        "pigeon_group_redeliveries_total",
        "process_open_fds",
    ] {
        assert!(families.contains_key(expected), "{expected} is missing");
    }
    let causes: Vec<&str> = families["pigeon_group_redeliveries_total"]
        .samples
        .iter()
        .filter(|s| s.label("partition") == Some("1"))
        .filter_map(|s| s.label("cause"))
        .collect();
    assert_eq!(causes, ["nack", "lease_expired", "consumer_gone"]);
}

/// Every append is timed through its four stages, and the stages of a
/// produce fit inside its request latency (they follow each other from
/// the queueing of the batch to the request task's wake-up, both inside
/// the request).
#[test]
fn each_append_is_timed_through_its_four_stages() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("staged", 2).await;
        for i in 0..5u8 {
            client
                .produce("staged", u32::from(i % 2), &[&[i; 100]])
                .await;
        }
    });
    let families = scrape(&broker);
    let stage = |name: &str, stage: &str| {
        series(&families, name, &[("stage", stage)])
            .unwrap_or_else(|| panic!("{name}{{stage={stage}}} is missing"))
    };
    let mut stages_sum = 0.0;
    for label in ["queued", "write", "fsync", "wake"] {
        let count = stage("pigeon_append_stage_seconds_count", label);
        assert_eq!(
            count, 5.0,
            "{label}: one observation per append, over both partitions"
        );
        stages_sum += stage("pigeon_append_stage_seconds_sum", label);
    }
    let fsync = stage("pigeon_append_stage_seconds_sum", "fsync");
    assert!(
        fsync > 0.0,
        "fsync=always: each commit waited for its fdatasync"
    );
    let produce =
        series(&families, "pigeon_produce_latency_seconds_sum", &[]).expect("produce latency");
    assert!(
        stages_sum <= produce + 1e-6,
        "the stages ({stages_sum} s) fit inside the produce requests ({produce} s)"
    );
}

/// `promtool check metrics` over a scrape, where Prometheus' own tool is
/// installed (it lints names and types too); a note where it is not.
fn promtool_check(broker: &Broker) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let (_, body) = http_get(broker.http, "/metrics");
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("note: promtool is not installed; only the built-in parser checked /metrics");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_parser_catches_each_broken_rule() {
    let good = "# HELP a_total As.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\n\
        # HELP h Hs.\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n";
    let families = prometheus::parse(good).expect("good");
    assert_eq!(families["a_total"].samples[0].value, 3.0);
    assert_eq!(families["h"].samples.len(), 4);
    let broken = [
        ("no help", "# TYPE g gauge\ng 1\n"),
        ("no type", "# HELP g G.\ng 1\n"),
        ("bad name", "# HELP 1g G.\n# TYPE 1g gauge\n1g 1\n"),
        ("bad label", "# HELP g G.\n# TYPE g gauge\ng{__x=\"1\"} 1\n"),
        ("unquoted", "# HELP g G.\n# TYPE g gauge\ng{x=1} 1\n"),
        (
            "bad escape",
            "# HELP g G.\n# TYPE g gauge\ng{x=\"\\t\"} 1\n",
        ),
        ("twice", "# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n"),
        (
            "interleaved",
            "# HELP g G.\n# TYPE g gauge\n# HELP f F.\n# TYPE f gauge\nf 1\ng 1\n",
        ),
        (
            "negative counter",
            "# HELP c_total C.\n# TYPE c_total counter\nc_total -1\n",
        ),
        (
            "no +Inf",
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (
            "not cumulative",
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (
            "count differs",
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        ),
        (
            "bounds go down",
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ),
        ("bad value", "# HELP g G.\n# TYPE g gauge\ng one\n"),
    ];
    for (what, text) in broken {
        assert!(prometheus::parse(text).is_err(), "{what} was accepted");
    }
}
