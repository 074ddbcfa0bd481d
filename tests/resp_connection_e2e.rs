//! The Redis listener's connection and key commands, end to end against a
//! real `pigeon-broker`: differential tests run the same script against a
//! real `redis-server` and compare the replies (skipped with a note when
//! `redis-server` is not installed); Pigeon-only tests cover what Redis
//! cannot (keys backed by topics made with Pigeon's own protocol, limits).

use std::time::Duration;

use pigeon_client::protocol::{ListTopicsRequest, Response, ResponseBody};
use pigeon_suite::raw::RawClient;
use pigeon_suite::resp::{RedisServer, RespClient, Side, Value, differential};
use pigeon_suite::{Broker, runtime};

fn start_pigeon() -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&dir.path().join("data"), &[]);
    (dir, broker)
}

/// HELLO's map with the server-specific values (id, version) blanked.
fn blank_hello(reply: &mut Value) {
    if let Value::Map(pairs) = reply {
        for (k, v) in pairs.iter_mut() {
            if matches!(k.text().as_deref(), Some("id" | "version")) {
                *v = Value::Null;
            }
        }
    }
    if let Value::Array(items) = reply {
        for pair in items.chunks_mut(2) {
            if matches!(pair[0].text().as_deref(), Some("id" | "version")) {
                pair[1] = Value::Null;
            }
        }
    }
}

#[test]
fn connection_commands_answer_as_redis_does() {
    let Some(redis) = RedisServer::start("connection_commands_answer_as_redis_does") else {
        return;
    };
    let (_dir, pigeon) = start_pigeon();
    let mut expected = Side::new(redis.addr);
    let mut got = Side::new(pigeon.resp.expect("the RESP listener"));
    let script: &[&[&str]] = &[
        &["PING"],
        &["ping", "hello"],
        &["PING", "a", "b"],
        &["ECHO", "x"],
        &["ECHO"],
        &["SELECT", "0"],
        &["SELECT", "x"],
        &["FOO", "bar", "baz"],
        &["foo"],
        &["HELLO", "4"],
        &["HELLO", "x"],
        &["HELLO", "2"],
        &["HELLO", "2", "AUTH", "someone", "secret"],
        &["HELLO", "2", "FOO"],
        &["AUTH", "secret"],
        &["AUTH", "someone", "secret"],
        &["AUTH", "default", "anything"],
        &["CLIENT", "SETNAME", "a b"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "worker-1"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME"],
        &["CLIENT", "FOO"],
        &["CLIENT", "LIST", "ID", "x"],
        &["EXISTS", "nothing", "orders"],
        &["TYPE", "nothing"],
        &["DBSIZE"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["SCAN", "x"],
        &["SCAN", "0", "COUNT", "0"],
        &["DEL", "nothing"],
        &["UNLINK", "nothing"],
        &["COMMAND", "FOO"],
        &["HELLO", "3"],
        &["PING"],
        &["CLIENT", "GETNAME"],
        &["TYPE", "nothing"],
        &["RESET"],
        &["PING"],
        &["QUIT"],
    ];
    differential(&mut expected, &mut got, script, |command, redis, pigeon| {
        if command[0] == "HELLO" {
            blank_hello(redis);
            blank_hello(pigeon);
        }
    });
    assert!(
        got.client.closed_within(Duration::from_secs(5)),
        "QUIT closes the connection"
    );
}

#[test]
fn keys_are_the_broker_topics() {
    let (_dir, pigeon) = start_pigeon();
    runtime().block_on(async {
        let mut client = RawClient::connect(pigeon.addr).await;
        client.create_topic("orders", 1).await;
        client.create_topic("payments", 3).await;
    });
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(2));
    assert_eq!(
        c.cmd(&[
            "EXISTS",
            "orders",
            "payments#2",
            "payments#3",
            "nope",
            "orders"
        ]),
        Value::Int(3)
    );
    assert_eq!(c.cmd(&["TYPE", "payments"]), Value::Status("stream".into()));
    assert_eq!(c.cmd(&["TYPE", "payments#9"]), Value::Status("none".into()));
    assert_eq!(
        c.cmd(&["KEYS", "*s"]),
        Value::Array(vec![Value::bulk("orders"), Value::bulk("payments")])
    );
    assert_eq!(
        c.cmd(&["KEYS", "p[a-c]*"]),
        Value::Array(vec![Value::bulk("payments")])
    );
    let page = c.cmd(&["SCAN", "0", "COUNT", "1"]);
    assert_eq!(
        page,
        Value::Array(vec![
            Value::bulk("1"),
            Value::Array(vec![Value::bulk("orders")])
        ])
    );
    let last = c.cmd(&["SCAN", "1", "COUNT", "1", "TYPE", "stream"]);
    assert_eq!(
        last,
        Value::Array(vec![
            Value::bulk("0"),
            Value::Array(vec![Value::bulk("payments")])
        ])
    );
    let info = c.cmd(&["INFO", "keyspace"]).text().expect("text");
    assert!(info.contains("db0:keys=2,expires=0,avg_ttl=0"), "{info}");
    assert!(
        matches!(c.cmd(&["DEL", "payments#1"]), Value::Error(e) if e.contains("cannot be deleted alone"))
    );
    assert_eq!(c.cmd(&["DEL", "payments", "nope"]), Value::Int(1));
    assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(1));
    runtime().block_on(async {
        let mut client = RawClient::connect(pigeon.addr).await;
        // Pigeon's own protocol sees the deletion.
        client.create_topic("payments", 1).await;
    });
}

