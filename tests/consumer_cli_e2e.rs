//! End-to-end tests of the consumer-group commands of the `pigeon` command
//! line against a real `pigeon-broker`: `group create/describe/seek/pause/
//! resume`, `consume` (printing, `--json`, `--max`, `--wait-ms`, `--exec`
//! with ack / reject / nack verdicts), `dlq list` and `message show`.
//!
//! Every `pigeon` run is bounded by [`RUN_TIMEOUT`]; commands stop by
//! themselves (`--max`, `--wait-ms`), never after a fixed sleep.

use std::path::Path;
use std::time::{Duration, Instant};

use pigeon_suite::Broker;
use pigeon_suite::process;
use serde_json::Value;

/// Longest a single `pigeon` invocation may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "pigeon failed: stderr: {}\nstdout: {}",
            self.stderr,
            self.stdout
        );
        assert!(self.stderr.is_empty(), "stderr: {}", self.stderr);
        self
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// `pigeon --broker ADDR ARGS` with `stdin`, bounded by [`RUN_TIMEOUT`].
fn pigeon(broker: &Broker, args: &[&str], stdin: &[u8]) -> Run {
    let mut command = process::pigeon_command(broker.addr);
    command.args(args);
    let out = process::run(command, stdin, RUN_TIMEOUT);
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

/// Creates `topic` and produces `lines` into it.
fn topic_with(broker: &Broker, topic: &str, lines: &[String]) {
    pigeon(broker, &["topic", "create", topic], b"").ok();
    let mut input = lines.join("\n");
    input.push('\n');
    let produced = pigeon(broker, &["produce", topic], input.as_bytes()).ok();
    assert_eq!(produced.lines().len(), lines.len());
}

fn create_group(broker: &Broker, topic: &str, group: &str, extra: &[&str]) {
    let mut args = vec!["group", "create", group, "--topic", topic];
    args.extend_from_slice(extra);
    let created = pigeon(broker, &args, b"").ok();
    assert!(created.stdout.contains(group), "{}", created.stdout);
}

fn describe_json(broker: &Broker, topic: &str, group: &str) -> Vec<Value> {
    pigeon(
        broker,
        &["group", "describe", group, "--topic", topic, "--json"],
        b"",
    )
    .ok()
    .json_lines()
}

fn message_show(broker: &Broker, topic: &str, group: &str, offset: u64) -> String {
    pigeon(
        broker,
        &[
            "message",
            "show",
            topic,
            "--partition",
            "0",
            "--offset",
            &offset.to_string(),
            "--group",
            group,
        ],
        b"",
    )
    .ok()
    .stdout
}

fn write_handler(dir: &Path, handled: &Path) -> String {
    let script = dir.join("handler.sh");
    std::fs::write(
        &script,
        format!(
            "v=$(cat)\ncase \"$v\" in *poison*) exit 65;; esac\nprintf '%s %s %s\\n' \"$PIGEON_OFFSET\" \"$PIGEON_ATTEMPT\" \"$v\" >> '{}'\n",
            handled.display()
        ),
    )
    .expect("write handler");
    format!("sh '{}'", script.display())
}

#[test]
fn exec_handler_acks_good_lines_and_rejects_poison_to_the_dlq() {
    let (tmp, broker) = start_broker();
    let lines: Vec<String> = (0..100)
        .map(|i| {
            if i % 20 == 7 {
                format!("poison {i}")
            } else {
                format!("line {i}")
            }
        })
        .collect();
    topic_with(&broker, "orders", &lines);
    create_group(
        &broker,
        "orders",
        "billing",
        &[
            "--max-deliveries",
            "2",
            "--backoff-initial-ms",
            "10",
            "--backoff-max-ms",
            "50",
        ],
    );
    let handled = tmp.path().join("handled.txt");
    let command = write_handler(tmp.path(), &handled);
    pigeon(
        &broker,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--exec",
            &command,
            "--wait-ms",
            "2000",
        ],
        b"",
    )
    .ok();

    let handled = std::fs::read_to_string(&handled).expect("handler output");
    let mut values: Vec<&str> = handled
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).expect("value"))
        .collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), 95, "{handled}");
    assert!(values.iter().all(|v| v.starts_with("line ")));
    assert!(
        handled.lines().all(|l| l.split(' ').nth(1) == Some("1")),
        "every good line handled at its first attempt: {handled}"
    );

    let dlq = pigeon(
        &broker,
        &["dlq", "list", "orders", "--group", "billing"],
        b"",
    )
    .ok();
    let parked = dlq.lines();
    assert_eq!(parked.len(), 5, "{}", dlq.stdout);
    for (line, i) in parked.iter().zip([7, 27, 47, 67, 87]) {
        assert!(line.starts_with(&format!("orders/0@{i} ")), "{line}");
        assert!(line.contains("reason=rejected"), "{line}");
        assert!(line.contains("exited with code 65"), "{line}");
        assert!(line.ends_with(&format!("poison {i}")), "{line}");
    }
    let dlq_json = pigeon(
        &broker,
        &["dlq", "list", "orders", "--group", "billing", "--json"],
        b"",
    )
    .ok()
    .json_lines();
    assert_eq!(dlq_json.len(), 5);
    assert_eq!(dlq_json[0]["headers"]["pigeon.dlq.reason"], "rejected");
    assert_eq!(dlq_json[0]["headers"]["pigeon.dlq.source-offset"], "7");

    let described = describe_json(&broker, "orders", "billing");
    assert_eq!(described.len(), 1);
    assert_eq!(described[0]["lag"], 0, "{}", described[0]);
    assert_eq!(described[0]["dead_lettered"], 5, "{}", described[0]);
    assert_eq!(described[0]["committed_floor"], 100, "{}", described[0]);
    assert_eq!(described[0]["log_end"], 100, "{}", described[0]);
    assert_eq!(described[0]["settings"]["max_deliveries"], 2);
    let human = pigeon(
        &broker,
        &["group", "describe", "billing", "--topic", "orders"],
        b"",
    )
    .ok();
    assert!(human.stdout.contains("LAG"), "{}", human.stdout);
    assert!(
        human.stdout.contains("max deliveries 2"),
        "{}",
        human.stdout
    );

    let acked = message_show(&broker, "orders", "billing", 3);
    assert!(acked.contains("settled"), "{acked}");
}

