//! End-to-end tests of the `pigeon` command line against a real
//! `pigeon-broker` over loopback: topic lifecycle, produce from stdin, replay
//! with every start point, following, the `--json` format and its base64
//! marker, error messages and exit codes, and the README's usage flow.
//!
//! Every `pigeon` run is bounded by [`RUN_TIMEOUT`]; waiting for a
//! condition polls with a deadline, never a fixed sleep.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pigeon_suite::Broker;
use pigeon_suite::process;

/// Longest a single `pigeon` invocation may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The fields of a `read --json` line whose key, value and headers are text.
const RECORD_FIELDS: [&str; 7] = [
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "value",
    "headers",
];

/// What one `pigeon` run did.
struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    took: Duration,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    fn lines(&self) -> Vec<String> {
        self.stdout_text().lines().map(str::to_string).collect()
    }

    fn json_lines(&self) -> Vec<Json> {
        self.lines().iter().map(|l| json::parse(l)).collect()
    }

    /// Asserts exit code 0 and an empty stderr.
    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "pigeon failed: stderr: {}\nstdout: {}",
            self.stderr,
            String::from_utf8_lossy(&self.stdout)
        );
        assert!(self.stderr.is_empty(), "stderr: {}", self.stderr);
        self
    }

    /// Asserts a runtime failure: exit 1 and one `pigeon: ` line on stderr.
    fn fails(self) -> Run {
        assert_eq!(self.code, Some(1), "stderr: {}", self.stderr);
        assert!(
            self.stderr.starts_with("pigeon: "),
            "stderr: {}",
            self.stderr
        );
        assert_eq!(self.stderr.trim_end().lines().count(), 1, "{}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

fn pigeon_bin() -> PathBuf {
    pigeon_suite::binary("pigeon")
}

/// `pigeon --broker ADDR ARGS` with `stdin`, bounded by [`RUN_TIMEOUT`].
fn pigeon(broker: &Broker, args: &[&str], stdin: &[u8]) -> Run {
    let mut command = process::pigeon_command(broker.addr);
    command.args(args);
    run(command, stdin)
}

/// Runs `command` to completion with `stdin`, killing it past the timeout.
fn run(command: Command, stdin: &[u8]) -> Run {
    let out = process::run(command, stdin, RUN_TIMEOUT);
    Run {
        code: out.code,
        stdout: out.stdout,
        stderr: out.stderr,
        took: out.took,
    }
}

fn start_broker() -> (tempfile::TempDir, Broker) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    (tmp, broker)
}

fn create_topic(broker: &Broker, topic: &str, partitions: u32) {
    pigeon(
        broker,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
        b"",
    )
    .ok();
}

/// `produce --json`: the (partition, offset, timestamp) of each line.
fn produce_json(broker: &Broker, args: &[&str], stdin: &[u8]) -> Vec<(u64, u64, i64)> {
    let mut all = vec!["produce"];
    all.extend_from_slice(args);
    all.push("--json");
    pigeon(broker, &all, stdin)
        .ok()
        .json_lines()
        .iter()
        .map(|line| {
            assert_eq!(
                line.keys(),
                ["topic", "partition", "offset", "timestamp"],
                "produce --json fields"
            );
            (
                line.get("partition").as_u64(),
                line.get("offset").as_u64(),
                line.get("timestamp").as_i64(),
            )
        })
        .collect()
}

#[test]
fn topic_lifecycle_through_the_cli() {
    let (_tmp, broker) = start_broker();
    let created = pigeon(
        &broker,
        &["topic", "create", "orders", "--partitions", "3"],
        b"",
    )
    .ok();
    assert!(
        created.stdout_text().contains("orders"),
        "{}",
        created.stdout_text()
    );
    pigeon(
        &broker,
        &[
            "topic",
            "create",
            "audit",
            "--retention-ms",
            "60000",
            "--retention-bytes",
            "1048576",
        ],
        b"",
    )
    .ok();

    let again = pigeon(&broker, &["topic", "create", "orders"], b"").fails();
    assert!(again.stderr.contains("orders"), "{}", again.stderr);

    let list = pigeon(&broker, &["topic", "list"], b"").ok().stdout_text();
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().eq(["orders", "3"])),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().eq(["audit", "1"])),
        "{list}"
    );
    let listed = pigeon(&broker, &["topic", "list", "--json"], b"")
        .ok()
        .json_lines();
    let names: BTreeSet<(String, u64)> = listed
        .iter()
        .map(|t| {
            (
                t.get("topic").as_str().to_string(),
                t.get("partitions").as_u64(),
            )
        })
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([("audit".to_string(), 1), ("orders".to_string(), 3)])
    );

    pigeon(
        &broker,
        &["produce", "orders", "--partition", "1"],
        b"a\nb\n",
    )
    .ok();
    let described = pigeon(&broker, &["topic", "describe", "orders"], b"")
        .ok()
        .stdout_text();
    let rows: Vec<Vec<&str>> = described
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.len() == 5 && cells[0].parse::<u32>().is_ok())
        .collect();
    assert_eq!(rows.len(), 3, "one row per partition:\n{described}");
    assert_eq!(
        &rows[1][..3],
        ["1", "0", "2"],
        "partition, start, end:\n{described}"
    );
    assert_ne!(rows[1][3], "0", "partition 1 has bytes:\n{described}");
    let as_json = pigeon(&broker, &["topic", "describe", "audit", "--json"], b"")
        .ok()
        .json_lines();
    assert_eq!(as_json.len(), 1);
    assert_eq!(as_json[0].get("retention_ms").as_u64(), 60000);
    assert_eq!(as_json[0].get("end_offset").as_u64(), 0);

    pigeon(&broker, &["topic", "delete", "orders"], b"").ok();
    let gone = pigeon(&broker, &["topic", "describe", "orders"], b"").fails();
    assert!(gone.stderr.contains("orders"), "{}", gone.stderr);
    let list = pigeon(&broker, &["topic", "list"], b"").ok().stdout_text();
    assert!(!list.contains("orders"), "{list}");
}