#[test]
fn pipelined_requests_are_answered_in_order_with_one_connection_state() {
    let (_dir, pigeon) = start_pigeon();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend_from_slice(&pigeon_suite::resp::encode(&[
            b"ECHO",
            i.to_string().as_bytes(),
        ]));
    }
    // An inline request in the middle, as a person at a terminal types it.
    batch.extend_from_slice(b"ECHO \"inline words\"\r\n");
    c.send_raw(&batch);
    for i in 0..500 {
        assert_eq!(c.read_reply(), Some(Value::bulk(&i.to_string())));
    }
    assert_eq!(c.read_reply(), Some(Value::bulk("inline words")));
    let info = c.cmd(&["CLIENT", "INFO"]).text().expect("text");
    assert!(
        info.contains("cmd=client|info") && info.contains("resp=2"),
        "{info}"
    );
    let id = c.cmd(&["CLIENT", "ID"]);
    let Value::Int(id) = id else { panic!("{id:?}") };
    let list = c
        .cmd(&["CLIENT", "LIST", "ID", &id.to_string()])
        .text()
        .expect("text");
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.starts_with(&format!("id={id} ")), "{list}");
    let clients = c.cmd(&["INFO", "clients"]).text().expect("text");
    assert!(
        clients.contains("connected_clients:1\r\n") && clients.contains("blocked_clients:0\r\n"),
        "{clients}"
    );
    let count = c.cmd(&["COMMAND", "COUNT"]);
    assert!(matches!(count, Value::Int(n) if n > 10), "{count:?}");
    let infos = c.cmd(&["COMMAND", "INFO", "ping", "nosuch"]);
    assert_eq!(infos.items().len(), 2);
    assert_eq!(
        infos.items()[0].items()[..2],
        [Value::bulk("ping"), Value::Int(-1)]
    );
    assert_eq!(infos.items()[1], Value::Null);
}