#[test]
fn failing_exec_nacks_until_max_deliveries_dead_letters() {
    let (_tmp, broker) = start_broker();
    let lines: Vec<String> = (0..3).map(|i| format!("job {i}")).collect();
    topic_with(&broker, "jobs", &lines);
    create_group(
        &broker,
        "jobs",
        "workers",
        &[
            "--max-deliveries",
            "2",
            "--backoff-initial-ms",
            "10",
            "--backoff-max-ms",
            "50",
        ],
    );
    pigeon(
        &broker,
        &[
            "consume",
            "jobs",
            "--group",
            "workers",
            "--exec",
            "exit 1",
            "--wait-ms",
            "2000",
        ],
        b"",
    )
    .ok();
    let dlq = pigeon(&broker, &["dlq", "list", "jobs", "--group", "workers"], b"").ok();
    assert_eq!(dlq.lines().len(), 3, "{}", dlq.stdout);
    for line in dlq.lines() {
        assert!(line.contains("attempts=2"), "{line}");
        assert!(line.contains("reason=max-deliveries"), "{line}");
    }
    assert_eq!(describe_json(&broker, "jobs", "workers")[0]["lag"], 0);
}

/// Once the group's committed floor passes a dead-lettered message,
/// MessageState answers `Settled` with 0 attempts: `message show` cannot
/// say "dead-lettered and why" as docs/design.md asks.
#[test]
fn message_show_says_dead_lettered_after_the_floor_passed_it() {
    let (_tmp, broker) = start_broker();
    topic_with(&broker, "jobs", &["job 0".to_string()]);
    create_group(&broker, "jobs", "workers", &[]);
    pigeon(
        &broker,
        &[
            "consume", "jobs", "--group", "workers", "--exec", "exit 65", "--max", "1",
        ],
        b"",
    )
    .ok();
    let state = message_show(&broker, "jobs", "workers", 0);
    assert!(state.contains("dead-lettered (rejected"), "{state}");
    assert!(state.contains("attempts: 1"), "{state}");
    assert!(state.contains("first delivered 20"), "{state}");
    assert!(state.contains("last delivered 20"), "{state}");
}