#[test]
fn produce_prints_a_partition_and_offset_per_line_in_input_order() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 1);
    let run = pigeon(&broker, &["produce", "t"], b"one\ntwo\nthree\n").ok();
    assert_eq!(
        run.lines(),
        [
            "partition 0 offset 0",
            "partition 0 offset 1",
            "partition 0 offset 2"
        ]
    );
    let stored = produce_json(&broker, &["t"], b"four\nfive");
    assert_eq!(
        stored.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        [(0, 3), (0, 4)]
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!(
        (now - 60_000..=now).contains(&stored[0].2),
        "timestamp {} is ms since the epoch",
        stored[0].2
    );
}

#[test]
fn produce_spreads_lines_over_partitions_and_keeps_input_order() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "big", 3);
    let input: String = (0..20_000).map(|i| format!("message {i}\n")).collect();
    let stored = produce_json(&broker, &["big"], input.as_bytes());
    assert_eq!(stored.len(), 20_000);
    let partitions: BTreeSet<u64> = stored.iter().map(|s| s.0).collect();
    assert_eq!(
        partitions,
        BTreeSet::from([0, 1, 2]),
        "round robin without a key"
    );
    // Each output line describes its input line: read back by position.
    let records = pigeon(&broker, &["read", "big", "--json"], b"")
        .ok()
        .json_lines();
    assert_eq!(records.len(), 20_000);
    for (i, &(partition, offset, _)) in stored.iter().enumerate().step_by(997) {
        let found = records
            .iter()
            .find(|r| {
                r.get("partition").as_u64() == partition && r.get("offset").as_u64() == offset
            })
            .expect("stored record is read back");
        assert_eq!(found.get("value").as_str(), format!("message {i}"));
    }
}

#[test]
fn read_json_returns_the_lines_byte_for_byte_with_the_exact_field_set() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 1);
    let lines = [
        "plain",
        "",
        "  spaces  ",
        "tab\there",
        "quote \" and \\ backslash",
        "ünïcødé ✓",
        "last without newline",
    ];
    let stdin = lines.join("\n");
    pigeon(&broker, &["produce", "t"], stdin.as_bytes()).ok();
    let records = pigeon(&broker, &["read", "t", "--json"], b"")
        .ok()
        .json_lines();
    assert_eq!(records.len(), lines.len());
    for (i, (record, line)) in records.iter().zip(lines).enumerate() {
        assert_eq!(
            record.keys(),
            RECORD_FIELDS,
            "exactly the documented fields"
        );
        assert_eq!(record.get("topic").as_str(), "t");
        assert_eq!(record.get("partition").as_u64(), 0);
        assert_eq!(record.get("offset").as_u64(), i as u64);
        assert!(record.get("timestamp").as_i64() > 1_600_000_000_000);
        assert_eq!(record.get("key"), Json::NULL);
        assert_eq!(record.get("value").as_str(), line);
        assert_eq!(record.get("headers"), Json(serde_json::json!({})));
    }
}