#[test]
fn malformed_input_is_answered_with_a_protocol_error_and_closed() {
    let (_dir, pigeon) = start_pigeon();
    let addr = pigeon.resp.expect("resp");
    let cases: [(&[u8], &str); 3] = [
        (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n+PING\r\n",
            "ERR Protocol error: expected '$', got '+'",
        ),
        // A bulk longer than the request limit (max_frame_bytes, 16 MiB):
        // refused from its header, before anything is allocated for it.
        (
            b"*1\r\n$999999999\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
    ];
    for (bytes, text) in cases {
        let mut c = RespClient::connect(addr);
        c.send_raw(&[b"PING\r\n".as_slice(), bytes].concat());
        assert_eq!(c.read_reply(), Some(Value::Status("PONG".into())));
        assert_eq!(c.read_reply(), Some(Value::Error(text.into())));
        assert!(c.closed_within(Duration::from_secs(5)));
    }
    // The broker still serves.
    let mut c = RespClient::connect(addr);
    assert_eq!(c.cmd(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn a_request_that_stalls_half_way_is_closed_after_the_frame_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pigeon = Broker::start(&dir.path().join("data"), &["--frame-timeout-ms", "300"]);
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    c.send_raw(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel");
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "the stalled request's connection is closed"
    );
    // An idle connection between requests is not.
    let mut idle = RespClient::connect(pigeon.resp.expect("resp"));
    assert_eq!(idle.cmd(&["PING"]), Value::Status("PONG".into()));
    assert!(!idle.closed_within(Duration::from_millis(600)));
    assert_eq!(idle.cmd(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn the_listener_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pigeon = Broker::start(&dir.path().join("data"), &["--resp", "off"]);
    assert_eq!(pigeon.resp, None);
    assert!(pigeon.log_text().contains("resp=off"));
}

#[test]
fn a_connection_over_max_connections_is_told_and_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pigeon = Broker::start(&dir.path().join("data"), &["--max-connections", "2"]);
    let addr = pigeon.resp.expect("resp");
    let mut first = RespClient::connect(addr);
    let mut second = RespClient::connect(addr);
    assert_eq!(first.cmd(&["PING"]), Value::Status("PONG".into()));
    assert_eq!(second.cmd(&["PING"]), Value::Status("PONG".into()));
    let mut third = RespClient::connect(addr);
    assert_eq!(
        third.read_reply(),
        Some(Value::Error("ERR max number of clients reached".into()))
    );
    assert!(third.closed_within(Duration::from_secs(5)));
    drop(first);
    // The slot comes back once a connection ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut again = RespClient::connect(addr);
        again.send(&[b"PING"]);
        if again.read_reply() == Some(Value::Status("PONG".into())) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nested arrays are not requests: refused at once, without recursion.
    second.send_raw(&b"*1\r\n".repeat(100_000));
    assert_eq!(
        second.read_reply(),
        Some(Value::Error(
            "ERR Protocol error: expected '$', got '*'".into()
        ))
    );
}

#[test]
fn flushall_is_refused_unless_enabled_and_says_how_to_enable_it() {
    let (_dir, pigeon) = start_pigeon();
    let mut c = RespClient::connect(pigeon.resp.expect("resp"));
    c.cmd(&["XADD", "orders", "*", "value", "x"]);
    for command in [&["FLUSHALL"][..], &["FLUSHDB", "ASYNC"]] {
        let Value::Error(text) = c.cmd(command) else {
            panic!("{command:?} is refused")
        };
        assert!(
            text.starts_with(&format!("ERR {} is disabled", command[0]))
                && text.contains("resp_allow_flush = true")
                && text.contains("--resp-allow-flush true"),
            "{text}"
        );
    }
    assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(1), "nothing was deleted");
    assert_eq!(c.cmd(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn flushall_when_enabled_answers_as_redis_and_deletes_every_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pigeon = Broker::start(&dir.path().join("data"), &["--resp-allow-flush", "true"]);
    let addr = pigeon.resp.expect("resp");
    let script: &[&[&str]] = &[
        &["XADD", "a", "1-1", "v", "1"],
        &["XADD", "b", "1-1", "v", "1"],
        &["DBSIZE"],
        &["FLUSHALL", "foo"],
        &["FLUSHALL", "ASYNC", "SYNC"],
        &["FLUSHDB", "x"],
        &["DBSIZE"],
        &["FLUSHALL"],
        &["DBSIZE"],
        &["EXISTS", "a", "b"],
        &["XADD", "a", "1-1", "v", "1"],
        &["FLUSHDB", "async"],
        &["KEYS", "*"],
        &["XADD", "c", "1-1", "v", "1"],
        &["FLUSHALL", "SYNC"],
        &["FLUSHDB"],
        &["XLEN", "c"],
        &["XINFO", "GROUPS", "a"],
    ];
    match RedisServer::start("flushall_when_enabled_answers_as_redis") {
        Some(redis) => {
            let mut expected = Side::new(redis.addr);
            let mut got = Side::new(addr);
            differential(&mut expected, &mut got, script, |_, _, _| {});
        }
        None => {
            let mut c = RespClient::connect(addr);
            for command in script {
                c.cmd(command);
            }
        }
    }
    // Groups and their dead-letter topics go too; the broker's own topics
    // (`__deleted`, written by XDEL) are not streams and stay; Pigeon's
    // protocol sees the user topics gone.
    let mut c = RespClient::connect(addr);
    c.cmd(&["XADD", "d", "*", "value", "x"]);
    assert_eq!(
        c.cmd(&["XGROUP", "CREATE", "d", "g", "0"]),
        Value::Status("OK".into())
    );
    let id = c.cmd(&["XADD", "d", "*", "value", "y"]).text().expect("id");
    assert_eq!(c.cmd(&["XDEL", "d", &id]), Value::Int(1));
    assert_eq!(c.cmd(&["FLUSHALL"]), Value::Status("OK".into()));
    assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(0));
    runtime().block_on(async {
        let mut client = RawClient::connect(pigeon.addr).await;
        match client.call(ListTopicsRequest.into()).await {
            ResponseBody::Ok(Response::ListTopics(list)) => assert!(
                list.topics.iter().all(|t| t.topic.starts_with("__")),
                "only the broker's own topics are left: {:?}",
                list.topics
            ),
            other => panic!("list: {other:?}"),
        }
    });
}
