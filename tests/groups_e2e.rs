//! End-to-end tests of consumer groups through the real broker and the wire
//! protocol: per-message acks, dead-lettering into `<topic>.<group>.dlq`,
//! leases returning when a consumer's connection drops, seek, pause, and
//! group state surviving `kill -9`.

use std::time::Duration;

use pigeon_client::protocol::*;
use pigeon_suite::raw::RawClient;
use pigeon_suite::{Broker, runtime};

fn settings() -> GroupSettings {
    GroupSettings {
        ack_timeout_ms: 60_000,
        max_deliveries: 3,
        backoff_initial_ms: 10,
        backoff_max_ms: 100,
        ..GroupSettings::default()
    }
}

async fn settle(
    client: &mut RawClient,
    consumer: u64,
    items: Vec<(u64, SettleAction, &str)>,
) -> Vec<SettleResult> {
    let items = items
        .into_iter()
        .map(|(offset, action, reason)| SettleItem {
            partition: 0,
            offset,
            attempt: 0,
            action,
            delay_ms: 0,
            reason: reason.into(),
        })
        .collect();
    client.settle("orders", "billing", consumer, items).await
}

async fn describe(client: &mut RawClient) -> DescribeGroupResponse {
    match client
        .ok(DescribeGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
        }
        .into())
        .await
    {
        Response::DescribeGroup(d) => d,
        other => panic!("{other:?}"),
    }
}

#[test]
fn acks_dead_letters_disconnects_and_kill_9() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(&tmp.path().join("data"), &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut admin = RawClient::connect(broker.addr).await;
        admin.create_topic("orders", 1).await;
        for i in 0..6 {
            admin
                .produce("orders", 0, &[format!("order {i}").as_bytes()])
                .await;
        }
        let create = CreateGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            settings: settings(),
        };
        admin.ok(create.into()).await;
        assert!(
            tmp.path().join("data/topics/orders.billing.dlq/0").is_dir(),
            "the DLQ topic exists"
        );

        let mut consumer_conn = RawClient::connect(broker.addr).await;
        let consumer = consumer_conn.join_group("orders", "billing", "test").await;
        let got = consumer_conn
            .receive("orders", "billing", consumer, 10, 1000)
            .await;
        assert_eq!(
            got.iter()
                .map(|d| (d.offset, d.attempt))
                .collect::<Vec<_>>(),
            (0..6).map(|o| (o, 1)).collect::<Vec<_>>()
        );
        assert_eq!(got[2].value.as_ref(), b"order 2");
        let results = settle(
            &mut consumer_conn,
            consumer,
            vec![
                (0, SettleAction::Ack, ""),
                (1, SettleAction::Ack, ""),
                (2, SettleAction::Reject, "bad total"),
            ],
        )
        .await;
        assert!(
            results.iter().all(|r| r.error_code == ErrorCode::None),
            "{results:?}"
        );

        // The rejected message is parked with its reason.
        let mut dlq = Vec::new();
        for _ in 0..100 {
            dlq = admin.read_values("orders.billing.dlq", 0, 0).await;
            if !dlq.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].1, b"order 2");
        let parked = admin.fetch("orders.billing.dlq", 0, 0, 0).await;
        let record = &pigeon_suite::raw::decode_records(&parked.records)[0];
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|h| h.name == name)
                .map(|h| String::from_utf8_lossy(&h.value).to_string())
        };
        assert_eq!(header("pigeon.dlq.reason").as_deref(), Some("rejected"));
        assert_eq!(
            header("pigeon.dlq.reason-text").as_deref(),
            Some("bad total")
        );
        assert_eq!(header("pigeon.dlq.source-offset").as_deref(), Some("2"));
        assert_eq!(header("pigeon.dlq.attempts").as_deref(), Some("1"));

        // The consumer's connection drops: its three leases come back.
        drop(consumer_conn);
        let mut second = RawClient::connect(broker.addr).await;
        let other = second.join_group("orders", "billing", "test").await;
        let mut back = Vec::new();
        for _ in 0..50 {
            back.extend(second.receive("orders", "billing", other, 10, 5000).await);
            if back.len() >= 3 {
                break;
            }
        }
        back.sort_by_key(|d| d.offset);
        assert_eq!(
            back.iter()
                .map(|d| (d.offset, d.attempt))
                .collect::<Vec<_>>(),
            vec![(3, 2), (4, 2), (5, 2)]
        );
        settle(&mut second, other, vec![(3, SettleAction::Ack, "")]).await;
        let d = describe(&mut admin).await;
        assert_eq!(
            (
                d.partitions[0].committed_floor,
                d.partitions[0].in_flight,
                d.partitions[0].dead_lettered
            ),
            (4, 2, 1)
        );
    });
    // Give the lazy journal a moment to commit the last acks, then pull the plug.
    std::thread::sleep(Duration::from_millis(300));
    broker.kill();
    broker.restart();
    rt.block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        let d = describe(&mut client).await;
        assert_eq!(d.partitions[0].dead_lettered, 1, "dead letter survived");
        assert_eq!(d.partitions[0].committed_floor, 4, "acks survived");
        let consumer = client.join_group("orders", "billing", "test").await;
        let mut again = Vec::new();
        for _ in 0..50 {
            again.extend(
                client
                    .receive("orders", "billing", consumer, 10, 5000)
                    .await,
            );
            if again.len() >= 2 {
                break;
            }
        }
        // Offsets 4 and 5 came back when the second consumer's connection
        // closed (attempt 2 counted), durably: after the crash they are
        // delivered again as attempt 3, in due-time order (jittered backoff).
        let mut again: Vec<(u64, u32)> = again.iter().map(|d| (d.offset, d.attempt)).collect();
        again.sort_unstable();
        assert_eq!(again, vec![(4, 3), (5, 3)]);
    });
}