#[test]
fn key_and_headers_round_trip() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 4);
    let args = [
        "produce",
        "t",
        "--key",
        "order-7",
        "--header",
        "trace=abc=def",
        "--header",
        "origin=cli",
        "--header",
        "trace=second",
        "--header",
        "empty=",
        "--producer",
        "e2e-producer",
    ];
    let run = pigeon(&broker, &args, b"v1\nv2\n").ok();
    let partitions: BTreeSet<String> = run
        .lines()
        .iter()
        .map(|l| l.split(' ').nth(1).expect("partition").to_string())
        .collect();
    assert_eq!(
        partitions.len(),
        1,
        "one key, one partition: {:?}",
        run.lines()
    );
    let records = pigeon(&broker, &["read", "t", "--json"], b"")
        .ok()
        .json_lines();
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(record.keys(), RECORD_FIELDS);
        assert_eq!(record.get("key").as_str(), "order-7");
        let headers = record.get("headers");
        assert_eq!(
            headers.keys(),
            ["trace", "origin", "empty"],
            "first-seen order"
        );
        assert_eq!(
            headers.get("trace"),
            Json(serde_json::json!(["abc=def", "second"]))
        );
        assert_eq!(headers.get("origin").as_str(), "cli");
        assert_eq!(headers.get("empty").as_str(), "");
    }
    let human = pigeon(&broker, &["read", "t"], b"").ok().lines();
    assert!(human[0].contains(" key=order-7 "), "{}", human[0]);
    assert!(human[0].ends_with(" v1"), "{}", human[0]);
}

#[test]
fn read_selects_partition_start_offset_and_max() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 2);
    let input: String = (0..10).map(|i| format!("p0-{i}\n")).collect();
    pigeon(
        &broker,
        &["produce", "t", "--partition", "0"],
        input.as_bytes(),
    )
    .ok();
    let input: String = (0..5).map(|i| format!("p1-{i}\n")).collect();
    pigeon(
        &broker,
        &["produce", "t", "--partition", "1"],
        input.as_bytes(),
    )
    .ok();

    let values = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["read", "t", "--json"];
        all.extend_from_slice(args);
        pigeon(&broker, &all, b"")
            .ok()
            .json_lines()
            .iter()
            .map(|r| r.get("value").as_str().to_string())
            .collect()
    };
    let everything = values(&[]);
    assert_eq!(everything.len(), 15);
    assert_eq!(
        everything[0], "p0-0",
        "partitions in order when not following"
    );
    assert_eq!(everything[10], "p1-0");
    assert_eq!(
        values(&["--partition", "1"]),
        ["p1-0", "p1-1", "p1-2", "p1-3", "p1-4"]
    );
    assert_eq!(
        values(&["--partition", "0", "--from-offset", "7"]),
        ["p0-7", "p0-8", "p0-9"]
    );
    assert_eq!(
        values(&["--from-offset", "3", "--max", "9"]),
        [
            "p0-3", "p0-4", "p0-5", "p0-6", "p0-7", "p0-8", "p0-9", "p1-3", "p1-4"
        ]
    );
    assert_eq!(
        values(&["--partition", "1", "--max", "2"]),
        ["p1-0", "p1-1"]
    );
    assert!(
        values(&["--from-offset", "10"]).is_empty(),
        "past the end: nothing, exit 0"
    );

    let missing = pigeon(&broker, &["read", "t", "--partition", "2"], b"").fails();
    assert!(missing.stderr.contains("partition 2"), "{}", missing.stderr);
}

