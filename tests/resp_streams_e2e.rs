//! Redis stream commands without groups, end to end against a real
//! `pigeon-broker`: differential scripts against a real `redis-server`
//! (skipped with a note when it is not installed; generated IDs are
//! compared by order of appearance, since Pigeon's are `<append
//! time>-<offset>`), and Pigeon-only tests of what Redis cannot show:
//! blocking reads woken by an append, one data model with Pigeon's own
//! protocol, multi-partition keys, and IDs surviving a restart.

use std::time::{Duration, Instant};

use pigeon_suite::raw::RawClient;
use pigeon_suite::resp::{RedisServer, RespClient, Side, Value, differential};
use pigeon_suite::{Broker, runtime};

fn start_pigeon() -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&dir.path().join("data"), &[]);
    (dir, broker)
}

const SCRIPT: &[&[&str]] = &[
    &["XADD", "s", "1-1", "a", "1"],
    &["XADD", "s", "1-1", "a", "1"],
    &["XADD", "s", "0-0", "a", "1"],
    &["XADD", "s", "0", "a", "1"],
    &["XADD", "s", "1-*", "b", "2"],
    &["XADD", "s", "2", "c", "3"],
    &["XADD", "s", "x", "a", "1"],
    &["XADD", "s", "*", "a"],
    &["XADD", "s", "*", "value", "hello"],
    &["XADD", "s", "NOMKSTREAM", "*", "key", "k", "value", "v"],
    &["XADD", "nos", "NOMKSTREAM", "*", "a", "1"],
    &["XADD", "s", "MAXLEN", "~", "x", "*", "a", "1"],
    &["XADD", "s", "MAXLEN", "-1", "*", "a", "1"],
    &["XLEN", "s"],
    &["XLEN", "nos"],
    &["XRANGE", "s", "-", "+"],
    &["XRANGE", "s", "-", "+", "COUNT", "2"],
    &["XRANGE", "s", "-", "+", "COUNT", "0"],
    &["XRANGE", "s", "-", "+", "COUNT", "x"],
    &["XRANGE", "s", "-", "+", "FOO", "1"],
    &["XRANGE", "s", "(1-2", "+"],
    &["XRANGE", "s", "1", "1"],
    &["XRANGE", "s", "+", "-"],
    &["XRANGE", "s", "x", "+"],
    &["XRANGE", "s", "(0-0", "(0-0"],
    &["XRANGE", "nos", "-", "+"],
    &["XRANGE", "s", "$ID1", "+"],
    &["XRANGE", "s", "($ID1", "+"],
    &["XREVRANGE", "s", "+", "-"],
    &["XREVRANGE", "s", "+", "-", "COUNT", "2"],
    &["XREVRANGE", "s", "$ID1", "-"],
    &["XREVRANGE", "s", "+", "(2-0"],
    &["XREAD", "STREAMS", "s", "0"],
    &["XREAD", "COUNT", "1", "STREAMS", "s", "1-1"],
    &["XREAD", "STREAMS", "s", "nos", "0", "0"],
    &["XREAD", "COUNT", "1", "STREAMS", "s", "$ID1"],
    &["XREAD", "STREAMS", "s", "$ID2"],
    &["XREAD", "BLOCK", "-1", "STREAMS", "s", "0"],
    &["XREAD", "BLOCK", "x", "STREAMS", "s", "0"],
    &["XREAD", "STREAMS", "s", "x"],
    &["XREAD", "FOO", "STREAMS", "s", "0"],
    &["XREAD", "STREAMS", "s", "nos", "0"],
    &["XREAD", "BLOCK", "100", "STREAMS", "s", "$"],
    &["XREAD", "BLOCK", "100", "STREAMS", "nos", "$"],
    &["XDEL", "s", "1-2", "9-9"],
    &["XDEL", "s", "x"],
    &["XDEL", "nos", "1-1"],
    &["XLEN", "s"],
    &["XRANGE", "s", "-", "+"],
    &["XREVRANGE", "s", "+", "-", "COUNT", "3"],
    &["XADD", "s", "1-5", "late", "1"],
    &["XTRIM", "s", "MAXLEN", "~", "1000"],
    &["XTRIM", "s", "MINID", "~", "0"],
    &["XTRIM", "s", "FOO", "1"],
    &["XTRIM", "s", "MAXLEN"],
    &["XTRIM", "nos", "MAXLEN", "~", "1"],
    &["XADD", "s", "MAXLEN", "~", "100", "*", "f", "v"],
    &["TYPE", "s"],
    &["EXISTS", "s", "nos"],
    &["HELLO", "3"],
    &["XRANGE", "s", "-", "+", "COUNT", "1"],
    &["XREAD", "COUNT", "1", "STREAMS", "s", "0"],
    &["XREAD", "BLOCK", "50", "STREAMS", "s", "$"],
    &["XADD", "nos", "NOMKSTREAM", "*", "a", "1"],
    &["HELLO", "2"],
    &["DEL", "s"],
    &["XLEN", "s"],
    &["XREAD", "STREAMS", "s", "0"],
];

