//! End-to-end tests of the Rust `Consumer`'s leases against a real broker:
//! a delivery the application still works on keeps its lease, a buffered
//! delivery whose lease ran out is not handed out, and closing the
//! consumer releases what it never handed out (not counted as an attempt),
//! including the answer of a Receive its caller gave up on.
//!
//! The slow work is the subject of these tests, so they sleep for it (a
//! few seconds in all); every other wait is bounded.

use std::time::Duration;

use pigeon_client::client::{
    Client, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use pigeon_client::protocol::GroupSettings;
use pigeon_suite::{Broker, runtime};

/// A broker with topic `t` holding `count` messages and group `g` whose
/// leases last `ack_timeout_ms`.
async fn setup(broker: &Broker, count: usize, ack_timeout_ms: u32) -> Client {
    let client = Client::connect(&broker.addr.to_string())
        .await
        .expect("connect");
    client
        .admin()
        .create_topic(NewTopic::new("t", 1))
        .await
        .expect("topic");
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..count {
        producer
            .send("t", ProducerRecord::new(format!("m{i}")))
            .await
            .expect("send");
    }
    let settings = GroupSettings {
        ack_timeout_ms,
        ..GroupSettings::default()
    };
    client
        .admin()
        .create_group("t", "g", settings)
        .await
        .expect("group");
    client
}

#[test]
fn a_delivery_held_longer_than_the_ack_timeout_keeps_its_lease() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        let client = setup(&broker, 1, 1_000).await;
        let config = ConsumerConfig {
            max_messages: 1,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::join(&client, "t", "g", config)
            .await
            .expect("join");
        let within = Duration::from_secs(10);
        let delivery = tokio::time::timeout(within, consumer.next_delivery())
            .await
            .expect("in time")
            .expect("delivery");
        // Slow work: two and a half ack timeouts.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        delivery
            .ack()
            .await
            .expect("the lease was kept, so the ack counts");
        assert_eq!(delivery.attempt, 1);
    });
}

#[test]
fn a_buffered_delivery_whose_lease_ran_out_is_not_handed_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        let client = setup(&broker, 2, 1_000).await;
        let config = ConsumerConfig {
            max_messages: 2,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::join(&client, "t", "g", config)
            .await
            .expect("join");
        let within = Duration::from_secs(10);
        let first = tokio::time::timeout(within, consumer.next_delivery())
            .await
            .expect("in time")
            .expect("first");
        assert_eq!((first.offset, first.attempt), (0, 1));
        // The second waits in the buffer longer than its lease.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        first.ack().await.expect("ack");
        let next = tokio::time::timeout(within, consumer.next_delivery())
            .await
            .expect("in time")
            .expect("next");
        assert_eq!(next.offset, 1);
        assert_eq!(
            next.attempt, 2,
            "the copy whose lease ran out in the buffer was dropped; this is the redelivery"
        );
        next.ack().await.expect("its lease is alive");
    });
}

/// Up to `count` deliveries from a new consumer of `g` (one Receive of
/// at most `count`, waiting up to 10 s), as `(offset, attempt)`, each
/// acked.
async fn next_consumer_gets(client: &Client, count: u32) -> Vec<(u64, u32)> {
    let config = ConsumerConfig {
        max_messages: count,
        ..ConsumerConfig::default()
    };
    let mut next = Consumer::join(client, "t", "g", config)
        .await
        .expect("join");
    let batch = next
        .next_batch_within(count as usize, Duration::from_secs(10))
        .await
        .expect("receive");
    let acked = pigeon_client::client::GroupDelivery::ack_all(&batch)
        .await
        .expect("ack");
    assert!(acked.iter().all(Result::is_ok), "{acked:?}");
    next.close().await;
    batch.iter().map(|d| (d.offset, d.attempt)).collect()
}

#[test]
fn closing_a_consumer_releases_what_it_never_handed_out_without_counting_an_attempt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        // A long ack timeout: only a release brings the rest back soon.
        let client = setup(&broker, 10, 30_000).await;
        let config = ConsumerConfig {
            max_messages: 10,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::join(&client, "t", "g", config)
            .await
            .expect("join");
        let within = Duration::from_secs(10);
        for offset in 0..2 {
            let delivery = tokio::time::timeout(within, consumer.next_delivery())
                .await
                .expect("in time")
                .expect("delivery");
            assert_eq!((delivery.offset, delivery.attempt), (offset, 1));
            delivery.ack().await.expect("ack");
        }
        // The other 8 came in the same Receive and wait in the buffer.
        consumer.close().await;
        let next = next_consumer_gets(&client, 10).await;
        assert_eq!(
            next,
            (2..10).map(|o| (o, 1)).collect::<Vec<_>>(),
            "the 8 never handed out come back at once, at attempt 1"
        );
    });
}

#[test]
fn a_receive_given_up_by_its_caller_is_released_by_close_not_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &[]);
    runtime().block_on(async {
        let client = setup(&broker, 0, 30_000).await;
        let config = ConsumerConfig {
            max_messages: 5,
            max_wait: Duration::from_secs(5),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::join(&client, "t", "g", config)
            .await
            .expect("join");
        // The caller stops waiting (as `pigeon consume` does on Ctrl-C)
        // while the broker holds the long-poll Receive.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            consumer.next_within(Duration::from_secs(5)),
        )
        .await;
        assert!(gave_up.is_err(), "nothing to receive yet");
        // A message arrives: the broker leases it to the waiting Receive.
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        producer
            .send("t", ProducerRecord::new("late"))
            .await
            .expect("send");
        consumer.close().await;
        assert_eq!(
            next_consumer_gets(&client, 5).await,
            vec![(0, 1)],
            "the answer nobody waited for was kept and released, not counted"
        );
    });
}