#[test]
fn read_from_time_starts_at_the_first_record_at_or_after_it() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 1);
    let before = produce_json(&broker, &["t"], b"old-1\nold-2\n");
    let last_old = before.iter().map(|s| s.2).max().expect("timestamps");
    // Wait (bounded) until the clock has moved past the old records.
    pigeon_suite::wait_until(Duration::from_secs(5), "the clock to tick", || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
            > last_old + 1
    });
    let after = produce_json(&broker, &["t"], b"new-1\nnew-2\n");
    let first_new = after[0].2;
    assert!(
        first_new > last_old,
        "append times increase: {last_old} then {first_new}"
    );

    let read_from = |time: &str| -> Vec<String> {
        pigeon(&broker, &["read", "t", "--json", "--from-time", time], b"")
            .ok()
            .json_lines()
            .iter()
            .map(|r| r.get("value").as_str().to_string())
            .collect()
    };
    assert_eq!(read_from(&rfc3339(first_new)), ["new-1", "new-2"]);
    assert_eq!(
        read_from(&rfc3339(before[0].2)),
        ["old-1", "old-2", "new-1", "new-2"]
    );
    assert_eq!(
        read_from("2000-01-01T00:00:00Z"),
        ["old-1", "old-2", "new-1", "new-2"]
    );
    assert!(read_from(&rfc3339(after[1].2 + 60_000)).is_empty());

    // The human format prints the same instant.
    let human = pigeon(
        &broker,
        &["read", "t", "--from-offset", "2", "--max", "1"],
        b"",
    )
    .ok()
    .lines();
    assert_eq!(human.len(), 1);
    assert_eq!(
        human[0].split(' ').take(2).collect::<Vec<_>>(),
        ["t/0@2", rfc3339(first_new).as_str()]
    );
}

#[test]
fn follow_prints_a_record_produced_after_it_started() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 2);
    pigeon(&broker, &["produce", "t", "--partition", "0"], b"before\n").ok();
    let mut child = Command::new(pigeon_bin())
        .args([
            "--broker",
            &broker.addr.to_string(),
            "read",
            "t",
            "--follow",
            "--json",
        ])
        .env_remove("PIGEON_BROKER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pigeon read --follow");
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = |what: &str| -> Json {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line from read --follow: {what}"));
        json::parse(&line)
    };
    assert_eq!(
        next_line("the existing record").get("value").as_str(),
        "before"
    );
    pigeon(&broker, &["produce", "t", "--partition", "1"], b"after\n").ok();
    let record = next_line("the new record");
    assert_eq!(record.get("value").as_str(), "after");
    assert_eq!(record.get("partition").as_u64(), 1);
    assert!(
        child.try_wait().expect("status").is_none(),
        "still following after the log end"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn follow_with_max_exits_after_n_records() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 1);
    pigeon(&broker, &["produce", "t"], b"a\nb\nc\n").ok();
    let run = pigeon(&broker, &["read", "t", "--follow", "--max", "2"], b"").ok();
    assert_eq!(run.lines().len(), 2, "{:?}", run.lines());
}

#[test]
fn binary_values_come_out_base64_with_a_marker() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 1);
    pigeon(&broker, &["produce", "t"], b"\xff\x00\xfe\ntext\n").ok();
    let records = pigeon(&broker, &["read", "t", "--json"], b"")
        .ok()
        .json_lines();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0].keys(),
        [
            "topic",
            "partition",
            "offset",
            "timestamp",
            "key",
            "value",
            "value_encoding",
            "headers"
        ]
    );
    assert_eq!(records[0].get("value").as_str(), "/wD+");
    assert_eq!(records[0].get("value_encoding").as_str(), "base64");
    assert_eq!(
        records[1].keys(),
        RECORD_FIELDS,
        "text values carry no marker"
    );
    let human = pigeon(&broker, &["read", "t"], b"").ok().lines();
    assert!(human[0].ends_with(" base64:/wD+"), "{}", human[0]);
}

