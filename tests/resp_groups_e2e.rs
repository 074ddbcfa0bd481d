//! Redis consumer groups over Pigeon groups, end to end against a real
//! `pigeon-broker`: a differential script against a real `redis-server`
//! (skipped with a note when it is not installed; idle times are blanked,
//! they depend on timing), named consumers keeping their pending entries
//! across connections, durable delivery counts across `kill -9`, and
//! groups on a topic of several partitions. Real client libraries in
//! other languages are in `resp_clients_e2e.rs`.

use std::process::Command;

use pigeon_suite::Broker;
use pigeon_suite::resp::{RedisServer, RespClient, Side, Value, differential};

fn start_pigeon() -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&dir.path().join("data"), &[]);
    (dir, broker)
}

const SCRIPT: &[&[&str]] = &[
    &["XGROUP", "CREATE", "s", "g", "$"],
    &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
    &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
    &["XGROUP", "FOO"],
    &["XGROUP", "CREATE", "s"],
    &["XADD", "s", "1-1", "a", "1"],
    &["XADD", "s", "2-1", "b", "2"],
    &["XADD", "s", "3-1", "c", "3"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c1",
        "COUNT",
        "1",
        "STREAMS",
        "s",
        ">",
    ],
    &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", "0"],
    &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", "1-1"],
    &["XPENDING", "s", "g"],
    &["XPENDING", "s", "g", "-", "+", "10"],
    &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", ">"],
    &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", ">"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c2",
        "BLOCK",
        "100",
        "STREAMS",
        "s",
        ">",
    ],
    &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", ">", ">"],
    &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", "$"],
    &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", "x"],
    &["XREADGROUP", "GROUP", "nog", "c2", "STREAMS", "s", ">"],
    &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "nos", ">"],
    &["XPENDING", "s", "g"],
    &["XPENDING", "s", "nog"],
    &["XACK", "s", "g", "1-1", "9-9"],
    &["XACK", "s", "g", "1-1"],
    &["XACK", "s", "g", "x"],
    &["XACK", "s", "nog", "2-1"],
    &["XPENDING", "s", "g", "-", "+", "10", "c2"],
    &["XPENDING", "s", "g", "IDLE", "0", "-", "+", "10"],
    &["XPENDING", "s", "g", "(2-1", "+", "10"],
    &["XCLAIM", "s", "g", "c3", "x", "2-1"],
    &["XCLAIM", "s", "g", "c3", "0", "2-1", "FOO"],
    &["XCLAIM", "s", "g", "c3", "0", "9-9"],
    &["XCLAIM", "s", "g", "c3", "0", "2-1"],
    &["XCLAIM", "s", "g", "c3", "0", "2-1", "JUSTID"],
    &["XCLAIM", "s", "g", "c3", "3600000", "2-1"],
    &["XPENDING", "s", "g", "-", "+", "10"],
    &["XAUTOCLAIM", "s", "g", "c1", "0", "0", "COUNT", "1"],
    &["XAUTOCLAIM", "s", "g", "c1", "0", "0", "COUNT", "0"],
    &["XAUTOCLAIM", "s", "g", "c1", "0", "0", "JUSTID"],
    &["XPENDING", "s", "g"],
    &["XINFO", "CONSUMERS", "s", "g"],
    &["XINFO", "CONSUMERS", "s", "nog"],
    &["XINFO", "FOO"],
    &["XGROUP", "CREATECONSUMER", "s", "g", "c9"],
    &["XGROUP", "CREATECONSUMER", "s", "g", "c9"],
    &["XGROUP", "DELCONSUMER", "s", "g", "c9"],
    &["XGROUP", "DELCONSUMER", "s", "g", "nobody"],
    &["XINFO", "GROUPS", "s"],
    &["XADD", "s", "4-1", "d", "4"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c4",
        "NOACK",
        "STREAMS",
        "s",
        ">",
    ],
    &["XPENDING", "s", "g", "-", "+", "10", "c4"],
    &["XGROUP", "CREATE", "s", "g2", "0"],
    &["XREADGROUP", "GROUP", "g2", "c1", "STREAMS", "s", ">"],
    &["XGROUP", "SETID", "s", "g2", "2-1"],
    &["XGROUP", "SETID", "s", "nog", "0"],
    &["XGROUP", "DESTROY", "s", "g2"],
    &["XGROUP", "DESTROY", "s", "g2"],
    &["MULTI"],
    &["XADD", "s", "5-1", "e", "5"],
    &["XLEN", "s"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c1",
        "BLOCK",
        "0",
        "STREAMS",
        "s",
        ">",
    ],
    &["EXEC"],
    &["EXEC"],
    &["DISCARD"],
    &["MULTI"],
    &["MULTI"],
    &["XLEN"],
    &["EXEC"],
    &["MULTI"],
    &["XLEN", "s"],
    &["DISCARD"],
    &["HELLO", "3"],
    &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", "0"],
    &["XINFO", "CONSUMERS", "s", "g"],
];

