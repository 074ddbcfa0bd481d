//! End-to-end tests of `pigeon bench` against a real `pigeon-broker`:
//! each workload with `--json` (the figures' fields, the message count,
//! and for consume and e2e a group with nothing left to deliver), a
//! fixed-rate run, the human output, and the error when the broker is not
//! there.
//!
//! Counts are small so that each run takes seconds even on a busy
//! machine; every `pigeon` invocation is bounded by [`RUN_TIMEOUT`].

use std::time::Duration;

use pigeon_suite::Broker;
use pigeon_suite::process;
use serde_json::Value;

/// Longest a single `pigeon` invocation may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The group every bench run consumes as.
const GROUP: &str = "pigeon-bench";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn pigeon_at(addr: std::net::SocketAddr, args: &[&str]) -> Run {
    let mut command = process::pigeon_command(addr);
    command.args(args);
    let out = process::run(command, b"", RUN_TIMEOUT);
    Run {
        code: out.code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: out.stderr,
    }
}

fn start_broker() -> (tempfile::TempDir, Broker) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    (tmp, broker)
}

/// Runs `pigeon bench ARGS --json`, expects success and exactly one JSON
/// object on stdout, and returns it.
fn bench_json(broker: &Broker, args: &[&str]) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let run = pigeon_at(broker.addr, &all);
    assert_eq!(
        run.code,
        Some(0),
        "pigeon bench failed: stderr: {}\nstdout: {}",
        run.stderr,
        run.stdout
    );
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object expected: {}", run.stdout);
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]))
}