#[test]
fn json_max_seek_replay_pause_and_resume() {
    let (_tmp, broker) = start_broker();
    let lines: Vec<String> = (0..10).map(|i| format!("event {i}")).collect();
    topic_with(&broker, "events", &lines);
    create_group(&broker, "events", "audit", &[]);
    let consume = |extra: &[&str]| {
        let mut args = vec!["consume", "events", "--group", "audit"];
        args.extend_from_slice(extra);
        pigeon(&broker, &args, b"").ok()
    };

    let first = consume(&["--max", "3", "--json"]).json_lines();
    assert_eq!(first.len(), 3);
    for (i, object) in first.iter().enumerate() {
        let keys: Vec<&str> = object
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "topic",
                "partition",
                "offset",
                "timestamp",
                "key",
                "value",
                "headers",
                "attempt"
            ]
        );
        assert_eq!(object["offset"], i as u64);
        assert_eq!(object["value"], format!("event {i}"));
        assert_eq!(object["attempt"], 1);
    }
    let acked = message_show(&broker, "events", "audit", 2);
    assert!(acked.contains("settled"), "{acked}");
    let pending = message_show(&broker, "events", "audit", 5);
    assert!(pending.contains("available"), "{pending}");

    let rest = consume(&["--wait-ms", "500"]);
    assert_eq!(rest.lines().len(), 7, "{}", rest.stdout);
    assert!(
        rest.lines()[0].starts_with("events/0@3 attempt=1 "),
        "{}",
        rest.stdout
    );
    assert!(rest.lines()[6].ends_with(" event 9"), "{}", rest.stdout);
    assert_eq!(describe_json(&broker, "events", "audit")[0]["lag"], 0);

    let sought = pigeon(
        &broker,
        &[
            "group",
            "seek",
            "audit",
            "--topic",
            "events",
            "--to-offset",
            "0",
        ],
        b"",
    )
    .ok();
    assert!(sought.stdout.contains("offset 0"), "{}", sought.stdout);
    pigeon(
        &broker,
        &["group", "pause", "audit", "--topic", "events"],
        b"",
    )
    .ok();
    assert_eq!(describe_json(&broker, "events", "audit")[0]["paused"], true);
    let started = Instant::now();
    let paused = consume(&["--wait-ms", "300"]);
    assert!(paused.stdout.is_empty(), "{}", paused.stdout);
    assert!(started.elapsed() >= Duration::from_millis(300));

    pigeon(
        &broker,
        &["group", "resume", "audit", "--topic", "events"],
        b"",
    )
    .ok();
    let replay = consume(&["--wait-ms", "500", "--json"]).json_lines();
    let offsets: Vec<u64> = replay
        .iter()
        .map(|o| o["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
}

#[test]
fn group_errors_are_one_sentence_and_exit_1() {
    let (_tmp, broker) = start_broker();
    let run = pigeon(
        &broker,
        &["group", "describe", "nope", "--topic", "missing"],
        b"",
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.starts_with("pigeon: "), "{}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    let run = pigeon(
        &broker,
        &["consume", "missing", "--group", "g", "--max", "1"],
        b"",
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.starts_with("pigeon: "), "{}", run.stderr);
    let usage = pigeon(&broker, &["group", "seek", "g", "--topic", "t"], b"");
    assert_eq!(
        usage.code,
        Some(2),
        "a seek needs a target: {}",
        usage.stderr
    );
}

/// The library's `Consumer` through a proxy: ack (and a second ack:
/// `LeaseLost`), nack with a delay (attempt 2), reject with a reason (to
/// the DLQ), extend; then the broker is killed and restarted under a
/// pending receive, and the consumer rejoins by itself and goes on.
#[test]
fn library_consumer_settles_and_rejoins_after_a_broker_restart() {
    use pigeon_client::client::{Client, Consumer, ConsumerConfig};
    use pigeon_client::protocol::{ErrorCode, GroupSettings};
    use pigeon_suite::proxy::FaultyProxy;

    let (_tmp, mut broker) = start_broker();
    let lines: Vec<String> = (0..4).map(|i| format!("m{i}")).collect();
    topic_with(&broker, "lib", &lines);
    let rt = pigeon_suite::runtime();
    let proxy = rt.block_on(FaultyProxy::start(broker.addr, 0, 1));
    let mut consumer = rt.block_on(async {
        let client = Client::connect(proxy.addr.to_string())
            .await
            .expect("connect");
        let settings = GroupSettings {
            max_deliveries: 3,
            backoff_initial_ms: 10,
            backoff_max_ms: 50,
            ..GroupSettings::default()
        };
        client
            .admin()
            .create_group("lib", "g", settings)
            .await
            .expect("create group");
        let config = ConsumerConfig {
            max_messages: 1,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::join(&client, "lib", "g", config)
            .await
            .expect("join");
        let within = Duration::from_secs(10);
        let d0 = tokio::time::timeout(within, consumer.next_delivery())
            .await
            .expect("in time")
            .expect("d0");
        assert_eq!(
            (d0.offset, d0.attempt, d0.value.as_ref()),
            (0, 1, &b"m0"[..])
        );
        d0.ack().await.expect("ack");
        let again = d0.ack().await.expect_err("a second ack");
        assert_eq!(again.code(), Some(ErrorCode::LeaseLost), "{again}");

        let d1 = consumer.next_delivery().await.expect("d1");
        assert_eq!(d1.offset, 1);
        d1.nack(Some(Duration::from_millis(10)))
            .await
            .expect("nack");
        let d2 = consumer.next_delivery().await.expect("d2");
        let d2 = if d2.offset == 1 {
            // The nacked message may come back before offset 2.
            assert_eq!(d2.attempt, 2);
            d2.ack().await.expect("ack the redelivery");
            consumer.next_delivery().await.expect("d2")
        } else {
            d2
        };
        assert_eq!(d2.offset, 2);
        d2.reject("bad total").await.expect("reject");
        let d3 = loop {
            let d = consumer.next_delivery().await.expect("d3");
            if d.offset == 1 {
                assert_eq!(d.attempt, 2);
                d.ack().await.expect("ack the redelivery");
                continue;
            }
            break d;
        };
        assert_eq!(d3.offset, 3);
        d3.extend(Duration::from_secs(120)).await.expect("extend");
        d3.ack().await.expect("ack after extend");

        let admin = client.admin();
        let state = admin.message_state("lib", "g", 0, 2).await.expect("state");
        assert!(
            matches!(
                state.state,
                pigeon_client::protocol::MessageState::DeadLettered
                    | pigeon_client::protocol::MessageState::Settled
            ),
            "{state:?}"
        );
        consumer
    });

    // A receive is pending (nothing is left). Kill the broker under the
    // consumer, start a new one, point the proxy at it, and produce offset
    // 4: only a consumer that joined the new broker can get it.
    let pending = rt.spawn(async move {
        let mut seen = Vec::new();
        loop {
            let d = consumer.next_delivery().await.expect("after restart");
            d.ack().await.expect("ack after rejoin");
            seen.push(d.offset);
            if d.offset == 4 {
                return seen;
            }
        }
    });
    broker.restart();
    proxy.set_upstream(broker.addr);
    assert!(!pending.is_finished());
    let produced = pigeon(&broker, &["produce", "lib"], b"m4\n").ok();
    assert_eq!(produced.lines().len(), 1);
    let seen = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), pending).await })
        .expect("the consumer came back within 30 s")
        .expect("task");
    assert_eq!(seen.last(), Some(&4), "{seen:?}");
}

