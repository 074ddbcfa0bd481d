//! End-to-end tests of `pigeon consume --exec` against a real
//! `pigeon-broker`: leases that follow a slow handler, and `--concurrency`.
//!
//! Every `pigeon` run is bounded by [`RUN_TIMEOUT`] and stops by itself
//! (`--max`); handlers wait for conditions with a bounded loop, never for
//! a fixed sleep, except where the test is about a handler being slow.

use std::path::Path;
use std::time::Duration;

use pigeon_suite::Broker;
use pigeon_suite::process::{self, Output};
use serde_json::Value;

/// Longest a single `pigeon` invocation may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn pigeon(broker: &Broker, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = process::pigeon_command(broker.addr);
    command.args(args);
    process::run(command, stdin, RUN_TIMEOUT)
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.code,
        Some(0),
        "stderr: {}\nstdout: {stdout}",
        out.stderr
    );
    assert!(out.stderr.is_empty(), "stderr: {}", out.stderr);
    stdout
}

/// A broker with topic `jobs` holding `count` messages and group `workers`
/// created with `settings`.
fn jobs(count: usize, settings: &[&str]) -> (tempfile::TempDir, Broker) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    ok(pigeon(&broker, &["topic", "create", "jobs"], b""));
    let input: String = (0..count).map(|i| format!("job {i}\n")).collect();
    ok(pigeon(&broker, &["produce", "jobs"], input.as_bytes()));
    let mut args = vec!["group", "create", "workers", "--topic", "jobs"];
    args.extend_from_slice(settings);
    ok(pigeon(&broker, &args, b""));
    (tmp, broker)
}

/// `(offset, attempt)` of each handled message, from the handlers' log.
fn handled(log: &Path) -> Vec<(u64, u32)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs: Vec<(u64, u32)> = text
        .lines()
        .map(|l| {
            let (offset, attempt) = l.split_once(' ').expect("offset attempt");
            (
                offset.parse().expect("offset"),
                attempt.parse().expect("attempt"),
            )
        })
        .collect();
    runs.sort_unstable();
    runs
}

fn group_lag(broker: &Broker) -> u64 {
    let described = ok(pigeon(
        broker,
        &["group", "describe", "workers", "--topic", "jobs", "--json"],
        b"",
    ));
    let partition: Value =
        serde_json::from_str(described.lines().next().expect("a partition")).expect("json");
    partition["lag"].as_u64().expect("lag")
}

#[test]
fn a_handler_slower_than_the_ack_timeout_handles_each_message_once() {
    let (tmp, broker) = jobs(3, &["--ack-timeout-ms", "1000"]);
    let log = tmp.path().join("handled");
    // Each run outlasts the ack timeout by 60 %: only extending the lease
    // while it runs keeps the message from coming back meanwhile.
    let handler = format!(
        "sleep 1.6; echo \"$PIGEON_OFFSET $PIGEON_ATTEMPT\" >> '{}'",
        log.display()
    );
    ok(pigeon(
        &broker,
        &[
            "consume", "jobs", "--group", "workers", "--exec", &handler, "--max", "3",
        ],
        b"",
    ));
    assert_eq!(handled(&log), [(0, 1), (1, 1), (2, 1)]);
    assert_eq!(group_lag(&broker), 0, "every run's ack was accepted");
}

#[test]
fn concurrency_runs_that_many_handlers_at_once_each_message_to_one() {
    let (tmp, broker) = jobs(4, &[]);
    let dir = tmp.path().join("runs");
    std::fs::create_dir(&dir).expect("runs dir");
    let log = tmp.path().join("handled");
    // Each run marks itself running, then waits (bounded) until four runs
    // are: with fewer at once it gives up and fails (a nack).
    let script = tmp.path().join("handler.sh");
    std::fs::write(
        &script,
        format!(
            "touch '{dir}/'\"$PIGEON_OFFSET\"\n\
             i=0\n\
             while [ \"$(ls '{dir}' | wc -l)\" -lt 4 ]; do\n\
               i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.05\n\
             done\n\
             echo \"$PIGEON_OFFSET $PIGEON_ATTEMPT\" >> '{log}'\n",
            dir = dir.display(),
            log = log.display()
        ),
    )
    .expect("write handler");
    let handler = format!("sh '{}'", script.display());
    ok(pigeon(
        &broker,
        &[
            "consume",
            "jobs",
            "--group",
            "workers",
            "--exec",
            &handler,
            "--concurrency",
            "4",
            "--max",
            "4",
        ],
        b"",
    ));
    assert_eq!(handled(&log), [(0, 1), (1, 1), (2, 1), (3, 1)]);
    assert_eq!(group_lag(&broker), 0);
}

#[test]
fn concurrency_needs_exec_and_at_least_one() {
    let (_tmp, broker) = jobs(1, &[]);
    for args in [
        &[
            "consume",
            "jobs",
            "--group",
            "workers",
            "--concurrency",
            "2",
        ][..],
        &[
            "consume",
            "jobs",
            "--group",
            "workers",
            "--exec",
            "true",
            "--concurrency",
            "0",
        ][..],
    ] {
        let out = pigeon(&broker, args, b"");
        assert_eq!(out.code, Some(2), "a usage error: {}", out.stderr);
    }
}

#[test]
fn messages_of_300_kb_are_received_within_the_frame_limit_and_none_is_burned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    ok(pigeon(&broker, &["topic", "create", "big"], b""));
    // 120 × 300 KB: a Receive of the CLI's 100 messages would be ~30 MB,
    // twice the 16 MiB frame limit.
    let line = "x".repeat(300 * 1024);
    let input: String = (0..120).map(|_| format!("{line}\n")).collect();
    ok(pigeon(&broker, &["produce", "big"], input.as_bytes()));
    ok(pigeon(
        &broker,
        &["group", "create", "g", "--topic", "big"],
        b"",
    ));
    let out = ok(pigeon(
        &broker,
        &["consume", "big", "--group", "g", "--max", "120", "--json"],
        b"",
    ));
    let attempts: Vec<u64> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            assert_eq!(v["value"].as_str().map(str::len), Some(300 * 1024));
            v["attempt"].as_u64().expect("attempt")
        })
        .collect();
    assert_eq!(attempts.len(), 120);
    assert!(
        attempts.iter().all(|a| *a == 1),
        "no attempt burned: {attempts:?}"
    );
    let described = ok(pigeon(
        &broker,
        &["group", "describe", "g", "--topic", "big", "--json"],
        b"",
    ));
    let partition: Value =
        serde_json::from_str(described.lines().next().expect("partition")).expect("json");
    assert_eq!(partition["lag"], 0, "{partition}");
    assert_eq!(partition["delayed"], 0, "{partition}");
}
