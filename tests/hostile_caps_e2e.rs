//! A client trying to exhaust the real `pigeon-broker` runs into its caps
//! (small ones here, set with flags): topics, partitions, groups per
//! topic, members per group, producer names, connections per address on
//! both listeners, and idle connections. Each refusal names the cap and
//! what to do; what is under the caps keeps working; the broker's memory
//! (from `/proc/<pid>/status`) stays bounded.

use std::time::{Duration, Instant};

use pigeon_client::protocol::*;
use pigeon_suite::raw::RawClient;
use pigeon_suite::resp::{RespClient, Value};
use pigeon_suite::{Broker, memory, runtime};

const CAPS: &[&str] = &[
    "--max-topics",
    "6",
    "--max-partitions",
    "9",
    "--max-groups-per-topic",
    "2",
    "--max-members-per-group",
    "3",
    "--max-producer-names",
    "5",
    "--max-connections-per-peer",
    "8",
    "--idle-timeout-ms",
    "3000",
];

/// How many of `attempts` succeeded, and the first refusal's message.
fn tally(results: Vec<ResponseBody>) -> (usize, Option<String>) {
    let mut ok = 0;
    let mut first = None;
    for result in results {
        match result {
            ResponseBody::Ok(_) => ok += 1,
            ResponseBody::Error(e) => {
                assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
                first.get_or_insert(e.message);
            }
        }
    }
    (ok, first)
}

async fn create_topic(client: &mut RawClient, topic: &str, partitions: u32) -> ResponseBody {
    let request = CreateTopicRequest {
        topic: topic.into(),
        partitions,
        retention_ms: None,
        retention_bytes: None,
    };
    client.call(request.into()).await
}