/// Blanks what depends on timing: idle times, HELLO's server fields.
fn blank_times(command: &[&str], reply: &mut Value) {
    match command[0] {
        "HELLO" => *reply = Value::Null,
        "XPENDING" if command.len() > 3 => *reply = blank_pending_idle(reply),
        "XINFO" => *reply = blank_idle_fields(reply),
        _ => {}
    }
}

/// `XPENDING` rows `[id, consumer, idle, count]` with idle 0.
fn blank_pending_idle(reply: &Value) -> Value {
    let rows = reply.items().iter().map(|row| match row {
        Value::Array(fields) if fields.len() == 4 => {
            let mut fields = fields.clone();
            fields[2] = Value::Int(0);
            Value::Array(fields)
        }
        other => other.clone(),
    });
    match reply {
        Value::Array(_) => Value::Array(rows.collect()),
        other => other.clone(),
    }
}

/// Every `idle` field (in flat arrays and maps) set to 0.
fn blank_idle_fields(value: &Value) -> Value {
    let idle = Value::bulk("idle");
    match value {
        Value::Array(items) => {
            let mut out: Vec<Value> = items.iter().map(blank_idle_fields).collect();
            for i in 1..out.len() {
                if out[i - 1] == idle {
                    out[i] = Value::Int(0);
                }
            }
            Value::Array(out)
        }
        Value::Map(pairs) => Value::Map(
            pairs
                .iter()
                .map(|(k, v)| {
                    let v = if *k == idle {
                        Value::Int(0)
                    } else {
                        blank_idle_fields(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn group_commands_answer_as_redis_does() {
    let Some(redis) = RedisServer::start("group_commands_answer_as_redis_does") else {
        return;
    };
    let (_dir, pigeon) = start_pigeon();
    let mut expected = Side::new(redis.addr);
    let mut got = Side::new(pigeon.resp.expect("the RESP listener"));
    differential(&mut expected, &mut got, SCRIPT, |command, redis, pigeon| {
        blank_times(command, redis);
        blank_times(command, pigeon);
    });
}

#[test]
fn a_named_consumer_keeps_its_pending_entries_across_connections() {
    let (_dir, pigeon) = start_pigeon();
    let addr = pigeon.resp.expect("resp");
    let mut first = RespClient::connect(addr);
    first.cmd(&["XGROUP", "CREATE", "jobs", "workers", "$", "MKSTREAM"]);
    first.cmd(&["XADD", "jobs", "*", "value", "job-1"]);
    let got = first.cmd(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        "alice",
        "STREAMS",
        "jobs",
        ">",
    ]);
    let id = got.items()[0].items()[1].items()[0].items()[0]
        .text()
        .expect("id");
    drop(first);
    // Another consumer gets nothing: the entry stays alice's.
    let mut other = RespClient::connect(addr);
    let none = other.cmd(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        "bob",
        "STREAMS",
        "jobs",
        ">",
    ]);
    assert_eq!(none, Value::Null);
    let mut again = RespClient::connect(addr);
    let history = again.cmd(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        "alice",
        "STREAMS",
        "jobs",
        "0",
    ]);
    assert_eq!(
        history.items()[0].items()[1].items()[0].items()[0].text(),
        Some(id.clone())
    );
    let pending = again.cmd(&["XPENDING", "jobs", "workers", "-", "+", "10"]);
    assert_eq!(pending.items()[0].items()[1], Value::bulk("alice"));
    assert_eq!(
        pending.items()[0].items()[3],
        Value::Int(2),
        "the history read was a second delivery"
    );
    assert_eq!(again.cmd(&["XACK", "jobs", "workers", &id]), Value::Int(1));
    assert_eq!(
        again.cmd(&["XPENDING", "jobs", "workers"]).items()[0],
        Value::Int(0)
    );
    let info = again.cmd(&["XINFO", "STREAM", "jobs"]);
    assert_eq!(
        info.items()[..2],
        [Value::bulk("length"), Value::Int(1)],
        "{info:?}"
    );
    let full = again.cmd(&["XINFO", "STREAM", "jobs", "FULL"]);
    assert!(
        matches!(&full, Value::Error(e) if e.contains("not supported")),
        "{full:?}"
    );
    // The group is a Pigeon group, with the settings that behave as Redis.
    let (code, described) = {
        let out = Command::new(pigeon_suite::binary("pigeon"))
            .args([
                "--broker",
                &pigeon.addr.to_string(),
                "group",
                "describe",
                "workers",
                "--topic",
                "jobs",
            ])
            .output()
            .expect("pigeon group describe");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{described}");
    assert!(described.contains("4294967295"), "{described}");
}

#[test]
fn acked_entries_stay_acked_and_delivery_counts_survive_kill_9() {
    let (_dir, mut pigeon) = start_pigeon();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    c.cmd(&["XGROUP", "CREATE", "orders", "billing", "0", "MKSTREAM"]);
    for n in 0..4 {
        c.cmd(&["XADD", "orders", "*", "value", &format!("order-{n}")]);
    }
    let got = c.cmd(&[
        "XREADGROUP",
        "GROUP",
        "billing",
        "w1",
        "STREAMS",
        "orders",
        ">",
    ]);
    let ids: Vec<String> = got.items()[0].items()[1]
        .items()
        .iter()
        .map(|e| e.items()[0].text().expect("id"))
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(
        c.cmd(&["XACK", "orders", "billing", &ids[0], &ids[1]]),
        Value::Int(2)
    );
    pigeon.kill();
    pigeon.restart();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    assert_eq!(
        c.cmd(&["XLEN", "orders"]),
        Value::Int(4),
        "no entry is lost"
    );
    let again = c.cmd(&[
        "XREADGROUP",
        "GROUP",
        "billing",
        "w1",
        "STREAMS",
        "orders",
        ">",
    ]);
    let redelivered: Vec<String> = again.items()[0].items()[1]
        .items()
        .iter()
        .map(|e| e.items()[0].text().expect("id"))
        .collect();
    // Acks are journaled lazily: a crash may deliver the last acked ones
    // again, never lose the pending ones.
    assert!(redelivered.ends_with(&ids[2..]), "{redelivered:?} {ids:?}");
    let pending = c.cmd(&["XPENDING", "orders", "billing", "-", "+", "10"]);
    let counts: Vec<(String, Value)> = pending
        .items()
        .iter()
        .map(|row| (row.items()[0].text().expect("id"), row.items()[3].clone()))
        .collect();
    // Delivery counts are the group journal's attempts: a lease it had
    // made durable comes back counted (2); one handed out in its last
    // commit window before the kill comes back with the same attempt
    // number (docs/delivery.md). The kill follows the reads within
    // milliseconds, so either may happen here.
    for id in &ids[2..] {
        assert!(
            counts
                .iter()
                .any(|(c, n)| c == id && matches!(n, Value::Int(1 | 2))),
            "delivery counts are Pigeon's attempts: {counts:?}"
        );
    }
    // Ack what came back although acked before the crash; after a clean
    // stop every ack is durable: exactly the pending ones come back.
    let mut ack = vec!["XACK", "orders", "billing"];
    ack.extend(
        redelivered
            .iter()
            .map(String::as_str)
            .filter(|id| !ids[2..].iter().any(|p| p == id)),
    );
    if ack.len() > 3 {
        c.cmd(&ack);
    }
    pigeon.restart_after_clean_stop();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    let last = c.cmd(&[
        "XREADGROUP",
        "GROUP",
        "billing",
        "w1",
        "STREAMS",
        "orders",
        ">",
    ]);
    let back: Vec<String> = last.items()[0].items()[1]
        .items()
        .iter()
        .map(|e| e.items()[0].text().expect("id"))
        .collect();
    assert_eq!(
        back,
        ids[2..],
        "exactly the unacked entries, after a clean restart"
    );
}

/// The entries of an XREADGROUP reply: (key, [id]) per key, in order.
fn read_keys(reply: &Value) -> Vec<(String, Vec<String>)> {
    reply
        .items()
        .iter()
        .map(|pair| {
            let key = pair.items()[0].text().expect("key");
            let ids = pair.items()[1]
                .items()
                .iter()
                .map(|e| e.items()[0].text().expect("id"))
                .collect();
            (key, ids)
        })
        .collect()
}

fn error_of(reply: Value) -> String {
    match reply {
        Value::Error(text) => text,
        other => panic!("an error, not {other:?}"),
    }
}

#[test]
fn groups_on_a_multi_partition_topic_answer_each_entry_under_its_partition_key() {
    let (_dir, pigeon) = start_pigeon();
    pigeon_suite::runtime().block_on(async {
        let mut client = pigeon_suite::raw::RawClient::connect(pigeon.addr).await;
        client.create_topic("orders", 3).await;
    });
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    let mut ids = Vec::new();
    for p in 0..3 {
        let key = format!("orders#{p}");
        let added: Vec<String> = (0..2)
            .map(|n| {
                let value = format!("p{p}-{n}");
                c.cmd(&["XADD", &key, "*", "value", &value])
                    .text()
                    .expect("id")
            })
            .collect();
        ids.push(added);
    }
    // A group covers the whole topic; a partition key cannot create one.
    assert!(error_of(c.cmd(&["XGROUP", "CREATE", "orders#1", "g", "0"])).contains("whole topic"));
    assert_eq!(
        c.cmd(&["XGROUP", "CREATE", "orders", "g", "0"]),
        Value::Status("OK".into())
    );
    let read = |c: &mut RespClient, consumer: &str, key: &str, id: &str| {
        c.cmd(&[
            "XREADGROUP",
            "GROUP",
            "g",
            consumer,
            "COUNT",
            "100",
            "STREAMS",
            key,
            id,
        ])
    };
    // New entries come from every partition, each under its own key.
    let got = read_keys(&read(&mut c, "w1", "orders", ">"));
    let expected: Vec<(String, Vec<String>)> = (0..3)
        .map(|p| (format!("orders#{p}"), ids[p].clone()))
        .collect();
    assert_eq!(got, expected);
    let refused = error_of(read(&mut c, "w1", "orders#1", ">"));
    assert!(
        refused.contains("read them with the key orders"),
        "{refused}"
    );
    // Entry-level commands need the partition: IDs are per partition.
    let bare = error_of(c.cmd(&["XACK", "orders", "g", &ids[0][0]]));
    assert!(bare.contains("name one as orders#0 to orders#2"), "{bare}");
    assert!(error_of(c.cmd(&["XPENDING", "orders", "g"])).contains("orders#0"));
    assert_eq!(
        c.cmd(&["XACK", "orders#0", "g", &ids[0][0], &ids[0][1]]),
        Value::Int(2)
    );
    let summary = c.cmd(&["XPENDING", "orders#1", "g"]);
    assert_eq!(summary.items()[0], Value::Int(2), "{summary:?}");
    assert_eq!(summary.items()[1], Value::bulk(&ids[1][0]));
    // Claiming, by partition.
    let claimed = c.cmd(&["XCLAIM", "orders#2", "g", "w2", "0", &ids[2][0], "JUSTID"]);
    assert_eq!(claimed, Value::Array(vec![Value::bulk(&ids[2][0])]));
    let auto = c.cmd(&["XAUTOCLAIM", "orders#1", "g", "w2", "0", "0-0", "JUSTID"]);
    assert_eq!(
        auto.items()[1],
        Value::Array(ids[1].iter().map(|id| Value::bulk(id)).collect())
    );
    // History reads: the consumer's pending entries, by partition.
    let history = read_keys(&read(&mut c, "w2", "orders", "0"));
    assert_eq!(
        history,
        vec![
            ("orders#0".to_owned(), vec![]),
            ("orders#1".to_owned(), ids[1].clone()),
            ("orders#2".to_owned(), vec![ids[2][0].clone()]),
        ]
    );
    let one = read_keys(&read(&mut c, "w2", "orders#2", "0"));
    assert_eq!(one, vec![("orders#2".to_owned(), vec![ids[2][0].clone()])]);
    // Figures: the bare key sums the partitions, a partition key is its own.
    let groups = c.cmd(&["XINFO", "GROUPS", "orders"]);
    let fields = groups.items()[0].items();
    assert_eq!(
        fields[4..6],
        [Value::bulk("pending"), Value::Int(4)],
        "{groups:?}"
    );
    let groups = c.cmd(&["XINFO", "GROUPS", "orders#1"]);
    let fields = groups.items()[0].items();
    assert_eq!(
        fields[4..6],
        [Value::bulk("pending"), Value::Int(2)],
        "{groups:?}"
    );
    assert_eq!(
        fields[6..8],
        [Value::bulk("last-delivered-id"), Value::bulk(&ids[1][1])]
    );
    let consumers = c.cmd(&["XINFO", "CONSUMERS", "orders#2", "g"]);
    let pending_of = |consumers: &Value, name: &str| {
        consumers
            .items()
            .iter()
            .find(|c| c.items()[1] == Value::bulk(name))
            .map(|c| c.items()[3].clone())
    };
    assert_eq!(pending_of(&consumers, "w1"), Some(Value::Int(1)));
    assert_eq!(pending_of(&consumers, "w2"), Some(Value::Int(1)));
    // Acks with the key the read answered.
    for (key, entries) in &history {
        if !entries.is_empty() {
            let mut ack = vec!["XACK", key.as_str(), "g"];
            ack.extend(entries.iter().map(String::as_str));
            assert_eq!(c.cmd(&ack), Value::Int(entries.len() as i64));
        }
    }
    assert_eq!(c.cmd(&["XACK", "orders#2", "g", &ids[2][1]]), Value::Int(1));
    for p in 0..3 {
        let key = format!("orders#{p}");
        assert_eq!(c.cmd(&["XPENDING", &key, "g"]).items()[0], Value::Int(0));
    }
    // SETID on one partition replays that partition only.
    assert_eq!(
        c.cmd(&["XGROUP", "SETID", "orders#1", "g", "0"]),
        Value::Status("OK".into())
    );
    let again = read_keys(&read(&mut c, "w3", "orders", ">"));
    assert_eq!(again, vec![("orders#1".to_owned(), ids[1].clone())]);
    // A blocked read of the whole topic is woken by an append to any
    // partition.
    let mut blocked = RespClient::connect(pigeon.resp.expect("resp"));
    blocked.send(&[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"w3",
        b"BLOCK",
        b"20000",
        b"STREAMS",
        b"orders",
        b">",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let info = c.cmd(&["INFO", "clients"]).text().expect("text");
        if info.contains("blocked_clients:1\r\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never blocked: {info}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let late = c
        .cmd(&["XADD", "orders#2", "*", "value", "late"])
        .text()
        .expect("id");
    let woken = read_keys(&blocked.read_reply().expect("a reply"));
    assert_eq!(woken, vec![("orders#2".to_owned(), vec![late])]);
}