#[test]
fn an_idle_consumer_rejoins_when_its_connection_was_lost_between_requests() {
    use pigeon_client::client::{Client, Consumer, ConsumerConfig};
    use pigeon_client::protocol::GroupSettings;
    use pigeon_suite::proxy::FaultyProxy;

    let (_tmp, mut broker) = start_broker();
    topic_with(&broker, "idle", &["m0".to_string()]);
    let rt = pigeon_suite::runtime();
    let proxy = rt.block_on(FaultyProxy::start(broker.addr, 0, 1));
    let mut consumer = rt.block_on(async {
        let client = Client::connect(proxy.addr.to_string())
            .await
            .expect("connect");
        client
            .admin()
            .create_group("idle", "g", GroupSettings::default())
            .await
            .expect("create group");
        let config = ConsumerConfig {
            max_messages: 1,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::join(&client, "idle", "g", config)
            .await
            .expect("join");
        let d0 = tokio::time::timeout(Duration::from_secs(10), consumer.next_delivery())
            .await
            .expect("in time")
            .expect("d0");
        d0.ack().await.expect("ack");
        consumer
    });
    // No request of the consumer is outstanding while the broker goes away.
    broker.restart();
    proxy.set_upstream(broker.addr);
    pigeon(&broker, &["produce", "idle"], b"m1\n").ok();
    let got = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let d = consumer
                    .next_delivery()
                    .await
                    .expect("delivery after the restart");
                d.ack().await.expect("ack");
                if d.offset == 1 {
                    return d.offset;
                }
            }
        })
        .await
    });
    assert_eq!(
        got.expect("the idle consumer joined again and got the new message"),
        1
    );
}

