//! Load for the benchmarks: records sent through a batching `Producer`
//! with a bounded number of acknowledgements awaited lazily.

use std::collections::VecDeque;

use pigeon_client::client::{Producer, ProducerRecord};

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
