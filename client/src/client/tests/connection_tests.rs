//! The connection: multiplexing, reconnects, timeouts, the circuit breaker.

use std::time::Duration;

use futures_util::future::join_all;

use super::fake_broker::FakeBroker;
use super::{bounded, eventually, fast_client_config, fast_producer_config};
use crate::client::{Client, ClientError, NewTopic, Producer, ProducerRecord};
use crate::protocol::ErrorCode;

#[tokio::test]
async fn concurrent_requests_answered_in_reverse_are_matched_to_their_callers() {
    bounded(async {
        let broker = FakeBroker::start().await;
        const N: u32 = 40;
        for i in 0..N {
            broker.create_topic(&format!("topic-{i}"), i + 1);
        }
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        // The broker holds all N answers, then sends them last first.
        broker.behave(|b| b.reverse_batch = N as usize);
        let admin = client.admin();
        let answers = join_all((0..N).map(|i| {
            let admin = admin.clone();
            async move { (i, admin.describe_topic(&format!("topic-{i}")).await) }
        }))
        .await;
        for (i, answer) in answers {
            let described = answer.unwrap();
            assert_eq!(described.topic, format!("topic-{i}"));
            assert_eq!(described.partitions.len(), (i + 1) as usize);
        }
        assert_eq!(broker.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn requests_beyond_the_brokers_in_flight_limit_wait_for_a_slot() {
    bounded(async {
        let broker = FakeBroker::start().await;
        broker.create_topic("t", 1);
        broker.behave(|b| {
            b.max_in_flight = 4;
            b.delay = Duration::from_millis(20);
        });
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        let admin = client.admin();
        let answers = join_all((0..20).map(|_| admin.describe_topic("t"))).await;
        assert!(answers.iter().all(Result::is_ok));
        let most = broker.most_in_flight();
        assert!((1..=4).contains(&most), "{most} requests in flight at once");
    })
    .await;
}

/// A request stops counting against the broker's in-flight limit once
/// its answer has arrived, not once its caller has read the answer: a
/// caller that holds answered requests while it sends more (a producer's
/// partition sender with batches in flight, one per partition of
/// hundreds) must not starve itself of slots.
#[tokio::test]
async fn an_answered_request_frees_its_slot_before_its_caller_reads_the_answer() {
    bounded(async {
        let broker = FakeBroker::start().await;
        broker.behave(|b| b.max_in_flight = 2);
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        let timeout = Duration::from_secs(30);
        let mut held = Vec::new();
        for _ in 0..2 {
            let request = crate::protocol::ListTopicsRequest.into();
            held.push(client.send_request(request, timeout).await.unwrap());
        }
        let request = crate::protocol::ListTopicsRequest.into();
        let third = tokio::time::timeout(
            Duration::from_secs(5),
            client.send_request(request, timeout),
        )
        .await
        .expect("the third request waited for the answered ones to be read");
        third.unwrap().answer().await.unwrap();
        for pending in held {
            pending.answer().await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_fails_requests_in_flight_and_the_next_request_reconnects() {
    bounded(async {
        let broker = FakeBroker::start().await;
        broker.create_topic("t", 1);
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        broker.behave(|b| b.drop_requests = 1);
        let err = client.admin().describe_topic("t").await.unwrap_err();
        assert!(
            matches!(err, ClientError::Connection { .. }) && err.is_retriable(),
            "{err}"
        );
        assert!(err.to_string().contains(&broker.addr()), "{err}");
        let described = client.admin().describe_topic("t").await.unwrap();
        assert_eq!(described.partitions.len(), 1);
        assert_eq!(broker.connections(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_connection_stays_usable() {
    bounded(async {
        let broker = FakeBroker::start().await;
        broker.create_topic("t", 1);
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        broker.behave(|b| b.delay = Duration::from_millis(500));
        let request = crate::protocol::ListTopicsRequest.into();
        let err = client
            .request_with_timeout(request, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        broker.behave(|b| b.delay = Duration::ZERO);
        assert_eq!(client.admin().list_topics().await.unwrap().len(), 1);
        assert_eq!(broker.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn broker_errors_carry_code_and_message() {
    bounded(async {
        let broker = FakeBroker::start().await;
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        let admin = client.admin();
        admin
            .create_topic(NewTopic::new("orders", 2))
            .await
            .unwrap();
        let err = admin
            .create_topic(NewTopic::new("orders", 2))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists));
        assert!(!err.is_retriable());
        assert_eq!(admin.list_topics().await.unwrap().len(), 1);
        admin.delete_topic("orders").await.unwrap();
        let err = admin.describe_topic("orders").await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
        client.close().await;
        assert!(matches!(
            admin.list_topics().await,
            Err(ClientError::Closed)
        ));
    })
    .await;
}

#[tokio::test]
async fn connect_fails_with_the_address_when_nothing_listens() {
    bounded(async {
        let broker = FakeBroker::start().await;
        let addr = broker.addr();
        broker.stop_listening().await;
        let err = Client::connect_with(addr.clone(), fast_client_config())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connection { .. }), "{err}");
        assert!(err.to_string().contains(&addr), "{err}");
    })
    .await;
}

#[tokio::test]
async fn circuit_opens_when_the_broker_is_unreachable_and_closes_when_it_is_back() {
    bounded(async {
        let broker = FakeBroker::start().await;
        broker.create_topic("t", 1);
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        let producer = Producer::new(client.clone(), fast_producer_config());
        producer
            .send("t", ProducerRecord::new("before").partition(0))
            .await
            .unwrap();
        broker.stop_listening().await;

        // Connection attempts fail until the threshold (3) opens the circuit.
        let admin = client.admin();
        let mut failures = 0;
        loop {
            match admin.list_topics().await.unwrap_err() {
                ClientError::CircuitOpen { .. } => break,
                ClientError::Connection { .. } => failures += 1,
                other => panic!("unexpected {other}"),
            }
            assert!(failures <= 4, "the circuit never opened");
        }
        assert!(client.is_circuit_open());
        let err = producer
            .send("t", ProducerRecord::new("while down").partition(0))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::CircuitOpen { .. }), "{err}");
        assert!(err.to_string().contains("failing fast"), "{err}");

        broker.start_listening().await;
        // A probe (at most every second) finds the broker and closes the circuit.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match admin.list_topics().await {
                Ok(_) => break,
                Err(ClientError::CircuitOpen { .. } | ClientError::Connection { .. }) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "circuit never closed"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(!client.is_circuit_open());
        let stored = producer
            .send("t", ProducerRecord::new("after").partition(0))
            .await
            .unwrap();
        assert_eq!(stored.offset, 1);
        eventually("two connections", || broker.connections() == 2).await;
    })
    .await;
}
