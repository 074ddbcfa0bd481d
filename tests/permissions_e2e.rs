//! Permissions end to end, through the real binaries and the client
//! library: users do what their rules allow and nothing else; refusals
//! name the user, the operation and the resource; a topic listing shows
//! only readable topics; a DLQ topic is covered by its source's rules;
//! names beginning with `__` are reserved; a user's producer names are its
//! own (another user registering the same name does not fence it).
//!
//! Every command is bounded; waits poll with a deadline.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pigeon_client::client::{
    Client, ClientConfig, Credentials, Producer, ProducerConfig, ProducerRecord,
};
use pigeon_suite::process::{Output, pigeon_command, run};
use pigeon_suite::{Broker, binary, runtime};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "the same password for the test users";

/// The users file lines (`password_hash`, `scram_sha256`) of [`PASSWORD`].
fn credentials_lines() -> String {
    let mut command = Command::new(binary("pigeon-broker"));
    command.args(["hash-password", "--toml"]);
    let out = run(command, format!("{PASSWORD}\n").as_bytes(), RUN_TIMEOUT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    String::from_utf8(out.stdout).expect("utf-8")
}

fn start(dir: &Path) -> Broker {
    let secret = credentials_lines();
    let user = |name: &str, allow: &str| {
        format!("[[users]]\nname = \"{name}\"\n{secret}allow = [{allow}]\n\n")
    };
    let text = [
        user("admin", r#"{ topics = "*", ops = ["all"] }"#),
        user(
            "billing",
            r#"{ topics = "orders*", ops = ["produce", "read"] }, { topics = "orders", groups = "billing*", ops = ["consume"] }"#,
        ),
        user("reader", r#"{ topics = "orders", ops = ["read"] }"#),
        user("alice", r#"{ topics = "shared", ops = ["produce", "read"] }"#),
        user("bob", r#"{ topics = "shared", ops = ["produce", "read"] }"#),
    ]
    .concat();
    let users = dir.join("users.toml");
    std::fs::write(&users, text).expect("users");
    let users = users.display().to_string();
    Broker::start(&dir.join("data"), &["--users", &users])
}

/// `pigeon ARGS` as `user`.
fn pigeon(broker: &Broker, user: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = pigeon_command(broker.addr);
    command
        .env_remove("PIGEON_TLS_CA")
        .env("PIGEON_USER", user)
        .env("PIGEON_PASSWORD", PASSWORD)
        .args(args);
    run(command, stdin, RUN_TIMEOUT)
}

fn ok(out: Output) -> String {
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    String::from_utf8(out.stdout).expect("utf-8")
}

fn refused(out: Output, message: &str) {
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(message),
        "expected {message:?} in: {}",
        out.stderr
    );
}

#[test]
fn users_do_what_their_rules_allow_and_refusals_say_who_what_and_where() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = start(tmp.path());
    for topic in ["orders", "payments", "shared"] {
        ok(pigeon(&broker, "admin", &["topic", "create", topic], b""));
    }
    for group in ["billing", "shipping"] {
        ok(pigeon(
            &broker,
            "admin",
            &["group", "create", group, "--topic", "orders"],
            b"",
        ));
    }
    // billing: produce and read orders*, consume orders in billing* groups.
    ok(pigeon(
        &broker,
        "billing",
        &["produce", "orders"],
        b"order 1\norder 2\n",
    ));
    // (pigeon produce describes the topic first: with no rule on it at all,
    // that is what is refused.)
    refused(
        pigeon(&broker, "billing", &["produce", "payments"], b"nope\n"),
        "user billing may not read topic payments",
    );
    let consumed = ok(pigeon(
        &broker,
        "billing",
        &["consume", "orders", "--group", "billing", "--max", "1"],
        b"",
    ));
    assert!(consumed.contains("order 1"), "{consumed}");
    refused(
        pigeon(
            &broker,
            "billing",
            &["consume", "orders", "--group", "shipping", "--max", "1"],
            b"",
        ),
        "user billing may not consume from group shipping of topic orders",
    );
    refused(
        pigeon(&broker, "billing", &["topic", "delete", "orders"], b""),
        "user billing may not administer topic orders",
    );
    refused(
        pigeon(
            &broker,
            "billing",
            &[
                "group",
                "seek",
                "billing",
                "--topic",
                "orders",
                "--earliest",
            ],
            b"",
        ),
        "user billing may not administer group billing of topic orders",
    );
    // A listing shows only what the user may read.
    let listed = ok(pigeon(&broker, "billing", &["topic", "list"], b""));
    assert!(
        listed.contains("orders") && !listed.contains("payments") && !listed.contains("shared"),
        "{listed}"
    );
    // reader may read orders, and (through its source) the DLQ of orders'
    // groups, but no other topic.
    ok(pigeon(&broker, "reader", &["read", "orders"], b""));
    ok(pigeon(
        &broker,
        "reader",
        &["dlq", "list", "orders", "--group", "billing"],
        b"",
    ));
    refused(
        pigeon(&broker, "reader", &["read", "payments"], b""),
        "user reader may not read topic payments",
    );
    // (An idempotent producer registers its name first, which needs
    // produce on some topic.)
    refused(
        pigeon(&broker, "reader", &["produce", "orders"], b"x\n"),
        "user reader may not register producer",
    );
    // Names beginning with __ are the broker's, even for an admin.
    refused(
        pigeon(&broker, "admin", &["topic", "create", "__mine"], b""),
        "names beginning with __ are reserved for the broker",
    );
    assert!(broker.log_text().contains("refused"), "refusals are logged");
    // The load generator authenticates every one of its connections.
    ok(pigeon(
        &broker,
        "admin",
        &["bench", "e2e", "--messages", "2000", "--json"],
        b"",
    ));
}

fn client_as(user: &str) -> ClientConfig {
    ClientConfig {
        credentials: Some(Credentials::new(user, PASSWORD)),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    }
}

fn producer(client: Client) -> Producer {
    let config = ProducerConfig {
        producer_name: Some("svc".into()),
        ..ProducerConfig::default()
    };
    Producer::new(client, config)
}

#[test]
fn another_user_registering_the_same_producer_name_does_not_fence_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = start(tmp.path());
    ok(pigeon(
        &broker,
        "admin",
        &["topic", "create", "shared"],
        b"",
    ));
    runtime().block_on(async {
        let addr = broker.addr.to_string();
        let alice = Client::connect_with(addr.clone(), client_as("alice"))
            .await
            .expect("alice");
        let bob = Client::connect_with(addr, client_as("bob"))
            .await
            .expect("bob");
        let alices = producer(alice);
        alices
            .send("shared", ProducerRecord::new("a1"))
            .await
            .expect("alice sends");
        // bob registers "svc" too: in his own name, a producer of his own.
        let bobs = producer(bob);
        bobs.send("shared", ProducerRecord::new("b1"))
            .await
            .expect("bob sends");
        alices
            .send("shared", ProducerRecord::new("a2"))
            .await
            .expect("alice is not fenced by bob's registration");
    });
    let read = ok(pigeon(&broker, "alice", &["read", "shared"], b""));
    assert_eq!(read.lines().count(), 3, "{read}");
}

/// The audit records in `__audit`, as JSON objects (read as `admin`).
fn audit_records(broker: &Broker) -> Vec<serde_json::Value> {
    let out = ok(pigeon(broker, "admin", &["read", "__audit", "--json"], b""));
    out.lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("a --json line");
            let value = record["value"].as_str().expect("a text value");
            serde_json::from_str(value).expect("an audit record is JSON")
        })
        .collect()
}