#[test]
fn dlq_redrive_moves_each_parked_message_back_once() {
    let (_tmp, broker) = start_broker();
    let lines: Vec<String> = (0..6).map(|i| format!("event {i}")).collect();
    topic_with(&broker, "orders", &lines);
    create_group(&broker, "orders", "billing", &[]);
    // Reject everything: six messages parked.
    pigeon(
        &broker,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--exec",
            "exit 65",
            "--wait-ms",
            "1000",
        ],
        b"",
    )
    .ok();
    let parked = pigeon(
        &broker,
        &["dlq", "list", "orders", "--group", "billing"],
        b"",
    )
    .ok();
    assert_eq!(parked.lines().len(), 6, "{}", parked.stdout);

    let dry = pigeon(
        &broker,
        &[
            "dlq",
            "redrive",
            "orders",
            "--group",
            "billing",
            "--dry-run",
        ],
        b"",
    )
    .ok();
    assert_eq!(
        dry.lines(),
        [
            "would redrive 6 messages of orders.billing.dlq to orders",
            "  partition 0: dlq offsets 0..6: 6 would move",
        ],
        "{}",
        dry.stdout
    );
    let source = |b: &Broker| {
        pigeon(b, &["read", "orders", "--json"], b"")
            .ok()
            .json_lines()
    };
    assert_eq!(source(&broker).len(), 6, "a dry run moves nothing");

    let first = pigeon(
        &broker,
        &[
            "dlq", "redrive", "orders", "--group", "billing", "--max", "2",
        ],
        b"",
    )
    .ok();
    assert_eq!(
        first.lines()[..2],
        [
            "redrove 2 messages of orders.billing.dlq to orders",
            "  partition 0: dlq offsets 0..2: 2 moved to orders/0 offsets 6..8",
        ],
        "{}",
        first.stdout
    );
    let rest = pigeon(
        &broker,
        &[
            "dlq",
            "redrive",
            "orders",
            "--group",
            "billing",
            "--rate-per-sec",
            "1000",
        ],
        b"",
    )
    .ok();
    assert!(
        rest.stdout.starts_with(
            "redrove 4 messages of orders.billing.dlq to orders\n  partition 0: dlq offsets 2..6"
        ),
        "the second run moves only what the first did not: {}",
        rest.stdout
    );
    let again = pigeon(
        &broker,
        &["dlq", "redrive", "orders", "--group", "billing"],
        b"",
    )
    .ok();
    assert_eq!(
        again.lines(),
        ["nothing to redrive in orders.billing.dlq for group billing"],
        "running it again moves nothing: {}",
        again.stdout
    );

    let records = source(&broker);
    assert_eq!(records.len(), 12, "six originals and six redriven");
    let redriven: Vec<&Value> = records[6..].iter().collect();
    let values: Vec<&str> = redriven
        .iter()
        .map(|r| r["value"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        values,
        lines.iter().map(String::as_str).collect::<Vec<_>>(),
        "in DLQ order, values intact"
    );
    for (i, r) in redriven.iter().enumerate() {
        assert_eq!(
            r["headers"]["pigeon.redrive.dlq-offset"].as_str(),
            Some(i.to_string().as_str())
        );
        assert!(
            r["headers"].get("pigeon.dlq.reason").is_none(),
            "dead-letter headers are dropped"
        );
    }
}

