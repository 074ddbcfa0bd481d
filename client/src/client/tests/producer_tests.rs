//! The producer: batching, partitioning, back-pressure, retries, timeouts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;

use super::fake_broker::FakeBroker;
use super::{bounded, eventually, fast_client_config, fast_producer_config};
use crate::client::producer::MAX_REQUESTS_IN_FLIGHT;
use crate::client::{
    Client, ClientError, Delivery, MAX_IN_FLIGHT_BATCHES, Producer, ProducerConfig, ProducerRecord,
    partition_for_key,
};
use crate::protocol::ErrorCode;

async fn setup(partitions: u32, config: ProducerConfig) -> (FakeBroker, Client, Producer) {
    let broker = FakeBroker::start().await;
    broker.create_topic("t", partitions);
    let client = Client::connect_with(broker.addr(), fast_client_config())
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), config);
    (broker, client, producer)
}

/// The offsets `deliveries` were stored at, in order (each must succeed).
async fn offsets_of(deliveries: Vec<Delivery>) -> Vec<u64> {
    join_all(deliveries)
        .await
        .into_iter()
        .map(|r| r.unwrap().offset)
        .collect()
}

#[tokio::test]
async fn concurrent_sends_share_few_produce_requests_with_dense_offsets() {
    bounded(async {
        let config = ProducerConfig {
            linger: Duration::from_millis(100),
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(1, config).await;
        const N: usize = 200;
        let results =
            join_all((0..N).map(|i| producer.send("t", ProducerRecord::new(format!("value-{i}")))))
                .await;
        let produce_requests = broker.produce_requests();
        assert!(
            produce_requests <= 4,
            "{N} sends took {produce_requests} produce requests"
        );
        let stored = broker.records("t", 0);
        assert_eq!(stored.len(), N);
        let mut offsets = BTreeSet::new();
        for (i, result) in results.into_iter().enumerate() {
            let metadata = result.unwrap();
            assert_eq!(metadata.partition, 0);
            assert!(
                offsets.insert(metadata.offset),
                "offset {} twice",
                metadata.offset
            );
            // Each send got the offset of its own record.
            let record = &stored[metadata.offset as usize];
            assert_eq!(record.offset, metadata.offset);
            assert_eq!(record.value, format!("value-{i}"));
            assert_eq!(record.timestamp, metadata.timestamp);
        }
        assert_eq!(offsets, (0..N as u64).collect());
        assert_eq!(producer.buffered_bytes(), 0);
    })
    .await;
}

#[tokio::test]
async fn batches_never_exceed_max_batch_bytes() {
    bounded(async {
        let config = ProducerConfig {
            linger: Duration::from_millis(50),
            max_batch_bytes: 1000,
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(1, config).await;
        let value = vec![b'x'; 100];
        let results = join_all(
            (0..50).map(|_| producer.send("t", ProducerRecord::new(value.clone()).partition(0))),
        )
        .await;
        assert!(results.iter().all(Result::is_ok));
        let sizes = broker.batch_sizes("t", 0);
        assert!(sizes.len() >= 6, "{sizes:?}");
        assert!(sizes.iter().all(|&s| s <= 1000), "{sizes:?}");
        assert_eq!(broker.records("t", 0).len(), 50);
    })
    .await;
}

#[tokio::test]
async fn a_record_larger_than_a_batch_is_refused_at_once() {
    bounded(async {
        let config = ProducerConfig {
            max_batch_bytes: 1000,
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(1, config).await;
        let err = producer
            .send("t", ProducerRecord::new(vec![0u8; 1000]).partition(0))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::RecordTooLarge { max: 1000, .. }),
            "{err}"
        );
        assert_eq!(broker.produce_requests(), 0);
    })
    .await;
}

#[tokio::test]
async fn keyed_records_go_to_a_stable_partition() {
    bounded(async {
        let (broker, _client, producer) = setup(8, fast_producer_config()).await;
        let mut seen: HashMap<String, u32> = HashMap::new();
        for round in 0..2 {
            for k in 0..20 {
                let key = format!("key-{k}");
                let stored = producer
                    .send(
                        "t",
                        ProducerRecord::new(format!("{round}")).key(key.clone()),
                    )
                    .await
                    .unwrap();
                assert_eq!(stored.partition, partition_for_key(key.as_bytes(), 8));
                let first = *seen.entry(key.clone()).or_insert(stored.partition);
                assert_eq!(first, stored.partition, "{key} moved");
            }
        }
        let used: BTreeSet<u32> = seen.values().copied().collect();
        assert!(used.len() > 3, "20 keys hashed to only {used:?}");
        for (key, partition) in seen {
            let on_partition = broker
                .records("t", partition)
                .into_iter()
                .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
                .count();
            assert_eq!(on_partition, 2, "{key}");
        }
    })
    .await;
}

#[tokio::test]
async fn keyless_records_are_spread_round_robin() {
    bounded(async {
        let (broker, _client, producer) = setup(4, fast_producer_config()).await;
        for i in 0..8 {
            producer
                .send("t", ProducerRecord::new(format!("{i}")))
                .await
                .unwrap();
        }
        for p in 0..4 {
            assert_eq!(broker.records("t", p).len(), 2, "partition {p}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_full_buffer_makes_send_wait_until_space_is_freed() {
    bounded(async {
        let config = ProducerConfig {
            linger: Duration::ZERO,
            max_batch_bytes: 1024,
            buffer_memory: 2048,
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(1, config).await;
        broker.stall_produce(true);
        let enqueued = Arc::new(AtomicUsize::new(0));
        let sending = {
            let producer = producer.clone();
            let enqueued = enqueued.clone();
            tokio::spawn(async move {
                let mut deliveries = Vec::new();
                for i in 0..10 {
                    let record = ProducerRecord::new(vec![i as u8; 380]).partition(0);
                    deliveries.push(producer.enqueue("t", record).await.unwrap());
                    enqueued.fetch_add(1, Ordering::SeqCst);
                }
                join_all(deliveries).await
            })
        };
        // 380-byte values (393 bytes encoded): five fit in 2048 bytes; the sixth must wait.
        eventually("the buffer fills up", || {
            enqueued.load(Ordering::SeqCst) == 5
        })
        .await;
        assert!(producer.buffered_bytes() <= 2048);
        assert!(producer.buffered_bytes() + 380 > 2048);
        let waiting = tokio::time::timeout(Duration::from_millis(100), async {
            eventually("a sixth record", || enqueued.load(Ordering::SeqCst) > 5).await
        })
        .await;
        assert!(waiting.is_err(), "a send did not wait for buffer space");
        assert_eq!(enqueued.load(Ordering::SeqCst), 5);

        broker.stall_produce(false);
        let results = sending.await.unwrap();
        let offsets: Vec<u64> = results.into_iter().map(|r| r.unwrap().offset).collect();
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        assert_eq!(producer.buffered_bytes(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_send_is_retried_after_the_connection_drops() {
    bounded(async {
        let (broker, _client, producer) = setup(1, fast_producer_config()).await;
        broker.behave(|b| b.drop_requests = 2);
        let stored = producer
            .send("t", ProducerRecord::new("survivor").partition(0))
            .await
            .unwrap();
        assert_eq!(stored.offset, 0);
        assert_eq!(broker.connections(), 3);
        let records = broker.records("t", 0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].value, "survivor");
    })
    .await;
}

#[tokio::test]
async fn non_retriable_errors_fail_the_send_at_once() {
    bounded(async {
        let (broker, _client, producer) = setup(1, fast_producer_config()).await;
        let err = producer
            .send("t", ProducerRecord::new("x").partition(7))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownPartition), "{err}");
        assert_eq!(broker.produce_requests(), 1);
        let err = producer
            .send("missing", ProducerRecord::new("x"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic), "{err}");
    })
    .await;
}

#[tokio::test]
async fn delivery_times_out_while_the_broker_stalls() {
    bounded(async {
        let config = ProducerConfig {
            delivery_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(100),
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(1, config).await;
        broker.stall_produce(true);
        let err = producer
            .send("t", ProducerRecord::new("late").partition(0))
            .await
            .unwrap_err();
        match &err {
            ClientError::DeliveryTimeout { last_error, .. } => {
                assert!(matches!(**last_error, ClientError::Timeout { .. }), "{err}");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(broker.produce_requests() >= 2, "no retry happened");
        assert_eq!(producer.buffered_bytes(), 0);
    })
    .await;
}

/// Batches of many partitions that queue while the producer's requests
/// are out go as a few multi-partition requests, not one request each;
/// every record still lands in its own topic and partition, in order
/// (issue 16: at 10,000 partitions a request per one-record batch was
/// the limit).
#[tokio::test]
async fn batches_of_many_partitions_share_requests_per_topic() {
    bounded(async {
        const PARTITIONS: u32 = 200;
        let config = ProducerConfig {
            linger: Duration::ZERO,
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(PARTITIONS, config).await;
        broker.create_topic("u", PARTITIONS);
        // The broker holds the first requests, so that the producer's
        // requests in flight reach their bound and the rest queue.
        broker.stall_produce(true);
        let mut deliveries = Vec::new();
        for round in 0..2 {
            for partition in 0..PARTITIONS {
                for topic in ["t", "u"] {
                    let value = format!("{topic}-{partition}-{round}");
                    let record = ProducerRecord::new(value).partition(partition);
                    deliveries.push(producer.enqueue(topic, record).await.unwrap());
                }
            }
        }
        eventually("the requests in flight reach their bound", || {
            broker.produce_requests() == MAX_REQUESTS_IN_FLIGHT
        })
        .await;
        broker.stall_produce(false);
        producer.flush().await;
        for delivery in deliveries {
            // Unconstrained: tokio's cooperative budget would make the
            // 129th ready answer of one poll look pending.
            let done = futures_util::FutureExt::now_or_never(tokio::task::unconstrained(delivery));
            assert!(matches!(done, Some(Ok(_))), "{done:?}");
        }
        for topic in ["t", "u"] {
            for partition in 0..PARTITIONS {
                let values: Vec<_> = broker
                    .records(topic, partition)
                    .into_iter()
                    .map(|r| r.value)
                    .collect();
                let expected: Vec<String> = (0..2)
                    .map(|round| format!("{topic}-{partition}-{round}"))
                    .collect();
                assert_eq!(values, expected, "{topic}/{partition}");
            }
        }
        let requests = broker.produce_requests();
        let batches = broker.produce_batches();
        assert!(batches >= 2 * PARTITIONS as usize, "{batches} batches");
        // One request per batch before; how few now depends on when each
        // sender ran (the exact bound is the gatherer's own test).
        assert!(
            requests * 2 <= batches,
            "{batches} batches took {requests} requests"
        );
    })
    .await;
}

#[tokio::test]
async fn flush_sends_without_waiting_for_linger_and_close_refuses_new_records() {
    bounded(async {
        let config = ProducerConfig {
            linger: Duration::from_secs(60),
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(2, config).await;
        let mut deliveries = Vec::new();
        for i in 0..6 {
            let record = ProducerRecord::new(format!("{i}")).partition(i % 2);
            deliveries.push(producer.enqueue("t", record).await.unwrap());
        }
        producer.flush().await;
        assert_eq!(broker.produce_batches(), 2, "one batch per partition");
        assert!(broker.produce_requests() <= 2);
        for delivery in deliveries {
            let done = futures_util::FutureExt::now_or_never(delivery);
            assert!(matches!(done, Some(Ok(_))), "{done:?}");
        }
        let last = producer
            .enqueue("t", ProducerRecord::new("last").partition(0))
            .await
            .unwrap();
        producer.close().await;
        assert!(futures_util::FutureExt::now_or_never(last).is_some_and(|r| r.is_ok()));
        let err = producer
            .send("t", ProducerRecord::new("x").partition(0))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err}");
        assert_eq!(broker.records("t", 0).len(), 4);
    })
    .await;
}

#[tokio::test]
async fn a_throttled_producer_waits_before_its_next_request() {
    bounded(async {
        let (broker, _client, producer) = setup(2, fast_producer_config()).await;
        broker.behave(|b| b.throttle_ms = 200);
        // Two partitions, three sends each, one at a time: six requests;
        // every answer asks for 200 ms of quiet before the next one.
        for i in 0..6u32 {
            let record = ProducerRecord::new(format!("v{i}")).partition(i % 2);
            producer.send("t", record).await.unwrap();
        }
        let arrivals = broker.produce_arrivals();
        assert_eq!(arrivals.len(), 6);
        for pair in arrivals.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(
                gap >= Duration::from_millis(190),
                "a produce request came {gap:?} after a throttled answer"
            );
        }
        let stats = producer.throttle_stats();
        assert_eq!(stats.throttled_responses, 6);
        assert_eq!(stats.throttle_time, Duration::from_millis(1200));
        assert!(stats.waited >= Duration::from_millis(900), "{stats:?}");
        // The throttle lifts: with no more throttling, sends go at once.
        broker.behave(|b| b.throttle_ms = 0);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let started = std::time::Instant::now();
        producer
            .send("t", ProducerRecord::new("free"))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(150));
        assert_eq!(producer.throttle_stats().throttled_responses, 6);
    })
    .await;
}

/// Sends records of 380 bytes (two per 1 KiB batch) to partition 0 of a
/// stalled broker and returns how many produce requests went out before
/// any was answered, then the offsets the records got once released.
async fn requests_in_flight_while_stalled(idempotent: bool) -> (usize, Vec<u64>) {
    let config = ProducerConfig {
        linger: Duration::ZERO,
        max_batch_bytes: 1024,
        idempotent,
        ..fast_producer_config()
    };
    let (broker, _client, producer) = setup(1, config).await;
    broker.stall_produce(true);
    let mut deliveries = Vec::new();
    for i in 0..20u8 {
        let record = ProducerRecord::new(vec![i; 380]).partition(0);
        deliveries.push(producer.enqueue("t", record).await.unwrap());
    }
    let window = if idempotent { MAX_IN_FLIGHT_BATCHES } else { 1 };
    eventually("the window fills", || broker.produce_requests() == window).await;
    let more = tokio::time::timeout(Duration::from_millis(100), async {
        eventually("one more request", || broker.produce_requests() > window).await
    })
    .await;
    assert!(more.is_err(), "more than {window} batches in flight");
    let sent = broker.produce_requests();
    broker.stall_produce(false);
    let offsets = offsets_of(deliveries).await;
    let stored: Vec<u8> = broker.records("t", 0).iter().map(|r| r.value[0]).collect();
    assert_eq!(stored, (0..20).collect::<Vec<u8>>(), "stored out of order");
    (sent, offsets)
}

#[tokio::test]
async fn an_idempotent_producer_pipelines_a_partitions_batches_in_order() {
    bounded(async {
        let (sent, offsets) = requests_in_flight_while_stalled(true).await;
        assert_eq!(sent, MAX_IN_FLIGHT_BATCHES);
        assert_eq!(offsets, (0..20).collect::<Vec<u64>>());
    })
    .await;
}

#[tokio::test]
async fn without_idempotence_one_batch_per_partition_is_in_flight() {
    bounded(async {
        let (sent, offsets) = requests_in_flight_while_stalled(false).await;
        assert_eq!(sent, 1);
        assert_eq!(offsets, (0..20).collect::<Vec<u64>>());
    })
    .await;
}

#[tokio::test]
async fn a_batch_that_is_not_full_waits_for_the_one_in_flight_and_gathers_records() {
    bounded(async {
        let config = ProducerConfig {
            linger: Duration::from_millis(1),
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(1, config).await;
        broker.stall_produce(true);
        let mut deliveries = vec![
            producer
                .enqueue("t", ProducerRecord::new("first").partition(0))
                .await
                .unwrap(),
        ];
        eventually("the first batch is sent", || broker.produce_requests() == 1).await;
        for i in 0..5 {
            let record = ProducerRecord::new(format!("later-{i}")).partition(0);
            deliveries.push(producer.enqueue("t", record).await.unwrap());
        }
        let more = tokio::time::timeout(Duration::from_millis(100), async {
            eventually("a second request", || broker.produce_requests() > 1).await
        })
        .await;
        assert!(more.is_err(), "a partial batch was pipelined");
        broker.stall_produce(false);
        let offsets = offsets_of(deliveries).await;
        assert_eq!(offsets, (0..6).collect::<Vec<u64>>());
        assert_eq!(
            broker.produce_requests(),
            2,
            "the five later records share one batch"
        );
    })
    .await;
}

#[tokio::test]
async fn with_no_linger_a_batch_that_is_not_full_goes_behind_the_one_in_flight() {
    bounded(async {
        let config = ProducerConfig {
            linger: Duration::ZERO,
            ..fast_producer_config()
        };
        let (broker, _client, producer) = setup(1, config).await;
        broker.stall_produce(true);
        let mut deliveries = Vec::new();
        for i in 0..3u64 {
            let record = ProducerRecord::new(format!("record-{i}")).partition(0);
            deliveries.push(producer.enqueue("t", record).await.unwrap());
            let sent = i as usize + 1;
            eventually("the record goes without waiting for the one before", || {
                broker.produce_requests() == sent
            })
            .await;
        }
        broker.stall_produce(false);
        let offsets = offsets_of(deliveries).await;
        assert_eq!(offsets, vec![0, 1, 2]);
        let stored: Vec<Vec<u8>> = broker
            .records("t", 0)
            .into_iter()
            .map(|r| r.value.to_vec())
            .collect();
        assert_eq!(
            stored,
            vec![
                b"record-0".to_vec(),
                b"record-1".to_vec(),
                b"record-2".to_vec()
            ]
        );
    })
    .await;
}