#[test]
fn the_audit_trail_records_admin_operations_failed_logins_and_refusals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = start(tmp.path());
    ok(pigeon(
        &broker,
        "admin",
        &["topic", "create", "orders"],
        b"",
    ));
    ok(pigeon(
        &broker,
        "admin",
        &["group", "create", "billing", "--topic", "orders"],
        b"",
    ));
    refused(
        pigeon(&broker, "billing", &["topic", "delete", "orders"], b""),
        "may not administer topic orders",
    );
    let mut command = pigeon_command(broker.addr);
    command
        .env("PIGEON_USER", "mallory")
        .env("PIGEON_PASSWORD", "guess")
        .args(["topic", "list"]);
    refused(
        run(command, b"", RUN_TIMEOUT),
        "authentication failed for user mallory",
    );
    // __audit is the broker's: readable under the rules, never written.
    refused(
        pigeon(&broker, "admin", &["produce", "__audit"], b"forged\n"),
        "reserved for the broker",
    );
    refused(
        pigeon(&broker, "admin", &["topic", "delete", "__audit"], b""),
        "reserved for the broker",
    );
    refused(
        pigeon(&broker, "billing", &["read", "__audit"], b""),
        "user billing may not read topic __audit",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = audit_records(&broker);
        let failed_login = records.iter().any(|r| r["op"] == "authenticate");
        if failed_login && records.iter().any(|r| r["result"] == "refused")
            || std::time::Instant::now() > deadline
        {
            break records;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for record in &records {
        let keys: Vec<&str> = record
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        for field in ["time", "user", "peer", "op", "resource", "result"] {
            assert!(keys.contains(&field), "{field} missing in {record}");
        }
        assert!(
            record["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{record}"
        );
        assert!(
            record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{record}"
        );
    }
    let find = |op: &str, user: &str, result: &str| {
        records
            .iter()
            .find(|r| r["op"] == op && r["user"] == user && r["result"] == result)
            .unwrap_or_else(|| panic!("no {op} by {user} ({result}) in {records:#?}"))
    };
    assert_eq!(
        find("topic create", "admin", "ok")["resource"],
        "topic:orders"
    );
    assert_eq!(
        find("group create", "admin", "ok")["resource"],
        "group:orders/billing"
    );
    let refusal = find("topic delete", "billing", "refused");
    assert!(
        refusal["reason"]
            .as_str()
            .is_some_and(|r| r.contains("user billing")),
        "{refusal}"
    );
    assert_eq!(
        find("authenticate", "(unauthenticated)", "failed")["resource"],
        "user:mallory"
    );
    assert_eq!(
        find("topic delete", "admin", "failed")["resource"],
        "topic:__audit"
    );
    let text = serde_json::to_string(&records).expect("json");
    assert!(
        !text.contains("guess") && !text.contains(PASSWORD),
        "no password in the trail"
    );
}
