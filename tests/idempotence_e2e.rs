//! End-to-end tests of idempotent producers against the real broker:
//! retries through a connection-dropping proxy and through `kill -9`
//! restarts never duplicate a record, and a second instance with the same
//! producer name fences the first.

use std::time::Duration;

use pigeon_client::client::{
    Admin, Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use pigeon_client::protocol::ErrorCode;
use pigeon_suite::proxy::FaultyProxy;
use pigeon_suite::raw::RawClient;
use pigeon_suite::{Broker, runtime};

/// A seed from the environment (to replay a failure) or the clock; printed.
fn seed() -> u32 {
    let seed = std::env::var("PIGEON_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.subsec_nanos() | 1)
        });
    eprintln!("seed {seed} (replay with PIGEON_TEST_SEED={seed})");
    seed
}

fn producer(addr: std::net::SocketAddr, name: &str) -> Producer {
    let client = Client::lazy(addr.to_string(), ClientConfig::default());
    let config = ProducerConfig {
        producer_name: Some(name.into()),
        linger: Duration::from_millis(2),
        // Small batches: many requests, so many chances to lose an answer.
        max_batch_bytes: 1024,
        ..ProducerConfig::default()
    };
    Producer::new(client, config)
}

async fn create_topic(addr: std::net::SocketAddr, topic: &str) {
    let client = Client::connect(addr.to_string()).await.expect("connect");
    Admin::new(client)
        .create_topic(NewTopic::new(topic, 1))
        .await
        .expect("create topic");
}

/// Every value of partition 0, read straight from the broker.
async fn stored_values(addr: std::net::SocketAddr, topic: &str) -> Vec<Vec<u8>> {
    let mut client = RawClient::connect(addr).await;
    client
        .read_values(topic, 0, 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

fn expected(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("record-{i:05}").into_bytes())
        .collect()
}

#[test]
fn retries_through_a_lossy_connection_store_each_record_once_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        create_topic(broker.addr, "orders").await;
        // One response chunk in 10 is lost with its connection.
        let proxy = FaultyProxy::start(broker.addr, 100_000, seed()).await;
        let producer = producer(proxy.addr, "orders-service-1");
        let mut deliveries = Vec::new();
        for value in expected(10_000) {
            let record = ProducerRecord::new(value).partition(0);
            deliveries.push(producer.enqueue("orders", record).await.expect("enqueue"));
        }
        let mut offsets = Vec::new();
        for delivery in deliveries {
            offsets.push(
                delivery
                    .await
                    .expect("delivered despite dropped connections")
                    .offset,
            );
        }
        assert!(
            proxy.drops() > 0,
            "the proxy dropped nothing: the test proved nothing"
        );
        assert_eq!(
            offsets,
            (0..10_000).collect::<Vec<u64>>(),
            "each record got the next offset, in order"
        );
        let stored = stored_values(broker.addr, "orders").await;
        assert_eq!(
            stored.len(),
            10_000,
            "{} records stored for 10000 sent ({} drops)",
            stored.len(),
            proxy.drops()
        );
        assert!(
            stored == expected(10_000),
            "records are stored in order, each once"
        );
    });
}

#[test]
fn kill_9_while_sending_then_restart_stores_each_record_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(&tmp.path().join("data"), &[]);
    let rt = runtime();
    let (proxy, deliveries) = rt.block_on(async {
        create_topic(broker.addr, "orders").await;
        let proxy = FaultyProxy::start(broker.addr, 0, 1).await;
        let producer = producer(proxy.addr, "orders-service-2");
        let mut deliveries = Vec::new();
        for value in expected(5_000) {
            let record = ProducerRecord::new(value).partition(0);
            deliveries.push(producer.enqueue("orders", record).await.expect("enqueue"));
        }
        // Let part of it through, then pull the plug.
        pigeon_suite::wait_until(Duration::from_secs(30), "some records stored", || {
            std::fs::metadata(
                tmp.path()
                    .join("data/topics/orders/0/00000000000000000000.log"),
            )
            .is_ok_and(|m| m.len() > 20_000)
        });
        (proxy, deliveries)
    });
    broker.kill();
    broker.restart();
    proxy.set_upstream(broker.addr);
    rt.block_on(async {
        for delivery in deliveries {
            delivery.await.expect("retries complete after the restart");
        }
        let stored = stored_values(broker.addr, "orders").await;
        assert_eq!(stored.len(), 5_000, "records stored for 5000 sent");
        assert!(
            stored == expected(5_000),
            "records are stored in order, each once"
        );
    });
}