#[test]
fn seek_pause_and_resume() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        let mut c = RawClient::connect(broker.addr).await;
        c.create_topic("orders", 1).await;
        for i in 0..5 {
            c.produce("orders", 0, &[format!("o{i}").as_bytes()]).await;
        }
        c.ok(CreateGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            settings: settings(),
        }
        .into())
            .await;
        let consumer = c.join_group("orders", "billing", "test").await;
        let got = c.receive("orders", "billing", consumer, 10, 1000).await;
        settle(
            &mut c,
            consumer,
            got.iter()
                .map(|d| (d.offset, SettleAction::Ack, ""))
                .collect(),
        )
        .await;
        c.ok(PauseGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            paused: true,
        }
        .into())
            .await;
        let seek = SeekGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            partition: None,
            target: SeekTarget::Offset(3),
        };
        match c.ok(seek.into()).await {
            Response::SeekGroup(s) => assert_eq!(
                s.partitions,
                vec![SeekGroupPartition {
                    partition: 0,
                    offset: 3
                }]
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            c.receive("orders", "billing", consumer, 10, 200)
                .await
                .is_empty(),
            "paused: nothing delivered"
        );
        assert!(describe(&mut c).await.paused);
        c.ok(PauseGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            paused: false,
        }
        .into())
            .await;
        let replay = c.receive("orders", "billing", consumer, 10, 1000).await;
        assert_eq!(
            replay
                .iter()
                .map(|d| (d.offset, d.attempt))
                .collect::<Vec<_>>(),
            vec![(3, 1), (4, 1)]
        );
    });
}

