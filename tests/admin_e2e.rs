//! End-to-end tests of the broker-wide administration through the real
//! binaries: `pigeon group list`, `pigeon topic alter` (retention takes
//! effect at once and survives a restart), `pigeon broker describe`, the
//! confirmation of `topic delete` and `group delete` on a terminal (a
//! pseudo-terminal here) and not in scripts, and the broker's audit line
//! of each admin operation with the client's address.
//!
//! Every `pigeon` run is bounded; waits poll with a deadline.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use pigeon_suite::{Broker, process};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `pigeon --broker ADDR ARGS` with `stdin` piped (not a terminal).
fn pigeon(broker: &Broker, args: &[&str], stdin: &[u8]) -> process::Output {
    let mut command = process::pigeon_command(broker.addr);
    command.args(args);
    process::run(command, stdin, RUN_TIMEOUT)
}

/// [`pigeon`], asserting success; its stdout.
fn ok(broker: &Broker, args: &[&str]) -> String {
    let out = pigeon(broker, args, b"");
    assert_eq!(out.code, Some(0), "pigeon {args:?}: {}", out.stderr);
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn start() -> (tempfile::TempDir, Broker) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &["--segment-bytes", "4096"]);
    (tmp, broker)
}

#[test]
fn group_list_shows_every_group_or_one_topic_s_with_its_lag() {
    let (_tmp, broker) = start();
    ok(&broker, &["topic", "create", "orders", "--partitions", "2"]);
    ok(&broker, &["topic", "create", "audit"]);
    let lines = b"a\nb\nc\nd\ne\n";
    let produced = pigeon(&broker, &["produce", "orders"], lines);
    assert_eq!(produced.code, Some(0), "{}", produced.stderr);
    for (group, topic) in [
        ("billing", "orders"),
        ("shipping", "orders"),
        ("trail", "audit"),
    ] {
        ok(&broker, &["group", "create", group, "--topic", topic]);
    }
    ok(
        &broker,
        &["group", "pause", "shipping", "--topic", "orders"],
    );
    let all = json_lines(&ok(&broker, &["group", "list", "--json"]));
    let rows: Vec<(String, String, bool, u64)> = all
        .iter()
        .map(|g| {
            (
                g["topic"].as_str().unwrap_or_default().to_owned(),
                g["group"].as_str().unwrap_or_default().to_owned(),
                g["paused"].as_bool().unwrap_or_default(),
                g["lag"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    let expected = [
        ("audit", "trail", false, 0),
        ("orders", "billing", false, 5),
        ("orders", "shipping", true, 5),
    ]
    .map(|(t, g, p, l)| (t.to_owned(), g.to_owned(), p, l));
    assert_eq!(rows, expected);
    assert_eq!(all[1]["partitions"], 2);

    let of_orders = ok(&broker, &["group", "list", "--topic", "orders"]);
    let lines: Vec<&str> = of_orders.lines().collect();
    assert_eq!(lines.len(), 3, "{of_orders}");
    assert!(
        lines[0].starts_with("TOPIC") && lines[0].contains("LAG"),
        "{of_orders}"
    );
    assert!(
        lines[1].contains("billing") && lines[2].contains("paused"),
        "{of_orders}"
    );

    let missing = pigeon(&broker, &["group", "list", "--topic", "nope"], b"");
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("topic nope does not exist"),
        "{}",
        missing.stderr
    );
}

/// `topic describe --json` of partition 0: (start offset, segments, retention_bytes).
fn partition_zero(broker: &Broker, topic: &str) -> (u64, u64, Value) {
    let described = json_lines(&ok(broker, &["topic", "describe", topic, "--json"]));
    let p = &described[0];
    (
        p["start_offset"].as_u64().unwrap_or(0),
        p["segments"].as_u64().unwrap_or(0),
        p["retention_bytes"].clone(),
    )
}

#[test]
fn topic_alter_deletes_old_segments_at_once_and_the_change_survives_a_restart() {
    let (_tmp, mut broker) = start();
    ok(&broker, &["topic", "create", "logs"]);
    // 4 KiB segments: 200 lines of 100 bytes, produced one batch per line
    // run, fill several.
    let line = format!("{}\n", "x".repeat(99));
    for _ in 0..4 {
        let input = line.repeat(50);
        let out = pigeon(&broker, &["produce", "logs"], input.as_bytes());
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let (start, segments, retention) = partition_zero(&broker, "logs");
    assert_eq!((start, retention), (0, Value::Null));
    assert!(segments >= 3, "{segments} segments");

    let said = ok(
        &broker,
        &["topic", "alter", "logs", "--retention-bytes", "5000"],
    );
    assert!(said.contains("by size 5000 bytes per partition"), "{said}");
    assert!(!said.contains("; 0 old segments deleted"), "{said}");
    let (start, after, retention) = partition_zero(&broker, "logs");
    assert!(start > 0, "old segments are gone when the command returns");
    assert!(after < segments, "{after} of {segments} segments left");
    assert_eq!(retention, 5000);

    // Kept across a restart; by time too.
    broker.restart_after_clean_stop();
    let (start_again, _, retention) = partition_zero(&broker, "logs");
    assert_eq!((start_again, retention), (start, Value::from(5000)));
    let said = ok(
        &broker,
        &[
            "topic",
            "alter",
            "logs",
            "--retention-ms",
            "1",
            "--retention-bytes",
            "default",
        ],
    );
    assert!(
        said.contains("retention by time 1 ms, by size unlimited"),
        "{said}"
    );
    let (_, left, retention) = partition_zero(&broker, "logs");
    assert_eq!(
        left, 1,
        "every sealed segment is older than 1 ms: only the active one stays"
    );
    assert_eq!(retention, Value::Null, "back to the broker default");

    let nothing = pigeon(&broker, &["topic", "alter", "logs"], b"");
    assert_eq!(nothing.code, Some(2), "a usage error: nothing to change");
    let bad = pigeon(
        &broker,
        &["topic", "alter", "logs", "--retention-ms", "soon"],
        b"",
    );
    assert_eq!(bad.code, Some(2));
    let missing = pigeon(
        &broker,
        &["topic", "alter", "nope", "--retention-ms", "5"],
        b"",
    );
    assert_eq!(missing.code, Some(1));
}

#[test]
fn broker_describe_shows_version_uptime_usage_and_settings() {
    let (_tmp, broker) = start();
    ok(&broker, &["topic", "create", "t"]);
    let described = json_lines(&ok(&broker, &["broker", "describe", "--json"]));
    let d = &described[0];
    assert!(
        d["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("pigeon-broker ")),
        "{d}"
    );
    assert!(d["uptime_ms"].as_u64().is_some(), "{d}");
    let data_dir = broker.data_dir.canonicalize().expect("data dir");
    let shown = std::path::Path::new(d["data_dir"].as_str().unwrap_or_default());
    assert_eq!(shown.canonicalize().ok(), Some(data_dir), "{d}");
    assert!(d["data_dir_bytes"].as_u64().is_some_and(|b| b > 0), "{d}");
    assert_eq!(
        (d["topics"].as_u64(), d["groups"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(d["config"]["segment_bytes"], "4096");
    assert_eq!(d["config"]["fsync"], "always");
    let human = ok(&broker, &["broker", "describe"]);
    assert!(human.starts_with("pigeon-broker "), "{human}");
    assert!(
        human.contains("SETTING") && human.contains("segment_bytes"),
        "{human}"
    );
}

/// A pseudo-terminal: the controller (to type into) and the terminal side
/// (to give a child as its stdin).
fn pseudo_terminal() -> (std::fs::File, std::fs::File) {
    let controller = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ptmx")
        .expect("open /dev/ptmx");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&controller);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: fd is an open pseudo-terminal controller; name is a buffer of
    // the length given.
    let ready = unsafe {
        libc::grantpt(fd) == 0
            && libc::unlockpt(fd) == 0
            && libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) == 0
    };
    assert!(ready, "cannot set up a pseudo-terminal");
    // SAFETY: ptsname_r wrote a NUL-terminated path into name.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.to_str().expect("a path"))
        .expect("open the terminal side");
    (controller, terminal)
}

/// Runs `pigeon ARGS` with a terminal as stdin, typing `answer`.
fn pigeon_at_a_terminal(broker: &Broker, args: &[&str], answer: &str) -> process::Output {
    let (mut controller, terminal) = pseudo_terminal();
    let mut command: Command = process::pigeon_command(broker.addr);
    let started = std::time::Instant::now();
    let mut child = command
        .args(args)
        .stdin(Stdio::from(OwnedFd::from(terminal)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pigeon");
    // The terminal keeps the line until the command reads it.
    controller.write_all(answer.as_bytes()).expect("type");
    let stdout = process::drain(child.stdout.take().expect("stdout"));
    let stderr = process::drain(child.stderr.take().expect("stderr"));
    let code = process::wait_bounded(&mut child, RUN_TIMEOUT);
    drop(controller);
    process::Output {
        code,
        stdout: stdout.recv().expect("stdout"),
        stderr: String::from_utf8_lossy(&stderr.recv().expect("stderr")).into_owned(),
        took: started.elapsed(),
    }
}

fn topics(broker: &Broker) -> String {
    ok(broker, &["topic", "list"])
}

#[test]
fn deletes_ask_at_a_terminal_and_not_in_scripts() {
    let (_tmp, broker) = start();
    for topic in ["kept", "gone", "scripted", "forced"] {
        ok(&broker, &["topic", "create", topic]);
    }
    ok(&broker, &["group", "create", "billing", "--topic", "kept"]);

    let declined = pigeon_at_a_terminal(&broker, &["topic", "delete", "kept"], "n\n");
    assert_eq!(declined.code, Some(1), "{}", declined.stderr);
    assert!(
        declined.stderr.contains("Delete topic kept with its 0 stored records and its 1 consumer group (billing)? This cannot be undone. [y/N]"),
        "{}",
        declined.stderr
    );
    assert!(
        declined.stderr.contains("topic kept was not deleted"),
        "{}",
        declined.stderr
    );
    assert!(topics(&broker).contains("kept"));

    let accepted = pigeon_at_a_terminal(&broker, &["topic", "delete", "gone"], "y\n");
    assert_eq!(accepted.code, Some(0), "{}", accepted.stderr);
    assert!(String::from_utf8_lossy(&accepted.stdout).contains("deleted topic gone"));

    let forced = pigeon_at_a_terminal(&broker, &["topic", "delete", "forced", "--yes"], "");
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    assert!(!forced.stderr.contains("[y/N]"), "--yes does not ask");

    // A script (stdin not a terminal) is not asked, as DESIGN.md's
    // `topic delete NAME` promises.
    let scripted = pigeon(&broker, &["topic", "delete", "scripted"], b"");
    assert_eq!(scripted.code, Some(0), "{}", scripted.stderr);
    assert!(scripted.stderr.is_empty(), "{}", scripted.stderr);
    let left = topics(&broker);
    for (topic, there) in [
        ("kept", true),
        ("gone", false),
        ("forced", false),
        ("scripted", false),
    ] {
        assert_eq!(
            left.lines().any(|l| l.starts_with(&format!("{topic} "))),
            there,
            "{topic}: {left}"
        );
    }

    let group = ["group", "delete", "billing", "--topic", "kept"];
    let declined = pigeon_at_a_terminal(&broker, &group, "\n");
    assert_eq!(declined.code, Some(1), "{}", declined.stderr);
    assert!(
        declined
            .stderr
            .contains("Delete group billing of topic kept"),
        "{}",
        declined.stderr
    );
    assert!(ok(&broker, &["group", "list"]).contains("billing"));
    let accepted = pigeon_at_a_terminal(&broker, &group, "yes\n");
    assert_eq!(accepted.code, Some(0), "{}", accepted.stderr);
    assert!(!ok(&broker, &["group", "list"]).contains("billing"));
}

#[test]
fn every_admin_operation_is_logged_with_the_peer_address_and_its_result() {
    let (_tmp, broker) = start();
    ok(&broker, &["topic", "create", "orders"]);
    ok(
        &broker,
        &["topic", "alter", "orders", "--retention-ms", "60000"],
    );
    ok(
        &broker,
        &["group", "create", "billing", "--topic", "orders"],
    );
    ok(
        &broker,
        &[
            "group",
            "seek",
            "billing",
            "--topic",
            "orders",
            "--earliest",
        ],
    );
    ok(&broker, &["group", "pause", "billing", "--topic", "orders"]);
    ok(
        &broker,
        &["group", "resume", "billing", "--topic", "orders"],
    );
    ok(
        &broker,
        &[
            "dlq",
            "redrive",
            "orders",
            "--group",
            "billing",
            "--dry-run",
        ],
    );
    ok(
        &broker,
        &["group", "delete", "billing", "--topic", "orders"],
    );
    let refused = pigeon(&broker, &["topic", "delete", "nope"], b"");
    assert_eq!(refused.code, Some(1));
    ok(&broker, &["topic", "list"]);
    let log = broker.log_text();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admin operation"))
        .collect();
    let expected = [
        ("topic create", "orders", "ok"),
        ("topic alter", "orders", "ok"),
        ("group create", "orders/billing", "ok"),
        ("group seek", "orders/billing", "ok"),
        ("group pause", "orders/billing", "ok"),
        ("group resume", "orders/billing", "ok"),
        ("dlq redrive", "orders/billing", "ok"),
        ("group delete", "orders/billing", "ok"),
        ("topic delete", "nope", "failed"),
    ];
    assert_eq!(
        audit.len(),
        expected.len(),
        "reads are not audited:\n{}",
        audit.join("\n")
    );
    for (line, (operation, resource, result)) in audit.iter().zip(expected) {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("peer=\"127.0.0.1:"), "{line}");
        assert!(
            line.contains(&format!("operation=\"{operation}\"")),
            "{line}"
        );
        assert!(line.contains(&format!("resource=\"{resource}\"")), "{line}");
        assert!(line.contains(&format!("result=\"{result}\"")), "{line}");
    }
    assert!(
        audit[1].contains("retention_ms to 60000, retention_bytes unchanged"),
        "{}",
        audit[1]
    );
    assert!(audit[8].contains("does not exist"), "{}", audit[8]);
}

#[test]
fn group_alter_changes_only_the_settings_given_and_they_survive_a_restart() {
    let (_tmp, mut broker) = start();
    ok(&broker, &["topic", "create", "orders"]);
    ok(
        &broker,
        &[
            "group",
            "create",
            "billing",
            "--topic",
            "orders",
            "--max-in-flight",
            "7",
        ],
    );
    let altered = ok(
        &broker,
        &[
            "group",
            "alter",
            "billing",
            "--topic",
            "orders",
            "--ack-timeout-ms",
            "1500",
            "--max-deliveries",
            "2",
        ],
    );
    assert!(altered.starts_with("altered group billing"), "{altered}");
    let expect = "ack timeout 1500 ms, max deliveries 2, backoff 1000 ms x2 up to 300000 ms (jitter ±200‰), max in flight 7";
    let described = ok(
        &broker,
        &["group", "describe", "billing", "--topic", "orders"],
    );
    assert!(described.contains(expect), "{described}");
    broker.restart();
    let described = ok(
        &broker,
        &["group", "describe", "billing", "--topic", "orders"],
    );
    assert!(described.contains(expect), "after a restart: {described}");
    let missing = pigeon(
        &broker,
        &[
            "group",
            "alter",
            "nobody",
            "--topic",
            "orders",
            "--max-deliveries",
            "3",
        ],
        b"",
    );
    assert_ne!(missing.code, Some(0));
    assert!(missing.stderr.contains("nobody"), "{}", missing.stderr);
}