#[test]
fn stream_commands_answer_as_redis_does() {
    let Some(redis) = RedisServer::start("stream_commands_answer_as_redis_does") else {
        return;
    };
    let (_dir, pigeon) = start_pigeon();
    let mut expected = Side::new(redis.addr);
    let mut got = Side::new(pigeon.resp.expect("the RESP listener"));
    differential(&mut expected, &mut got, SCRIPT, |command, redis, pigeon| {
        if command[0] == "HELLO" {
            *redis = Value::Null;
            *pigeon = Value::Null;
        }
    });
}

#[test]
fn a_blocked_read_is_woken_by_an_append_and_counted_as_blocked() {
    let (_dir, pigeon) = start_pigeon();
    let addr = pigeon.resp.expect("resp");
    let mut writer = RespClient::connect(addr);
    let first = writer.cmd(&["XADD", "orders", "*", "value", "one"]);
    assert!(matches!(first, Value::Bulk(_)), "{first:?}");
    let reader = std::thread::spawn(move || {
        let mut reader = RespClient::connect(addr);
        let started = Instant::now();
        let got = reader.cmd(&["XREAD", "BLOCK", "0", "STREAMS", "orders", "$"]);
        (got, started.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let clients = writer.cmd(&["INFO", "clients"]).text().expect("text");
        if clients.contains("blocked_clients:1\r\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reader never blocked: {clients}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let id = writer.cmd(&["XADD", "orders", "*", "value", "two"]);
    let (got, _) = reader.join().expect("reader");
    let expected = Value::Array(vec![Value::Array(vec![
        Value::bulk("orders"),
        Value::Array(vec![Value::Array(vec![
            id,
            Value::Array(vec![Value::bulk("value"), Value::bulk("two")]),
        ])]),
    ])]);
    assert_eq!(got, expected);
    // A read that times out answers a null array in about its time.
    let started = Instant::now();
    let none = writer.cmd(&["XREAD", "BLOCK", "200", "STREAMS", "orders", "$"]);
    assert_eq!(none, Value::Null);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn streams_and_topics_are_one_data_model() {
    let (_dir, pigeon) = start_pigeon();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    c.cmd(&["XADD", "orders", "*", "value", "plain"]);
    c.cmd(&["XADD", "orders", "*", "key", "k1", "value", "keyed"]);
    c.cmd(&["XADD", "orders", "*", "sku", "42", "qty", "3"]);
    let values = runtime().block_on(async {
        let mut raw = RawClient::connect(pigeon.addr).await;
        let values = raw.read_values("orders", 0, 0).await;
        // And the other way: a record produced with Pigeon's protocol.
        raw.produce("orders", 0, &[b"from pigeon"]).await;
        raw.create_topic("payments", 2).await;
        raw.produce("payments", 1, &[b"p1"]).await;
        values
    });
    let values: Vec<&[u8]> = values.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(
        values[..2],
        [b"plain".as_slice(), b"keyed".as_slice()],
        "one-field entries are plain records"
    );
    assert_eq!(
        values[2], b"*4\r\n$3\r\nsku\r\n$2\r\n42\r\n$3\r\nqty\r\n$1\r\n3\r\n",
        "pairs are a RESP array"
    );
    let all = c.cmd(&["XRANGE", "orders", "-", "+"]);
    let fields: Vec<Value> = all.items().iter().map(|e| e.items()[1].clone()).collect();
    let texts = |words: &[&str]| Value::Array(words.iter().map(|w| Value::bulk(w)).collect());
    assert_eq!(
        fields,
        [
            texts(&["value", "plain"]),
            texts(&["key", "k1", "value", "keyed"]),
            texts(&["sku", "42", "qty", "3"]),
            texts(&["value", "from pigeon"]),
        ]
    );
    // IDs are <append time>-<offset>.
    let last_id = all.items()[3].items()[0].text().expect("id");
    assert!(last_id.ends_with("-3"), "{last_id}");
    // A multi-partition topic is read a partition at a time.
    let bare = c.cmd(&["XRANGE", "payments", "-", "+"]);
    assert!(
        matches!(&bare, Value::Error(e) if e.contains("payments#0 to payments#1")),
        "{bare:?}"
    );
    let one = c.cmd(&["XRANGE", "payments#1", "-", "+"]);
    assert_eq!(one.items().len(), 1);
    assert_eq!(c.cmd(&["XLEN", "payments#0"]), Value::Int(0));
    let added = c.cmd(&["XADD", "payments#0", "*", "value", "p0"]);
    assert!(
        added.text().is_some_and(|id| id.ends_with("-0")),
        "{added:?}"
    );
    // A key that cannot be a topic name is refused, saying why.
    let bad = c.cmd(&["XADD", "events:orders", "*", "value", "x"]);
    assert!(
        matches!(&bad, Value::Error(e) if e.contains("cannot name a Pigeon stream")),
        "{bad:?}"
    );
}

#[test]
fn ids_entries_and_deletions_survive_a_restart() {
    let (_dir, mut pigeon) = start_pigeon();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    c.cmd(&["XADD", "s", "5-1", "a", "1"]);
    c.cmd(&["XADD", "s", "*", "b", "2"]);
    c.cmd(&["XADD", "s", "*", "c", "3"]);
    let before = c.cmd(&["XRANGE", "s", "-", "+"]);
    let middle = before.items()[1].items()[0].text().expect("id");
    assert_eq!(c.cmd(&["XDEL", "s", &middle]), Value::Int(1));
    assert_eq!(
        c.cmd(&["XDEL", "s", &middle]),
        Value::Int(0),
        "deleted once"
    );
    let after_del = c.cmd(&["XRANGE", "s", "-", "+"]);
    assert_eq!(after_del.items().len(), 2);
    pigeon.kill();
    pigeon.restart();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    assert_eq!(
        c.cmd(&["XRANGE", "s", "-", "+"]),
        after_del,
        "the same entries and IDs after kill -9"
    );
    assert_eq!(c.cmd(&["XLEN", "s"]), Value::Int(2));
    let refused = c.cmd(&["XADD", "s", "5-1", "a", "1"]);
    assert!(
        matches!(&refused, Value::Error(e) if e.contains("equal or smaller")),
        "{refused:?}"
    );
}

#[test]
fn an_explicit_id_ahead_of_the_log_is_refused_saying_why() {
    let (_dir, pigeon) = start_pigeon();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    let refused = c.cmd(&["XADD", "s", "99999999999999-0", "a", "1"]);
    assert!(
        matches!(&refused, Value::Error(e) if e.contains("use * or a smaller ID")),
        "{refused:?}"
    );
    assert_eq!(
        c.cmd(&["EXISTS", "s"]),
        Value::Int(0),
        "a refused XADD creates no stream"
    );
    c.cmd(&["XADD", "s", "*", "a", "1"]);
    let refused = c.cmd(&["XADD", "s", "99999999999999-0", "a", "1"]);
    assert!(
        matches!(&refused, Value::Error(e) if e.contains("use * or a smaller ID")),
        "{refused:?}"
    );
    let exact = c.cmd(&["XADD", "s", "MAXLEN", "10", "*", "a", "1"]);
    assert!(
        matches!(&exact, Value::Error(e) if e.contains("MAXLEN ~")),
        "{exact:?}"
    );
}

#[test]
fn approximate_trimming_drops_whole_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pigeon = Broker::start(&dir.path().join("data"), &["--segment-bytes", "4096"]);
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    let value = "x".repeat(500);
    for _ in 0..40 {
        c.cmd(&["XADD", "s", "*", "value", &value]);
    }
    let Value::Int(trimmed) = c.cmd(&["XTRIM", "s", "MAXLEN", "~", "10"]) else {
        panic!("XTRIM answers an integer");
    };
    let Value::Int(left) = c.cmd(&["XLEN", "s"]) else {
        panic!("XLEN answers an integer");
    };
    assert!(trimmed > 0, "whole segments below the threshold went");
    assert_eq!(left + trimmed, 40);
    assert!(left >= 10, "at least MAXLEN entries stay: {left}");
    let first = c.cmd(&["XRANGE", "s", "-", "+", "COUNT", "1"]);
    let id = first.items()[0].items()[0].text().expect("id");
    assert!(
        id.ends_with(&format!("-{trimmed}")),
        "the oldest entry left is offset {trimmed}: {id}"
    );
    // MINID ~ past the end drops every sealed segment, never the active
    // one with the entry just added.
    let added = c.cmd(&[
        "XADD",
        "s",
        "MINID",
        "~",
        "99999999999999",
        "*",
        "value",
        "y",
    ]);
    assert!(matches!(added, Value::Bulk(_)), "{added:?}");
    let Value::Int(left) = c.cmd(&["XLEN", "s"]) else {
        panic!("XLEN answers an integer");
    };
    assert!((1..=11).contains(&left), "{left}");
}

#[test]
fn pipelined_appends_share_commits_and_keep_the_reply_order() {
    let (_dir, pigeon) = start_pigeon();
    let addr = pigeon.resp.expect("resp");
    let mut c = RespClient::connect(addr);
    let mut batch = Vec::new();
    for n in 0..200 {
        let value = n.to_string();
        batch.extend(pigeon_suite::resp::encode(&[
            b"XADD",
            b"p",
            b"*",
            b"value",
            value.as_bytes(),
        ]));
    }
    batch.extend(pigeon_suite::resp::encode(&[b"XLEN", b"p"]));
    batch.extend(pigeon_suite::resp::encode(&[
        b"XADD", b"p", b"1-1", b"a", b"1",
    ]));
    batch.extend(pigeon_suite::resp::encode(&[
        b"XADD", b"p", b"*", b"value", b"last",
    ]));
    c.send_raw(&batch);
    let mut previous = (0u64, 0u64);
    for n in 0..200 {
        let id = c.read_reply().and_then(|v| v.text()).expect("an ID");
        let (ms, seq) = id.split_once('-').expect("ms-seq");
        let id = (ms.parse().expect("ms"), seq.parse().expect("seq"));
        assert!(id > previous, "entry {n}: {id:?} after {previous:?}");
        assert_eq!(id.1, n, "the offset of entry {n}");
        previous = id;
    }
    assert_eq!(
        c.read_reply(),
        Some(Value::Int(200)),
        "XLEN sees every append before it"
    );
    let refused = c.read_reply().expect("reply");
    assert!(
        matches!(&refused, Value::Error(e) if e.contains("equal or smaller")),
        "{refused:?}"
    );
    let last = c.read_reply().and_then(|v| v.text()).expect("an ID");
    assert!(last.ends_with("-200"), "{last}");

    // Explicit-ID appends (which take the partition's lock alone) and
    // pipelined ones from other connections do not wait on each other
    // for ever.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = RespClient::connect(addr);
                for round in 0..20 {
                    let mut batch = Vec::new();
                    for _ in 0..20 {
                        batch.extend(pigeon_suite::resp::encode(&[
                            b"XADD", b"p", b"*", b"w", b"x",
                        ]));
                    }
                    c.send_raw(&batch);
                    for _ in 0..20 {
                        let reply = c.read_reply().expect("reply");
                        assert!(
                            matches!(reply, Value::Bulk(_)),
                            "writer {w} round {round}: {reply:?}"
                        );
                    }
                }
            })
        })
        .collect();
    let mut explicit = RespClient::connect(addr);
    for _ in 0..50 {
        let reply = explicit.cmd(&["XADD", "p", "1-*", "a", "1"]);
        assert!(
            matches!(&reply, Value::Error(e) if e.contains("equal or smaller")),
            "{reply:?}"
        );
    }
    for w in writers {
        w.join().expect("writer");
    }
    assert_eq!(c.cmd(&["XLEN", "p"]), Value::Int(201 + 3 * 20 * 20));
}