/// The scenario: 1,000 messages of which 50 make the handler fail
/// (any exit but 0 and 65: a nack), with `--max-deliveries 3`.
#[test]
fn a_thousand_messages_with_fifty_poison_end_handled_or_parked_after_max_deliveries() {
    let (tmp, broker) = start_broker();
    let lines: Vec<String> = (0..1000)
        .map(|i| {
            if i % 20 == 3 {
                format!("poison {i}")
            } else {
                format!("ok {i}")
            }
        })
        .collect();
    topic_with(&broker, "orders", &lines);
    create_group(
        &broker,
        "orders",
        "billing",
        &[
            "--max-deliveries",
            "3",
            "--backoff-initial-ms",
            "5",
            "--backoff-max-ms",
            "20",
        ],
    );
    let handled = tmp.path().join("handled.txt");
    let script = tmp.path().join("fails_on_poison.sh");
    std::fs::write(
        &script,
        format!(
            "v=$(cat)\ncase \"$v\" in *poison*) exit 1;; esac\nprintf '%s\\n' \"$v\" >> '{}'\n",
            handled.display()
        ),
    )
    .expect("write handler");
    let command = format!("sh '{}'", script.display());
    pigeon(
        &broker,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--exec",
            &command,
            "--wait-ms",
            "3000",
        ],
        b"",
    )
    .ok();
    let done = std::fs::read_to_string(&handled).expect("handled file");
    assert_eq!(done.lines().count(), 950, "each good message handled once");
    let parked = pigeon(
        &broker,
        &["dlq", "list", "orders", "--group", "billing", "--json"],
        b"",
    )
    .ok()
    .json_lines();
    assert_eq!(parked.len(), 50);
    for record in &parked {
        assert!(
            record["value"]
                .as_str()
                .unwrap_or_default()
                .starts_with("poison"),
            "{record}"
        );
        assert_eq!(
            record["headers"]["pigeon.dlq.attempts"].as_str(),
            Some("3"),
            "{record}"
        );
        assert_eq!(
            record["headers"]["pigeon.dlq.reason"].as_str(),
            Some("max-deliveries"),
            "{record}"
        );
        assert_eq!(
            record["headers"]["pigeon.dlq.group"].as_str(),
            Some("billing"),
            "{record}"
        );
        assert_eq!(
            record["headers"]["pigeon.dlq.source-topic"].as_str(),
            Some("orders"),
            "{record}"
        );
        let ms = |name: &str| {
            record["headers"][name]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("{name} missing in {record}"))
        };
        let (first, last) = (
            ms("pigeon.dlq.first-delivery-ms"),
            ms("pigeon.dlq.last-delivery-ms"),
        );
        let parked_at = ms("pigeon.dlq.dead-lettered-ms");
        assert!(first <= last && last <= parked_at, "{record}");
        assert!(parked_at - first < 120_000, "{record}");
    }
    let described = describe_json(&broker, "orders", "billing");
    assert_eq!(described[0]["lag"].as_u64(), Some(0));
    assert_eq!(described[0]["dead_lettered"].as_u64(), Some(50));
}

