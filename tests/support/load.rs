//! Load for benchmarks and tests: records sent through a batching
//! `Producer`, with a bounded number of acknowledgements awaited lazily,
//! or as fast as it takes them until told to stop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use pigeon_client::client::{Client, Producer, ProducerConfig, ProducerRecord};

/// The benchmarks' loading producer on `client`: default batching, no
/// idempotence (a load is sent once, without the producer's registration
/// and sequence checks).
pub fn loader(client: Client) -> Producer {
    Producer::new(
        client,
        ProducerConfig {
            idempotent: false,
            ..ProducerConfig::default()
        },
    )
}

/// Enqueues every record of `records` to `topic` and waits for each one's
/// acknowledgement, holding at most `window` unawaited at a time (the
/// oldest is awaited before another is enqueued past it); returns how
/// many were acknowledged. Panics on any failure (a benchmark's load must
/// all be stored).
pub async fn produce_all(
    producer: &Producer,
    topic: &str,
    records: impl IntoIterator<Item = ProducerRecord>,
    window: usize,
) -> u64 {
    let mut pending = VecDeque::with_capacity(window.min(1 << 20));
    let mut acked = 0;
    for record in records {
        pending.push_back(producer.enqueue(topic, record).await.expect("enqueue"));
        if pending.len() >= window.max(1)
            && let Some(oldest) = pending.pop_front()
        {
            oldest.await.expect("delivered");
            acked += 1;
        }
    }
    for delivery in pending {
        delivery.await.expect("delivered");
        acked += 1;
    }
    acked
}

/// Enqueues copies of `value` to `topic` as fast as `producer` takes them
/// until `stop` is set, then closes the producer and waits for every
/// acknowledgement; panics with `what` on any failure (an overloaded
/// broker may slow a producer, never lose its records).
pub async fn produce_until_stopped(
    producer: &Producer,
    topic: &str,
    value: &[u8],
    stop: &AtomicBool,
    what: &str,
) {
    let mut deliveries = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let record = ProducerRecord::new(value.to_vec());
        deliveries.push(producer.enqueue(topic, record).await.expect("enqueue"));
    }
    producer.close().await;
    for delivery in deliveries {
        delivery.await.expect(what);
    }
}
