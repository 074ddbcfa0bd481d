//! The reader: following the end, start positions, stopping, errors.

use std::time::Duration;

use futures_util::StreamExt;

use super::fake_broker::FakeBroker;
use super::{bounded, fast_client_config, fast_producer_config};
use crate::batch::Record;
use crate::client::{
    Client, ClientError, Producer, ProducerConfig, ProducerRecord, Reader, ReaderConfig, StartAt,
};
use crate::protocol::ErrorCode;

async fn setup() -> (FakeBroker, Client, Producer) {
    let broker = FakeBroker::start().await;
    broker.create_topic("t", 1);
    let client = Client::connect_with(broker.addr(), fast_client_config())
        .await
        .unwrap();
    let config = ProducerConfig {
        linger: Duration::from_millis(1),
        ..fast_producer_config()
    };
    let producer = Producer::new(client.clone(), config);
    (broker, client, producer)
}

/// Sends `values` to partition 0 as one batch.
async fn produce(producer: &Producer, values: impl IntoIterator<Item = String>) {
    let mut deliveries = Vec::new();
    for value in values {
        let record = ProducerRecord::new(value).partition(0);
        deliveries.push(producer.enqueue("t", record).await.unwrap());
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await.unwrap();
    }
}

fn values(range: std::ops::Range<u32>) -> impl Iterator<Item = String> {
    range.map(|i| format!("v{i}"))
}

async fn collect(reader: Reader) -> Vec<Record> {
    reader.map(|r| r.unwrap()).collect().await
}

fn fast_reader(start: StartAt) -> ReaderConfig {
    ReaderConfig {
        max_wait: Duration::from_millis(200),
        ..ReaderConfig::new(start)
    }
}

#[tokio::test]
async fn a_following_reader_gets_records_appended_later() {
    bounded(async {
        let (_broker, client, producer) = setup().await;
        produce(&producer, values(0..3)).await;
        let mut reader = Reader::open(&client, "t", 0, fast_reader(StartAt::Latest))
            .await
            .unwrap();
        assert_eq!(reader.position(), 3);
        let writer = tokio::spawn(async move {
            for i in 3..13 {
                produce(&producer, values(i..i + 1)).await;
            }
        });
        for expected in 3..13u64 {
            let record = reader.next().await.unwrap().unwrap();
            assert_eq!(record.offset, expected);
            assert_eq!(record.value, format!("v{expected}"));
        }
        writer.await.unwrap();
        assert_eq!(reader.position(), 13);
        // Nothing more: the next fetch waits at the log end.
        let more = tokio::time::timeout(Duration::from_millis(300), reader.next()).await;
        assert!(more.is_err(), "{more:?}");
    })
    .await;
}

#[tokio::test]
async fn a_reader_starts_at_a_timestamp() {
    bounded(async {
        let (broker, client, producer) = setup().await;
        broker.behave(|b| b.clock_ms = Some(1_000));
        produce(&producer, values(0..5)).await;
        broker.behave(|b| b.clock_ms = Some(2_000));
        produce(&producer, values(5..10)).await;
        let config = fast_reader(StartAt::Timestamp(1_500)).follow(false);
        let records = collect(Reader::open(&client, "t", 0, config).await.unwrap()).await;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (5..10).collect::<Vec<_>>());
        assert!(records.iter().all(|r| r.timestamp == 2_000));
    })
    .await;
}

#[tokio::test]
async fn a_reader_not_following_stops_at_the_end_seen_when_opened() {
    bounded(async {
        let (_broker, client, producer) = setup().await;
        for chunk in 0..4 {
            produce(&producer, values(chunk * 5..chunk * 5 + 5)).await;
        }
        let config = fast_reader(StartAt::Earliest).follow(false);
        let reader = Reader::open(&client, "t", 0, config).await.unwrap();
        assert_eq!(reader.end_offset(), Some(20));
        produce(&producer, values(20..25)).await;
        let records = collect(reader).await;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..20).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn records_below_the_start_offset_are_skipped() {
    bounded(async {
        let (broker, client, producer) = setup().await;
        produce(&producer, values(0..10)).await;
        assert_eq!(broker.batch_sizes("t", 0).len(), 1, "one batch expected");
        let config = fast_reader(StartAt::Offset(3)).follow(false);
        let records = collect(Reader::open(&client, "t", 0, config).await.unwrap()).await;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (3..10).collect::<Vec<_>>());
        assert_eq!(records[0].value, "v3");
    })
    .await;
}

#[tokio::test]
async fn an_empty_partition_not_followed_ends_at_once() {
    bounded(async {
        let (_broker, client, _producer) = setup().await;
        let config = fast_reader(StartAt::Earliest).follow(false);
        assert!(
            collect(Reader::open(&client, "t", 0, config).await.unwrap())
                .await
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn an_offset_out_of_range_is_reported_with_the_earliest_offset() {
    bounded(async {
        let (_broker, client, producer) = setup().await;
        produce(&producer, values(0..2)).await;
        let mut reader = Reader::open(&client, "t", 0, fast_reader(StartAt::Offset(100)))
            .await
            .unwrap();
        let err = reader.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange));
        assert!(err.to_string().contains("earliest offset is 0"), "{err}");
        assert!(reader.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_batch_is_reported_and_ends_the_stream() {
    bounded(async {
        let (broker, client, producer) = setup().await;
        produce(&producer, values(0..3)).await;
        broker.behave(|b| b.corrupt_fetch = true);
        let mut reader = Reader::open(&client, "t", 0, fast_reader(StartAt::Earliest))
            .await
            .unwrap();
        let err = reader.next().await.unwrap().unwrap_err();
        assert!(
            matches!(err, ClientError::CorruptBatch { offset: 0, .. }),
            "{err}"
        );
        assert!(reader.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_reader_survives_a_dropped_connection() {
    bounded(async {
        let (broker, client, producer) = setup().await;
        produce(&producer, values(0..3)).await;
        let mut reader = Reader::open(&client, "t", 0, fast_reader(StartAt::Earliest))
            .await
            .unwrap();
        broker.behave(|b| b.drop_requests = 1);
        let err = reader.next().await.unwrap().unwrap_err();
        assert!(err.is_retriable(), "{err}");
        for expected in 0..3 {
            assert_eq!(reader.next().await.unwrap().unwrap().offset, expected);
        }
    })
    .await;
}