/// Milliseconds since the Unix epoch, by the test's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[test]
fn seek_to_a_time_replays_exactly_the_messages_appended_from_then_on() {
    let (_tmp, broker) = start_broker();
    let before: Vec<String> = (0..4).map(|i| format!("before {i}")).collect();
    topic_with(&broker, "events", &before);
    create_group(&broker, "events", "audit", &[]);
    let done = pigeon(
        &broker,
        &["consume", "events", "--group", "audit", "--wait-ms", "300"],
        b"",
    )
    .ok();
    assert_eq!(done.lines().len(), 4, "{}", done.stdout);
    // The next records must get a later append time than the first four.
    let last = pigeon(&broker, &["read", "events", "--json"], b"")
        .ok()
        .json_lines()
        .last()
        .and_then(|r| r["timestamp"].as_i64())
        .expect("timestamp");
    pigeon_suite::wait_until(Duration::from_secs(5), "the clock to move on", || {
        now_ms() > last
    });
    let after: Vec<String> = (0..3).map(|i| format!("after {i}")).collect();
    let mut input = after.join("\n");
    input.push('\n');
    pigeon(&broker, &["produce", "events"], input.as_bytes()).ok();
    let records = pigeon(&broker, &["read", "events", "--json"], b"")
        .ok()
        .json_lines();
    let from = records[4]["timestamp"].as_i64().expect("timestamp");
    assert!(from > last);
    let at = jiff::Timestamp::from_millisecond(from)
        .expect("timestamp")
        .to_string();

    let sought = pigeon(
        &broker,
        &[
            "group",
            "seek",
            "audit",
            "--topic",
            "events",
            "--to-time",
            &at,
        ],
        b"",
    )
    .ok();
    assert!(sought.stdout.contains("offset 4"), "{}", sought.stdout);
    let replay = pigeon(
        &broker,
        &[
            "consume",
            "events",
            "--group",
            "audit",
            "--wait-ms",
            "500",
            "--json",
        ],
        b"",
    )
    .ok()
    .json_lines();
    let got: Vec<(u64, String, u64)> = replay
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().expect("offset"),
                r["value"].as_str().expect("value").to_string(),
                r["attempt"].as_u64().expect("attempt"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (4, "after 0".to_string(), 1),
            (5, "after 1".to_string(), 1),
            (6, "after 2".to_string(), 1)
        ]
    );
    assert_eq!(describe_json(&broker, "events", "audit")[0]["lag"], 0);
}

#[test]
fn a_consumer_killed_mid_batch_hands_its_leases_back_and_they_come_again_as_attempt_2() {
    use std::os::unix::process::CommandExt;

    let (tmp, broker) = start_broker();
    let lines: Vec<String> = (0..5).map(|i| format!("job {i}")).collect();
    topic_with(&broker, "jobs", &lines);
    create_group(
        &broker,
        "jobs",
        "workers",
        &["--backoff-initial-ms", "50", "--ack-timeout-ms", "60000"],
    );
    // The handler signals that it started, then hangs: the consumer is
    // killed while it holds the whole batch.
    let started = tmp.path().join("started");
    let handler = format!("touch '{}'; exec sleep 120", started.display());
    let mut command = process::pigeon_command(broker.addr);
    command
        .args(["consume", "jobs", "--group", "workers", "--exec", &handler])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut consumer = command.spawn().expect("spawn pigeon consume");
    pigeon_suite::wait_until(Duration::from_secs(30), "the handler to start", || {
        started.exists()
    });
    let leased: Vec<u64> = (0..5)
        .filter(|o| message_show(&broker, "jobs", "workers", *o).contains("in flight"))
        .collect();
    assert!(leased.contains(&0), "the message being handled is leased");
    let holder = message_show(&broker, "jobs", "workers", 0);
    assert!(
        holder.contains(&format!("-{} (consumer ", consumer.id())),
        "names the consumer by the name it joined with: {holder}"
    );
    // SIGKILL the consumer and its handler (the whole process group).
    let group = -(consumer.id() as i32);
    // SAFETY: kill(2) with a negative pid signals that process group; the
    // group is the consumer this test started.
    unsafe {
        libc::kill(group, libc::SIGKILL);
    }
    process::wait_bounded(&mut consumer, Duration::from_secs(10));

    let again = pigeon(
        &broker,
        &[
            "consume",
            "jobs",
            "--group",
            "workers",
            "--wait-ms",
            "1000",
            "--json",
        ],
        b"",
    )
    .ok()
    .json_lines();
    let mut got: Vec<(u64, u64)> = again
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().expect("offset"),
                r["attempt"].as_u64().expect("attempt"),
            )
        })
        .collect();
    got.sort_unstable();
    let expected: Vec<(u64, u64)> = (0..5)
        .map(|o| (o, if leased.contains(&o) { 2 } else { 1 }))
        .collect();
    assert_eq!(got, expected, "leased by the killed consumer: {leased:?}");
    assert_eq!(describe_json(&broker, "jobs", "workers")[0]["lag"], 0);
}

