//! End-to-end tests of the Rust `Consumer`'s leases against a real broker:
//! a delivery the application still works on keeps its lease, and a
//! buffered delivery whose lease ran out is not handed out.
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