#[test]
fn a_graceful_stop_keeps_every_ack_and_closes_the_journals_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(&tmp.path().join("data"), &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("orders", 1).await;
        let values: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("order {i}").into_bytes())
            .collect();
        let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        client.produce("orders", 0, &values).await;
        let create = CreateGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            settings: settings(),
        };
        client.ok(create.into()).await;
        let consumer = client.join_group("orders", "billing", "test").await;
        let mut got = Vec::new();
        for _ in 0..50 {
            got.extend(
                client
                    .receive("orders", "billing", consumer, 500, 5000)
                    .await,
            );
            if got.len() >= 500 {
                break;
            }
        }
        assert_eq!(got.len(), 500, "every message delivered");
        let acks = got
            .iter()
            .map(|d| (d.offset, SettleAction::Ack, ""))
            .collect();
        let results = settle(&mut client, consumer, acks).await;
        assert!(results.iter().all(|r| r.error_code == ErrorCode::None));
    });
    // Stopped the moment the acks are answered: the journal writer may not
    // have appended them yet, and shutdown must wait for it.
    broker.restart_after_clean_stop();
    rt.block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        let d = describe(&mut client).await;
        assert_eq!(d.partitions[0].committed_floor, 500, "every ack kept");
        let consumer = client.join_group("orders", "billing", "test").await;
        let again = client.receive("orders", "billing", consumer, 10, 200).await;
        assert!(again.is_empty(), "acked messages came back: {again:?}");
    });
}

#[test]
fn a_disconnect_with_a_long_poll_pending_leases_nothing_to_the_gone_consumer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    let rt = runtime();
    let mut admin = rt.block_on(async {
        let mut admin = RawClient::connect(broker.addr).await;
        admin.create_topic("jobs", 1).await;
        let create = CreateGroupRequest {
            topic: "jobs".into(),
            group: "workers".into(),
            settings: settings(),
        };
        admin.ok(create.into()).await;
        let mut gone = RawClient::connect(broker.addr).await;
        let id = gone.join_group("jobs", "workers", "gone").await;
        let poll = ReceiveRequest {
            topic: "jobs".into(),
            group: "workers".into(),
            consumer_id: id,
            max_messages: 10,
            max_wait_ms: 30_000,
            max_bytes: 0,
        };
        gone.send(poll.into()).await;
        // The consumer goes away with its long-poll pending.
        drop(gone);
        admin
    });
    // Its connection ends at once (not when the long-poll would have).
    let connections = "pigeon_connections";
    pigeon_suite::wait_until(
        Duration::from_secs(10),
        "the gone connection to close",
        || pigeon_suite::metric(broker.http, connections) == 1.0,
    );
    rt.block_on(async {
        admin.produce("jobs", 0, &[b"job"]).await;
        let mut worker = RawClient::connect(broker.addr).await;
        let id = worker.join_group("jobs", "workers", "worker").await;
        let got = worker.receive("jobs", "workers", id, 10, 10_000).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].attempt, 1,
            "the message was never leased to the consumer that went away"
        );
    });
}

#[test]
fn a_receive_v1_returns_no_more_than_its_max_bytes_and_at_least_one_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("jobs", 1).await;
        let value = vec![b'v'; 1000];
        client
            .produce("jobs", 0, &[&value, &value, &value, &value, &value])
            .await;
        let create = CreateGroupRequest {
            topic: "jobs".into(),
            group: "workers".into(),
            settings: settings(),
        };
        client.ok(create.into()).await;
        let id = client.join_group("jobs", "workers", "w").await;
        let receive = |max_bytes| ReceiveRequest {
            topic: "jobs".into(),
            group: "workers".into(),
            consumer_id: id,
            max_messages: 100,
            max_wait_ms: 0,
            max_bytes,
        };
        let count = |body: ResponseBody| match body {
            ResponseBody::Ok(Response::Receive(r)) => r.deliveries.len(),
            other => panic!("{other:?}"),
        };
        // Two 1,000-byte messages fit 2,500 bytes, a third does not.
        let two = client.call_version(receive(2_500).into(), 1).await;
        assert_eq!(count(two), 2);
        // Too small for any: still one.
        let one = client.call_version(receive(10).into(), 1).await;
        assert_eq!(count(one), 1);
        // Version 0 carries no bound: the rest.
        let rest = client.call_version(receive(10).into(), 0).await;
        assert_eq!(count(rest), 2);
    });
}