#[test]
fn deleting_a_topic_deletes_its_groups_so_a_new_topic_of_that_name_starts_clean() {
    let (_tmp, broker) = start_broker();
    let old: Vec<String> = (0..5).map(|i| format!("old {i}")).collect();
    topic_with(&broker, "orders", &old);
    create_group(&broker, "orders", "billing", &[]);
    let consumed = pigeon(
        &broker,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--wait-ms",
            "300",
        ],
        b"",
    )
    .ok();
    assert_eq!(consumed.lines().len(), 5);
    pigeon(&broker, &["topic", "delete", "orders"], b"").ok();
    let gone = pigeon(
        &broker,
        &["group", "describe", "billing", "--topic", "orders"],
        b"",
    );
    assert_ne!(gone.code, Some(0), "the group went with its topic");

    let new: Vec<String> = (0..2).map(|i| format!("new {i}")).collect();
    topic_with(&broker, "orders", &new);
    create_group(&broker, "orders", "billing", &[]);
    let fresh = pigeon(
        &broker,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--wait-ms",
            "300",
            "--json",
        ],
        b"",
    )
    .ok()
    .json_lines();
    let got: Vec<(u64, &str)> = fresh
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().expect("offset"),
                r["value"].as_str().expect("value"),
            )
        })
        .collect();
    assert_eq!(got, vec![(0, "new 0"), (1, "new 1")]);
}

#[test]
fn consume_interrupted_while_waiting_exits_0_with_what_it_printed_acked() {
    use std::io::{BufRead, BufReader};

    let (_tmp, broker) = start_broker();
    let lines: Vec<String> = (0..3).map(|i| format!("job {i}")).collect();
    topic_with(&broker, "jobs", &lines);
    create_group(&broker, "jobs", "workers", &["--ack-timeout-ms", "60000"]);
    let mut command = process::pigeon_command(broker.addr);
    command
        .args(["consume", "jobs", "--group", "workers", "--json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut consumer = command.spawn().expect("spawn pigeon consume");
    let stdout = consumer.stdout.take().expect("stdout");
    let (line_tx, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    for _ in 0..3 {
        printed
            .recv_timeout(Duration::from_secs(30))
            .expect("a message printed in time");
    }
    // Printed; now it waits for more. Ctrl-C.
    // SAFETY: kill(2) of the child this test started.
    unsafe {
        libc::kill(consumer.id() as i32, libc::SIGINT);
    }
    let code = process::wait_bounded(&mut consumer, Duration::from_secs(10));
    assert_eq!(code, Some(0), "Ctrl-C is a normal stop");
    let again = pigeon(
        &broker,
        &["consume", "jobs", "--group", "workers", "--wait-ms", "500"],
        b"",
    )
    .ok();
    assert!(again.stdout.is_empty(), "redelivered: {}", again.stdout);
    assert_eq!(describe_json(&broker, "jobs", "workers")[0]["lag"], 0);
}

#[test]
fn consume_help_says_no_ack_messages_come_back_counted() {
    let (_tmp, broker) = start_broker();
    let help = pigeon(&broker, &["consume", "--help"], b"").ok().stdout;
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("delivered again, counted as an attempt"),
        "{help}"
    );
}
