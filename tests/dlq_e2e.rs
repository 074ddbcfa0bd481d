//! End-to-end tests of dead letters with an identity, of the dead-letter
//! topic's protection, of groups that cannot open at start, and of
//! redrive, through a real `pigeon-broker` and the `pigeon` CLI (the Rust
//! `Admin` for deletes, whose CLI flags another change reworks).
//!
//! Every `pigeon` run is bounded by [`RUN_TIMEOUT`]; commands stop by
//! themselves (`--wait-ms`), never after a fixed sleep.

use std::time::Duration;

use pigeon_client::client::Client;
use pigeon_client::protocol::ErrorCode;
use pigeon_suite::{Broker, http_get, process, runtime, wait_until};
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
        self
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// `pigeon --broker ADDR ARGS` with `stdin` (not a terminal).
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

/// Produces one message per line of `lines` into `topic`.
fn produce(broker: &Broker, topic: &str, lines: &[String]) {
    let mut input = lines.join("\n");
    input.push('\n');
    pigeon(broker, &["produce", topic], input.as_bytes()).ok();
}

fn create_group(broker: &Broker, topic: &str, group: &str) {
    pigeon(
        broker,
        &[
            "group",
            "create",
            group,
            "--topic",
            topic,
            "--max-deliveries",
            "1",
        ],
        b"",
    )
    .ok();
}

/// Consumes everything `group` has, rejecting each message (exit 65).
fn reject_all(broker: &Broker, topic: &str, group: &str) {
    pigeon(
        broker,
        &[
            "consume",
            topic,
            "--group",
            group,
            "--exec",
            "exit 65",
            "--wait-ms",
            "1000",
        ],
        b"",
    )
    .ok();
}

/// The records of `group`'s dead-letter topic, as `dlq list --json` prints them.
fn parked(broker: &Broker, topic: &str, group: &str) -> Vec<Value> {
    pigeon(
        broker,
        &["dlq", "list", topic, "--group", group, "--json"],
        b"",
    )
    .ok()
    .json_lines()
}

/// `pigeon read TOPIC --json`.
fn read(broker: &Broker, topic: &str) -> Vec<Value> {
    pigeon(broker, &["read", topic, "--json"], b"")
        .ok()
        .json_lines()
}

fn header<'v>(record: &'v Value, name: &str) -> &'v str {
    record["headers"][name].as_str().unwrap_or_default()
}

/// Runs `f` with an admin client of `broker`.
fn with_admin<T>(broker: &Broker, f: impl AsyncFnOnce(pigeon_client::client::Admin) -> T) -> T {
    runtime().block_on(async {
        let client = Client::connect(broker.addr.to_string())
            .await
            .expect("connect");
        f(client.admin()).await
    })
}

#[test]
fn a_group_recreated_on_a_recreated_topic_parks_its_new_dead_letters() {
    let (_tmp, broker) = start_broker();
    pigeon(&broker, &["topic", "create", "orders"], b"").ok();
    produce(&broker, "orders", &["first life".into()]);
    create_group(&broker, "orders", "billing");
    reject_all(&broker, "orders", "billing");
    assert_eq!(parked(&broker, "orders", "billing").len(), 1);

    // The topic goes (with its group; the DLQ topic stays), and comes back
    // with a new group of the same name: its first message has offset 0
    // again, like the parked copy.
    with_admin(&broker, async |admin| {
        admin.delete_topic("orders").await.expect("delete topic")
    });
    pigeon(&broker, &["topic", "create", "orders"], b"").ok();
    produce(&broker, "orders", &["second life".into()]);
    create_group(&broker, "orders", "billing");
    reject_all(&broker, "orders", "billing");

    let copies = parked(&broker, "orders", "billing");
    let values: Vec<&str> = copies
        .iter()
        .map(|r| r["value"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        values,
        ["first life", "second life"],
        "the new dead letter is parked, not taken for the old copy"
    );
    for copy in &copies {
        assert_eq!(header(copy, "pigeon.dlq.source-offset"), "0");
    }
    assert_ne!(
        header(&copies[0], "pigeon.dlq.group-created-ms"),
        header(&copies[1], "pigeon.dlq.group-created-ms"),
        "each copy names its group's incarnation"
    );
    assert_ne!(
        header(&copies[0], "pigeon.dlq.source-topic-created-ms"),
        header(&copies[1], "pigeon.dlq.source-topic-created-ms"),
        "and its topic's"
    );
}

#[test]
fn deleting_a_live_groups_dead_letter_topic_is_refused_until_the_group_is_deleted() {
    let (_tmp, broker) = start_broker();
    pigeon(&broker, &["topic", "create", "orders"], b"").ok();
    create_group(&broker, "orders", "billing");
    let refused = with_admin(&broker, async |admin| {
        admin.delete_topic("orders.billing.dlq").await
    });
    let err = refused.expect_err("the DLQ topic of a live group cannot be deleted");
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("billing")
            && message.contains("orders")
            && message.contains("pigeon group delete billing --topic orders"),
        "the error names the group and what to do: {message}"
    );
    pigeon(&broker, &["topic", "describe", "orders.billing.dlq"], b"").ok();
    with_admin(&broker, async |admin| {
        admin
            .delete_group("orders", "billing")
            .await
            .expect("delete the group");
        admin
            .delete_topic("orders.billing.dlq")
            .await
            .expect("then its DLQ topic can go");
    });
}