#[test]
fn a_second_instance_with_the_same_name_fences_the_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        create_topic(broker.addr, "orders").await;
        let old = producer(broker.addr, "orders-service-3");
        old.send(
            "orders",
            ProducerRecord::new("from the old instance").partition(0),
        )
        .await
        .expect("old sends first");
        let new = producer(broker.addr, "orders-service-3");
        new.send(
            "orders",
            ProducerRecord::new("from the new instance").partition(0),
        )
        .await
        .expect("new sends");
        let err = old
            .send("orders", ProducerRecord::new("zombie write").partition(0))
            .await
            .expect_err("the old instance is fenced");
        assert_eq!(err.code(), Some(ErrorCode::ProducerFenced), "{err}");
        assert!(err.to_string().contains("another instance"), "{err}");
        // It stays fenced, failing at once.
        let again = old
            .send("orders", ProducerRecord::new("zombie again").partition(0))
            .await
            .expect_err("still fenced");
        assert_eq!(again.code(), Some(ErrorCode::ProducerFenced));
        let stored = stored_values(broker.addr, "orders").await;
        assert_eq!(
            stored,
            vec![
                b"from the old instance".to_vec(),
                b"from the new instance".to_vec()
            ]
        );
    });
}

#[test]
fn producer_state_survives_a_clean_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(&tmp.path().join("data"), &[]);
    let rt = runtime();
    rt.block_on(async {
        create_topic(broker.addr, "orders").await;
        let p = producer(broker.addr, "orders-service-4");
        p.send("orders", ProducerRecord::new("one").partition(0))
            .await
            .expect("send");
    });
    assert_eq!(broker.terminate(), Some(0));
    broker.restart();
    rt.block_on(async {
        // A fenced epoch stays fenced across the restart: the registry is durable.
        let first = producer(broker.addr, "orders-service-4");
        first
            .send("orders", ProducerRecord::new("two").partition(0))
            .await
            .expect("send after restart");
        let second = producer(broker.addr, "orders-service-4");
        second
            .send("orders", ProducerRecord::new("three").partition(0))
            .await
            .expect("send");
        let err = first
            .send("orders", ProducerRecord::new("zombie").partition(0))
            .await
            .expect_err("fenced");
        assert_eq!(err.code(), Some(ErrorCode::ProducerFenced), "{err}");
        let stored = stored_values(broker.addr, "orders").await;
        assert_eq!(
            stored,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    });
}

/// A producer may keep several batches of a partition in flight on one
/// connection: the broker queues each produce at the partition before it
/// reads the next request, so the batches are appended in the order sent
/// and their sequence numbers are never seen out of order.
#[test]
fn pipelined_batches_on_one_connection_are_appended_in_the_order_sent() {
    use pigeon_client::batch::{BatchBuilder, ProducerStamp};
    use pigeon_client::protocol::*;
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    let rt = runtime();
    rt.block_on(async {
        create_topic(broker.addr, "orders").await;
        let mut client = RawClient::connect(broker.addr).await;
        let (producer_id, producer_epoch) = match client
            .ok(RegisterProducerRequest {
                name: "pipelined".into(),
            }
            .into())
            .await
        {
            Response::RegisterProducer(r) => (r.producer_id, r.producer_epoch),
            other => panic!("{other:?}"),
        };
        const BATCHES: usize = 60;
        const PER_BATCH: usize = 50;
        let mut ids = Vec::new();
        for b in 0..BATCHES {
            let mut builder = BatchBuilder::new();
            for r in 0..PER_BATCH {
                builder.push(
                    None,
                    format!("record-{:05}", b * PER_BATCH + r).as_bytes(),
                    &[],
                );
            }
            let stamp = ProducerStamp {
                producer_id,
                producer_epoch,
                base_sequence: (b * PER_BATCH) as i32,
            };
            ids.push(
                client
                    .send_produce("orders", 0, vec![builder.build(stamp, 0)], 30_000)
                    .await,
            );
        }
        let mut answers = std::collections::HashMap::new();
        while answers.len() < BATCHES {
            let (id, answer) = client.next_produce_answer().await;
            answers.insert(id, answer);
        }
        for (b, id) in ids.iter().enumerate() {
            let answer = &answers[id];
            assert_eq!(
                (answer.error_code, answer.base_offset),
                (ErrorCode::None, (b * PER_BATCH) as u64),
                "batch {b}: {}",
                answer.error_message
            );
        }
        assert_eq!(
            stored_values(broker.addr, "orders").await,
            expected(BATCHES * PER_BATCH)
        );
    });
}