/// Checks the fields every report has, and that `messages` were counted.
fn check_report(report: &Value, workload: &str, messages: u64, value_size: u64) {
    assert_eq!(report["workload"], workload, "{report}");
    assert_eq!(report["target"], "pigeon", "{report}");
    assert_eq!(report["messages"].as_u64(), Some(messages), "{report}");
    assert_eq!(
        report["bytes"].as_u64(),
        Some(messages * value_size),
        "{report}"
    );
    let seconds = report["seconds"].as_f64().expect("seconds");
    assert!(seconds > 0.0, "{report}");
    let rate = report["msgs_per_sec"].as_f64().expect("msgs_per_sec");
    assert!(
        (rate - messages as f64 / seconds).abs() < 1e-6 * rate.max(1.0),
        "{report}"
    );
    let mb = report["mb_per_sec"].as_f64().expect("mb_per_sec");
    assert!((mb - rate * value_size as f64 / 1e6).abs() < 1e-6 * mb.max(1.0));
    let p = |name: &str| {
        report[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {report}"))
    };
    assert!(p("p50_us") <= p("p99_us"), "{report}");
    assert!(p("p99_us") <= p("p999_us"), "{report}");
    assert!(p("p999_us") <= p("max_us"), "{report}");
    assert!(p("max_us") > 0, "{report}");
}

/// The group's per-partition descriptions, from `pigeon group describe --json`.
fn describe_group(broker: &Broker, topic: &str) -> Vec<Value> {
    let run = pigeon_at(
        broker.addr,
        &["group", "describe", GROUP, "--topic", topic, "--json"],
    );
    assert_eq!(run.code, Some(0), "describe failed: {}", run.stderr);
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

/// Every partition of the group: nothing left to deliver, nothing in
/// flight, `total` messages in the log.
fn check_all_consumed(broker: &Broker, topic: &str, total: u64) {
    let partitions = describe_group(broker, topic);
    assert!(!partitions.is_empty());
    let mut log_end = 0;
    for p in &partitions {
        assert_eq!(p["lag"].as_u64(), Some(0), "{p}");
        assert_eq!(p["in_flight"].as_u64(), Some(0), "{p}");
        log_end += p["log_end"].as_u64().expect("log_end");
    }
    assert_eq!(log_end, total, "{partitions:?}");
}

/// The disk's floor, the broker's stages and its CPU time come with the
/// figures: the probe ran in the directory given (and left nothing there),
/// every append of the run shows in each of the four stages, and the
/// broker's CPU time is counted per message.
#[test]
fn bench_reports_the_fsync_floor_the_broker_stages_and_its_cpu_time() {
    let (tmp, broker) = start_broker();
    let probe_dir = tmp.path().join("probe");
    std::fs::create_dir(&probe_dir).expect("probe dir");
    let report = bench_json(
        &broker,
        &[
            "produce",
            "--messages",
            "3000",
            "--batch-bytes",
            "10000",
            "--fsync-probe-dir",
            probe_dir.to_str().expect("utf-8 path"),
            "--metrics-addr",
            &broker.http.to_string(),
            "--server-pid",
            &broker.pid().to_string(),
        ],
    );
    check_report(&report, "produce", 3000, 100);
    let floor = &report["fsync_floor"];
    assert!(floor["rounds"].as_u64().is_some_and(|r| r >= 1), "{report}");
    assert!(
        floor["p50_us"].as_u64() <= floor["p99_us"].as_u64(),
        "{report}"
    );
    assert_eq!(floor["dir"], probe_dir.display().to_string());
    let left = std::fs::read_dir(&probe_dir).expect("read_dir").count();
    assert_eq!(left, 0, "the probe's scratch file is removed");
    let stages = report["stages"].as_object().expect("stages");
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    assert_eq!(names, ["queued", "write", "fsync", "wake"], "{report}");
    // 3,000 records of ~110 bytes in batches of at most 10,000 bytes: at
    // least 33 appends, each counted once per stage.
    let appends = stages["fsync"]["count"].as_u64().expect("count");
    assert!(appends >= 33, "{report}");
    for (name, stage) in stages {
        assert_eq!(stage["count"].as_u64(), Some(appends), "{name}: {report}");
    }
    assert!(
        report["server_cpu_seconds"]
            .as_f64()
            .is_some_and(|s| s >= 0.0)
    );
    assert!(
        report["server_cpu_us_per_message"].as_f64().is_some(),
        "{report}"
    );
    assert!(report["load_average_end"].as_f64().is_some(), "{report}");
}

#[test]
fn bench_produce_json_reports_every_requested_message() {
    let (_tmp, broker) = start_broker();
    let report = bench_json(&broker, &["produce", "--messages", "2000"]);
    check_report(&report, "produce", 2000, 100);
    assert!(report["ack_p99_us"].is_null(), "{report}");
    assert_eq!(report["latency"], "publish→ack per message");
}

#[test]
fn bench_consume_json_consumes_everything_and_leaves_no_lag() {
    let (_tmp, broker) = start_broker();
    let report = bench_json(
        &broker,
        &[
            "consume",
            "bench-c",
            "--messages",
            "2000",
            "--consumers",
            "2",
            "--partitions",
            "2",
            "--max-messages",
            "100",
        ],
    );
    check_report(&report, "consume", 2000, 100);
    assert_eq!(report["consumers"].as_u64(), Some(2));
    assert_eq!(report["redeliveries"].as_u64(), Some(0));
    check_all_consumed(&broker, "bench-c", 2000);
}

#[test]
fn bench_e2e_json_delivers_everything_and_reports_both_latencies() {
    let (_tmp, broker) = start_broker();
    let report = bench_json(
        &broker,
        &["e2e", "--messages", "2000", "--value-size", "1024"],
    );
    check_report(&report, "e2e", 2000, 1024);
    for field in ["ack_p50_us", "ack_p99_us", "ack_p999_us", "ack_max_us"] {
        assert!(report[field].as_u64().is_some(), "{field} in {report}");
    }
    assert_eq!(report["latency"], "publish→deliver per message");
    check_all_consumed(&broker, "bench-e2e", 2000);
}

#[test]
fn bench_e2e_at_a_fixed_rate_takes_as_long_as_the_schedule() {
    let (_tmp, broker) = start_broker();
    let report = bench_json(
        &broker,
        &["e2e", "rated", "--messages", "2000", "--rate", "4000"],
    );
    check_report(&report, "e2e", 2000, 100);
    assert_eq!(report["rate"].as_u64(), Some(4000));
    // The last message is due 0.5 s after the first: never faster.
    let seconds = report["seconds"].as_f64().expect("seconds");
    assert!(seconds >= 0.499, "{report}");
    assert!(report["schedule_lag_p99_us"].as_u64().is_some(), "{report}");
    check_all_consumed(&broker, "rated", 2000);
}

#[test]
fn bench_runs_again_on_the_same_topic_from_scratch() {
    let (_tmp, broker) = start_broker();
    for _ in 0..2 {
        // Not a bench-* topic: the second run needs --recreate to delete it.
        let report = bench_json(
            &broker,
            &["consume", "again", "--messages", "500", "--recreate"],
        );
        check_report(&report, "consume", 500, 100);
        // The topic and the group were created afresh: 500, not 1,000.
        check_all_consumed(&broker, "again", 500);
    }
}

#[test]
fn bench_human_output_is_a_short_table() {
    let (_tmp, broker) = start_broker();
    let run = pigeon_at(broker.addr, &["bench", "produce", "--messages", "300"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!((3..=6).contains(&lines.len()), "{}", run.stdout);
    assert!(lines[0].starts_with("workload"), "{}", run.stdout);
    assert!(run.stdout.contains("300 messages in"), "{}", run.stdout);
    assert!(run.stdout.contains("p99"), "{}", run.stdout);
    // stderr is not a terminal: no progress bar drawn.
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
}

#[test]
fn bench_against_an_unreachable_broker_fails_with_one_sentence() {
    // A port nothing listens on: bind, note the port, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let run = pigeon_at(addr, &["bench", "produce", "--messages", "10", "--json"]);
    assert_eq!(run.code, Some(1), "stdout: {}", run.stdout);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("pigeon: cannot reach the broker at {addr}")),
        "{stderr}"
    );
}

#[test]
fn bench_refuses_bad_arguments_as_usage_errors() {
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
    for args in [
        &["bench", "produce", "--value-size", "4"][..],
        &["bench", "e2e", "--rate", "0"],
        &[
            "bench",
            "produce",
            "--messages",
            "10",
            "--duration-secs",
            "1",
        ],
    ] {
        let run = pigeon_at(addr, args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
    }
    let run = pigeon_at(addr, &["bench", "consume", "--duration-secs", "1"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("message count"), "{}", run.stderr);
}

#[test]
fn bench_refuses_to_delete_an_existing_topic_that_is_not_a_bench_topic() {
    let (_tmp, broker) = start_broker();
    let created = pigeon_at(broker.addr, &["topic", "create", "orders"]);
    assert_eq!(created.code, Some(0), "stderr: {}", created.stderr);
    let mut produce = process::pigeon_command(broker.addr);
    produce.args(["produce", "orders"]);
    let out = process::run(produce, b"an order\n", RUN_TIMEOUT);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);

    let refused = pigeon_at(
        broker.addr,
        &["bench", "produce", "orders", "--messages", "10"],
    );
    assert_eq!(refused.code, Some(1), "stdout: {}", refused.stdout);
    assert!(refused.stderr.contains("--recreate"), "{}", refused.stderr);
    let described = pigeon_at(broker.addr, &["topic", "describe", "orders", "--json"]);
    assert!(
        described.stdout.contains("\"end_offset\":1"),
        "the topic and its message are untouched: {}",
        described.stdout
    );

    let recreated = pigeon_at(
        broker.addr,
        &[
            "bench",
            "produce",
            "orders",
            "--messages",
            "10",
            "--recreate",
        ],
    );
    assert_eq!(recreated.code, Some(0), "stderr: {}", recreated.stderr);
}