#[test]
fn a_group_cannot_take_another_groups_dead_letter_topic_and_redrive_moves_its_own() {
    let (_tmp, broker) = start_broker();
    // Topic `a` with group `b.c` and topic `a.b` with group `c` would share
    // the dead-letter topic `a.b.c.dlq`: the second group is refused (the
    // redrive of a DLQ that older versions let two groups share still
    // moves only the group's own copies: groups::redrive's unit tests).
    for topic in ["a", "a.b"] {
        pigeon(&broker, &["topic", "create", topic], b"").ok();
    }
    produce(&broker, "a", &["a0".into(), "a1".into()]);
    create_group(&broker, "a", "b.c");
    let refused = pigeon(&broker, &["group", "create", "c", "--topic", "a.b"], b"");
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("already the dead-letter topic of group b.c of topic a"),
        "{}",
        refused.stderr
    );
    reject_all(&broker, "a", "b.c");
    assert_eq!(parked(&broker, "a", "b.c").len(), 2);
    let moved = pigeon(&broker, &["dlq", "redrive", "a", "--group", "b.c"], b"").ok();
    assert!(
        moved.stdout.starts_with("redrove 2 messages"),
        "{}",
        moved.stdout
    );
    let values: Vec<String> = read(&broker, "a")
        .iter()
        .map(|r| r["value"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(values, ["a0", "a1", "a0", "a1"]);
}

#[test]
fn a_group_takes_no_topic_of_its_dead_letter_name_that_is_not_its_own() {
    let (_tmp, broker) = start_broker();
    for topic in ["orders", "orders.billing.dlq", "a", "a.b", "t", "t.g.dlq"] {
        pigeon(&broker, &["topic", "create", topic], b"").ok();
    }
    // A client's topic that happens to have the dead-letter name, with
    // records of its own: dead letters must not be mixed into it.
    produce(&broker, "orders.billing.dlq", &["not a dead letter".into()]);
    let refused = pigeon(
        &broker,
        &["group", "create", "billing", "--topic", "orders"],
        b"",
    );
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("orders.billing.dlq")
            && refused.stderr.contains("not dead letters of this group")
            && refused
                .stderr
                .contains("pigeon topic delete orders.billing.dlq"),
        "{}",
        refused.stderr
    );
    // Another group's dead-letter topic stays after that group is deleted:
    // a group whose dead-letter name is the same does not take it.
    create_group(&broker, "a.b", "c");
    pigeon(&broker, &["group", "delete", "c", "--topic", "a.b"], b"").ok();
    let refused = pigeon(&broker, &["group", "create", "b.c", "--topic", "a"], b"");
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("holds the dead letters of group c of topic a.b"),
        "{}",
        refused.stderr
    );
    // Once the client's topic is gone the group gets a dead-letter topic
    // of its own, and parks its dead letters there.
    pigeon(
        &broker,
        &["topic", "delete", "orders.billing.dlq", "--yes"],
        b"",
    )
    .ok();
    produce(&broker, "orders", &["o0".into()]);
    create_group(&broker, "orders", "billing");
    reject_all(&broker, "orders", "billing");
    let values: Vec<String> = read(&broker, "orders.billing.dlq")
        .iter()
        .map(|r| r["value"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(values, ["o0"]);
    // An empty topic of the name holds nothing to mix up: it is taken.
    create_group(&broker, "t", "g");
}

#[test]
fn redrive_of_more_than_a_page_asks_for_yes_when_stdin_is_not_a_terminal() {
    let (_tmp, broker) = start_broker();
    pigeon(&broker, &["topic", "create", "orders"], b"").ok();
    let lines: Vec<String> = (0..300).map(|i| format!("order {i}")).collect();
    produce(&broker, "orders", &lines);
    create_group(&broker, "orders", "billing");
    reject_all(&broker, "orders", "billing");
    assert_eq!(parked(&broker, "orders", "billing").len(), 300);

    let refused = pigeon(
        &broker,
        &["dlq", "redrive", "orders", "--group", "billing"],
        b"y\n",
    );
    assert_ne!(refused.code, Some(0), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("300 messages") && refused.stderr.contains("--yes"),
        "the refusal says how many and how to confirm: {}",
        refused.stderr
    );
    assert_eq!(read(&broker, "orders").len(), 300, "nothing moved");

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
    assert!(
        dry.stdout.starts_with("would redrive 300 messages"),
        "a dry run needs no confirmation: {}",
        dry.stdout
    );
    let one_page = pigeon(
        &broker,
        &[
            "dlq", "redrive", "orders", "--group", "billing", "--max", "100",
        ],
        b"",
    )
    .ok();
    assert!(
        one_page.stdout.starts_with("redrove 100 messages"),
        "a page or less needs no confirmation: {}",
        one_page.stdout
    );
    let rest = pigeon(
        &broker,
        &["dlq", "redrive", "orders", "--group", "billing", "--yes"],
        b"",
    )
    .ok();
    assert!(
        rest.stdout.starts_with("redrove 200 messages"),
        "{}",
        rest.stdout
    );
    assert!(
        rest.stdout.contains("partition 0: dlq offsets 100..300"),
        "offset ranges, not every message: {}",
        rest.stdout
    );
    let records = read(&broker, "orders");
    assert_eq!(records.len(), 600);
    let redriven: Vec<&str> = records[300..]
        .iter()
        .map(|r| r["value"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        redriven,
        lines.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[test]
fn a_group_whose_topic_is_gone_at_start_is_reported_broken_not_skipped() {
    let (_tmp, mut broker) = start_broker();
    pigeon(&broker, &["topic", "create", "orders"], b"").ok();
    create_group(&broker, "orders", "billing");
    assert_eq!(broker.terminate(), Some(0));
    std::fs::remove_dir_all(broker.data_dir.join("topics").join("orders")).expect("remove");
    broker.restart();

    let described = pigeon(
        &broker,
        &["group", "describe", "billing", "--topic", "orders"],
        b"",
    );
    assert_ne!(described.code, Some(0));
    assert!(
        described.stderr.contains("cannot run")
            && described
                .stderr
                .contains("pigeon group delete billing --topic orders"),
        "the group's error says what is wrong and what to do: {}",
        described.stderr
    );
    assert!(
        broker
            .log_text()
            .contains("group billing of topic orders cannot run"),
        "the start logs it:\n{}",
        broker.log_text()
    );
    let (status, body) = http_get(broker.http, "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("group billing of topic orders"), "{body}");

    with_admin(&broker, async |admin| {
        admin
            .delete_group("orders", "billing")
            .await
            .expect("a broken group can be deleted")
    });
    let (status, body) = http_get(broker.http, "/ready");
    assert_eq!(status, 200, "{body}");
    assert!(
        !broker.data_dir.join("groups/orders/billing").exists(),
        "its state is gone"
    );
}

#[test]
fn a_group_whose_dead_letter_topic_is_gone_at_start_gets_it_back() {
    let (_tmp, mut broker) = start_broker();
    pigeon(&broker, &["topic", "create", "orders"], b"").ok();
    produce(&broker, "orders", &["poison".into()]);
    create_group(&broker, "orders", "billing");
    assert_eq!(broker.terminate(), Some(0));
    std::fs::remove_dir_all(broker.data_dir.join("topics").join("orders.billing.dlq"))
        .expect("remove");
    broker.restart();
    assert!(
        broker
            .log_text()
            .contains("created the missing dead-letter topic orders.billing.dlq"),
        "{}",
        broker.log_text()
    );
    reject_all(&broker, "orders", "billing");
    wait_until(Duration::from_secs(30), "the dead letter parked", || {
        parked(&broker, "orders", "billing").len() == 1
    });
}

#[test]
fn a_v0_redrive_request_is_still_answered_message_by_message() {
    use pigeon_client::protocol::{RedriveRequest, Request, Response};
    use pigeon_suite::raw::RawClient;
    let (_tmp, broker) = start_broker();
    pigeon(&broker, &["topic", "create", "orders"], b"").ok();
    produce(&broker, "orders", &["a".into(), "b".into()]);
    create_group(&broker, "orders", "billing");
    reject_all(&broker, "orders", "billing");
    let answer = runtime().block_on(async {
        let mut raw = RawClient::connect(broker.addr).await;
        let request = RedriveRequest {
            topic: "orders".into(),
            group: "billing".into(),
            max: 0,
            dry_run: false,
            rate_per_sec: 0,
        };
        raw.call_version(Request::from(request), 0).await
    });
    let pigeon_client::protocol::ResponseBody::Ok(Response::Redrive(moved)) = answer else {
        panic!("{answer:?}");
    };
    let pairs: Vec<(u64, u64)> = moved
        .redriven
        .iter()
        .map(|m| (m.dlq_offset, m.new_offset))
        .collect();
    assert_eq!(pairs, [(0, 2), (1, 3)]);
}

/// Rejects `deliveries` (dead-letters them at once).
async fn reject(
    c: &mut pigeon_suite::raw::RawClient,
    consumer: u64,
    deliveries: &[pigeon_client::protocol::Delivery],
) {
    use pigeon_client::protocol::*;
    let items = deliveries
        .iter()
        .map(|d| SettleItem {
            action: SettleAction::Reject,
            reason: "poison".into(),
            ..SettleItem::ack(d.partition, d.offset, d.attempt)
        })
        .collect();
    c.settle_ok("big", "g", consumer, items).await;
}

#[test]
fn message_show_reads_a_bounded_part_of_a_large_dead_letter_topic_and_says_where_to_read_on() {
    use pigeon_client::protocol::*;
    let (_tmp, broker) = start_broker();
    let value = vec![b'b'; 64 * 1024];
    let rt = runtime();
    let (state_of_first, state_of_second) = rt.block_on(async {
        let mut c = pigeon_suite::raw::RawClient::connect(broker.addr).await;
        c.create_topic("big", 1).await;
        let create = CreateGroupRequest {
            topic: "big".into(),
            group: "g".into(),
            settings: GroupSettings::default(),
        };
        c.ok(create.into()).await;
        // Offset 0 first, then 80 messages of 64 KiB (5 MiB).
        let ack = c.produce("big", 0, &[b"first"]).await;
        assert_eq!(ack.error_code, ErrorCode::None);
        for _ in 0..10 {
            let values: Vec<&[u8]> = (0..8).map(|_| value.as_slice()).collect();
            let ack = c.produce("big", 0, &values).await;
            assert_eq!(ack.error_code, ErrorCode::None, "{}", ack.error_message);
        }
        let consumer = c.join_group("big", "g", "c").await;
        // Hold the first message while the 80 others are dead-lettered,
        // then dead-letter it: its copy comes after 5 MiB of others, all
        // appended after it was.
        let first = c.receive("big", "g", consumer, 1, 5000).await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].offset, 0);
        let mut rejected = 0;
        while rejected < 80 {
            let got = c.receive("big", "g", consumer, 16, 5000).await;
            assert!(!got.is_empty(), "the group delivers the 80 messages");
            rejected += got.len();
            reject(&mut c, consumer, &got).await;
        }
        reject(&mut c, consumer, &first).await;
        let state = |offset: u64| MessageStateRequest {
            topic: "big".into(),
            group: "g".into(),
            partition: 0,
            offset,
        };
        // The copies are written by the group's engine; the first
        // message is settled once its copy (the last) is written.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let first = loop {
            match c.ok(state(0).into()).await {
                Response::MessageState(s) if s.state == MessageState::Settled => break s,
                other => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "not settled: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // A copy within the bound is found.
        let second = match c.ok(state(1).into()).await {
            Response::MessageState(s) => s,
            other => panic!("{other:?}"),
        };
        (first, second)
    });
    assert_eq!(state_of_second.state, MessageState::DeadLettered);
    assert_eq!(
        state_of_second.reason, "rejected: poison",
        "{state_of_second:?}"
    );
    let reason = &state_of_first.reason;
    println!("message show of offset 0: {reason}");
    assert!(
        reason.contains("pigeon read big.g.dlq --partition 0 --from-offset")
            && reason.contains("pigeon.dlq.source-offset = 0"),
        "{reason}"
    );
    // The search read about 4 MiB (plus at most one 64 KiB copy), not the
    // whole 5 MiB topic: it stopped before the copy at DLQ offset 80.
    let next: u64 = reason
        .rsplit("--from-offset ")
        .next()
        .and_then(|rest| rest.split('`').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset to read on from: {reason}"));
    assert!((55..=80).contains(&next), "{reason}");
    // Reading on from there finds the copy.
    let on = pigeon(
        &broker,
        &[
            "read",
            "big.g.dlq",
            "--partition",
            "0",
            "--from-offset",
            &next.to_string(),
            "--json",
        ],
        b"",
    )
    .ok()
    .json_lines();
    assert!(
        on.iter()
            .any(|r| header(r, "pigeon.dlq.source-offset") == "0"),
        "the copy is where the answer said"
    );
    // The CLI shows it.
    let shown = pigeon(
        &broker,
        &[
            "message",
            "show",
            "big",
            "--group",
            "g",
            "--partition",
            "0",
            "--offset",
            "0",
        ],
        b"",
    )
    .ok();
    assert!(
        shown.stdout.contains("settled (acked, or dead-lettered"),
        "{}",
        shown.stdout
    );
}