#[test]
fn pipelined_appends_to_several_keys_answer_each_with_the_id_it_reads_back_with() {
    let (_dir, pigeon) = start_pigeon();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    let mut batch = Vec::new();
    // Runs of appends to one key (one batch each), switches of key, a key
    // that cannot name a stream, and an entry of several fields.
    let keys: Vec<&[u8]> = [&b"a"[..]; 50]
        .into_iter()
        .chain([&b"b"[..]; 30])
        .chain([&b"bad:key"[..]])
        .chain([&b"a"[..], b"b", b"a"])
        .collect();
    for (n, key) in keys.iter().enumerate() {
        let value = n.to_string();
        let args: Vec<&[u8]> = if n == 40 {
            vec![b"XADD", key, b"*", b"f1", value.as_bytes(), b"f2", b"x"]
        } else {
            vec![b"XADD", key, b"*", b"value", value.as_bytes()]
        };
        batch.extend(pigeon_suite::resp::encode(&args));
    }
    c.send_raw(&batch);
    let mut added: Vec<(String, String, String)> = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        let reply = c.read_reply().expect("a reply");
        let key = String::from_utf8_lossy(key).into_owned();
        if key == "bad:key" {
            assert!(
                matches!(&reply, Value::Error(e) if e.contains("cannot name")),
                "{reply:?}"
            );
            continue;
        }
        added.push((key, reply.text().expect("an ID"), n.to_string()));
    }
    for key in ["a", "b"] {
        let range = c.cmd(&["XRANGE", key, "-", "+"]);
        let read: Vec<(String, Value)> = range
            .items()
            .iter()
            .map(|e| (e.items()[0].text().expect("id"), e.items()[1].clone()))
            .collect();
        let expected: Vec<(String, Value)> = added
            .iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, id, n)| {
                let fields = if n == "40" {
                    vec![
                        Value::bulk("f1"),
                        Value::bulk(n),
                        Value::bulk("f2"),
                        Value::bulk("x"),
                    ]
                } else {
                    vec![Value::bulk("value"), Value::bulk(n)]
                };
                (id.clone(), Value::Array(fields))
            })
            .collect();
        assert_eq!(read, expected, "stream {key}");
    }
}