#[test]
fn an_unknown_topic_is_exit_1_with_a_message_naming_it() {
    let (_tmp, broker) = start_broker();
    for args in [
        &["read", "nope"][..],
        &["read", "nope", "--follow"],
        &["produce", "nope"],
        &["topic", "describe", "nope"],
        &["topic", "delete", "nope"],
    ] {
        let run = pigeon(&broker, args, b"x\n").fails();
        assert!(run.stderr.contains("nope"), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_missing_broker_is_exit_1_within_seconds_naming_the_address() {
    // Take a free port and release it: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    for args in [
        &["topic", "list"][..],
        &["produce", "t"],
        &["read", "t", "--follow"],
    ] {
        let mut command = Command::new(pigeon_bin());
        command
            .arg("--broker")
            .arg(&addr)
            .args(args)
            .env_remove("PIGEON_BROKER");
        let run = run(command, b"x\n").fails();
        assert!(
            run.took < Duration::from_secs(10),
            "{args:?} took {:?}",
            run.took
        );
        assert!(
            run.stderr
                .contains(&format!("cannot reach the broker at {addr}")),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("PIGEON_BROKER"), "{}", run.stderr);
    }
    // The address may come from the environment.
    let mut command = Command::new(pigeon_bin());
    command.args(["topic", "list"]).env("PIGEON_BROKER", &addr);
    let from_env = run(command, b"").fails();
    assert!(from_env.stderr.contains(&addr), "{}", from_env.stderr);
}

#[test]
fn usage_errors_are_exit_2() {
    let (_tmp, broker) = start_broker();
    create_topic(&broker, "t", 1);
    for args in [
        &["produce", "t", "--header", "no-equals-sign"][..],
        &["produce", "t", "--header", "=value"],
        &[
            "read",
            "t",
            "--from-offset",
            "1",
            "--from-time",
            "2026-11-23T10:00:00Z",
        ],
        &["read", "t", "--from-time", "yesterday"],
        &["topic", "create", "x", "--partitions", "0"],
        &["frobnicate"],
    ] {
        let run = pigeon(&broker, args, b"x\n");
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
    let records = pigeon(&broker, &["read", "t"], b"").ok();
    assert!(records.stdout.is_empty(), "a usage error publishes nothing");
}

#[test]
fn the_readme_flow_publishes_from_a_shell_pipe_and_replays_from_an_offset() {
    let (_tmp, broker) = start_broker();
    let bin_dir = pigeon_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = r#"
        set -e
        pigeon topic create orders --partitions 1
        printf 'order 1 created\norder 2 created\norder 1 shipped\n' | pigeon produce orders
        seq 1 3 | sed 's/^/event /' | pigeon produce orders
        echo '--- replay'
        pigeon read orders --from-offset 2
    "#;
    let mut command = Command::new("sh");
    command
        .args(["-c", script])
        .env("PATH", path)
        .env("PIGEON_BROKER", broker.addr.to_string());
    let out = run(command, b"").ok().stdout_text();
    let (published, replay) = out.split_once("--- replay\n").expect("replay marker");
    assert!(published.contains("created topic orders"), "{published}");
    assert_eq!(
        published
            .lines()
            .filter(|l| l.starts_with("partition 0 offset"))
            .count(),
        6,
        "{published}"
    );
    assert!(published.contains("partition 0 offset 5"), "{published}");
    let replayed: Vec<&str> = replay
        .lines()
        .map(|l| {
            l.splitn(3, ' ')
                .nth(2)
                .expect("value after offset and time")
        })
        .collect();
    assert_eq!(
        replayed,
        ["order 1 shipped", "event 1", "event 2", "event 3"]
    );
    assert!(replay.starts_with("orders/0@2 "), "{replay}");
}

/// `ms` since the epoch as RFC 3339 UTC with milliseconds.
fn rfc3339(ms: i64) -> String {
    let at = jiff::Timestamp::from_millisecond(ms).expect("timestamp in range");
    format!("{at:.3}")
}

#[test]
fn the_test_rfc3339_formatter_is_right() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_795_428_000_123), "2026-11-23T10:00:00.123Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
}

use json::Json;

/// `--json` lines, parsed with serde_json (objects keep their field order),
/// behind accessors that fail the test with a clear message.
mod json {
    /// A parsed JSON value.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Json(pub serde_json::Value);

    impl Json {
        /// JSON `null`.
        pub const NULL: Json = Json(serde_json::Value::Null);

        /// The field `name` of an object.
        pub fn get(&self, name: &str) -> Json {
            let object = self
                .0
                .as_object()
                .unwrap_or_else(|| panic!("{} is not an object", self.0));
            Json(
                object
                    .get(name)
                    .unwrap_or_else(|| panic!("no field {name} in {}", self.0))
                    .clone(),
            )
        }

        /// The field names of an object, in order.
        pub fn keys(&self) -> Vec<String> {
            let object = self
                .0
                .as_object()
                .unwrap_or_else(|| panic!("{} is not an object", self.0));
            object.keys().cloned().collect()
        }

        /// A string's text.
        pub fn as_str(&self) -> &str {
            self.0
                .as_str()
                .unwrap_or_else(|| panic!("{} is not a string", self.0))
        }

        /// A non-negative integer.
        pub fn as_u64(&self) -> u64 {
            self.0
                .as_u64()
                .unwrap_or_else(|| panic!("{} is not a u64", self.0))
        }

        /// An integer.
        pub fn as_i64(&self) -> i64 {
            self.0
                .as_i64()
                .unwrap_or_else(|| panic!("{} is not an i64", self.0))
        }
    }

    /// Parses one line of `--json` output.
    pub fn parse(text: &str) -> Json {
        Json(serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }
}