#[test]
fn every_cap_refuses_what_is_past_it_and_memory_stays_bounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), CAPS);
    let before = memory(broker.pid()).expect("memory");
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("src", 1).await;
        // Groups: two per topic (each with its dead-letter topic).
        let mut answers = Vec::new();
        for i in 0..200 {
            let create = CreateGroupRequest {
                topic: "src".into(),
                group: format!("g{i}"),
                settings: GroupSettings::default(),
            };
            answers.push(client.call(create.into()).await);
        }
        let (ok, refused) = tally(answers);
        assert_eq!(ok, 2);
        let refused = refused.expect("refused");
        assert!(refused.contains("max_groups_per_topic is 2"), "{refused}");
        // Members: three per group.
        let mut answers = Vec::new();
        for i in 0..200 {
            let join = JoinGroupRequest {
                topic: "src".into(),
                group: "g0".into(),
                consumer_name: format!("c{i}"),
            };
            answers.push(client.call(join.into()).await);
        }
        let (ok, refused) = tally(answers);
        assert_eq!(ok, 3);
        assert!(
            refused.expect("refused").contains("max_members_per_group"),
            "members"
        );
        // Partitions (9 in all), then topics (6, dead-letter topics
        // included: 3 so far).
        assert!(matches!(
            create_topic(&mut client, "big", 4).await,
            ResponseBody::Ok(_)
        ));
        let (_, refused) = tally(vec![create_topic(&mut client, "big2", 3).await]);
        assert!(refused.expect("refused").contains("max_partitions is 9"));
        let mut answers = Vec::new();
        for i in 0..200 {
            answers.push(create_topic(&mut client, &format!("x{i}"), 1).await);
        }
        let (ok, refused) = tally(answers);
        assert_eq!(ok, 2, "x0 and x1 fill the 6 topics");
        assert!(refused.expect("refused").contains("max_topics is 6"));
        // Producer names: five, a known one still registers.
        let mut answers = Vec::new();
        for i in 0..200 {
            let register = RegisterProducerRequest {
                name: format!("producer-{i}"),
            };
            answers.push(client.call(register.into()).await);
        }
        let (ok, refused) = tally(answers);
        assert_eq!(ok, 5);
        assert!(refused.expect("refused").contains("max_producer_names"));
        let again = RegisterProducerRequest {
            name: "producer-3".into(),
        };
        assert!(matches!(
            client.call(again.into()).await,
            ResponseBody::Ok(_)
        ));
    });
    let after = memory(broker.pid()).expect("memory");
    let grown = after.peak_kib.saturating_sub(before.peak_kib);
    println!(
        "caps: peak RSS {} KiB -> {} KiB",
        before.peak_kib, after.peak_kib
    );
    assert!(grown < 64 * 1024, "the broker grew {grown} KiB");
    let log = broker.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Whether the broker served a new connection (`false`: it answered
/// `TooManyConnections` naming the per-address cap, and closed).
async fn served(broker: &Broker) -> (bool, Option<RawClient>) {
    let mut client = RawClient::connect_bare(broker.addr).await.expect("connect");
    client
        .send(HandshakeRequest::for_this_build("caps").into())
        .await;
    match client.next_frame().await {
        Some(Ok(frame)) => match frame.body {
            Ok(ResponseBody::Ok(_)) => (true, Some(client)),
            Ok(ResponseBody::Error(e)) => {
                assert_eq!(e.code, ErrorCode::TooManyConnections, "{}", e.message);
                assert!(
                    e.message.contains("max_connections_per_peer"),
                    "{}",
                    e.message
                );
                (false, None)
            }
            Err(e) => panic!("undecodable: {e}"),
        },
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn connections_per_address_are_capped_on_both_listeners_and_idle_ones_are_closed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), CAPS);
    let resp = broker.resp.expect("resp listener");
    let kept = runtime().block_on(async {
        let mut kept = Vec::new();
        let mut refused = 0;
        for _ in 0..30 {
            match served(&broker).await {
                (true, client) => kept.push(client),
                (false, _) => refused += 1,
            }
        }
        assert_eq!((kept.len(), refused), (8, 22));
        kept
    });
    let http = broker.http;
    let per_peer = "pigeon_connections_refused_total{reason=\"per_peer\"}";
    pigeon_suite::wait_until(Duration::from_secs(10), "22 refusals counted", || {
        pigeon_suite::metric(http, per_peer) >= 22.0
    });
    let global = "pigeon_connections_refused_total{reason=\"max_connections\"}";
    assert_eq!(pigeon_suite::metric(http, global), 0.0);
    // The Redis listener counts against the same cap, and counts its
    // refusals in the same series.
    let binary_refusals = pigeon_suite::metric(http, per_peer);
    let mut redis = std::net::TcpStream::connect(resp).expect("connect");
    let mut line = String::new();
    use std::io::{BufRead, BufReader};
    BufReader::new(&mut redis)
        .read_line(&mut line)
        .expect("error line");
    assert!(
        line.starts_with("-ERR") && line.contains("max_connections_per_peer"),
        "{line}"
    );
    pigeon_suite::wait_until(Duration::from_secs(10), "the RESP refusal counted", || {
        pigeon_suite::metric(http, per_peer) >= binary_refusals + 1.0
    });
    // Idle for 3 s with nothing in flight: closed, and their slots free
    // (the exact timing is `server::idle`'s unit test, with paused time).
    runtime().block_on(async {
        for mut client in kept.into_iter().flatten() {
            let closed = client.next_frame_within(Duration::from_secs(30)).await;
            assert!(
                matches!(closed, Ok(None) | Ok(Some(Err(_)))),
                "an idle connection stayed open: {closed:?}"
            );
        }
    });
    let mut redis = RespClient::connect(resp);
    assert_eq!(redis.cmd(&["PING"]), Value::Status("PONG".into()));
    // An idle Redis connection is closed too.
    let deadline = Instant::now() + Duration::from_secs(30);
    assert_eq!(redis.read_reply(), None, "closed");
    assert!(Instant::now() < deadline);
    runtime().block_on(async {
        let (ok, _) = served(&broker).await;
        assert!(ok, "slots came back after the idle connections closed");
    });
}
