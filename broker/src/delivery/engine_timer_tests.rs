//! Tests of the engine's timer and its waiting receives: the engine wakes
//! for deadlines, never again and again for a redelivery nobody can take,
//! and a release gives a message back without counting an attempt.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::delivery::test_support::{MemSink, MemSource, offsets, settings, start_engine};

/// Lets the engine run as much as it wants without moving the paused
/// clock: a spinning timer shows as wakes.
async fn let_it_run() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_due_redelivery_nobody_can_take_does_not_wake_the_engine_again_and_again() {
    let (source, sink) = (MemSource::watched(1, 2), Arc::new(MemSink::default()));
    let group = start_engine(&source, &sink);
    let first = group.join("first").await.expect("join");
    let got = group
        .receive(first, 2, Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(offsets(&got), vec![(0, 0, 1), (0, 1, 1)]);
    // Both come back due at once, and nobody is receiving.
    let now = Some(Duration::ZERO);
    let nacks = vec![(0, 0, Settle::Nack(now)), (0, 1, Settle::Nack(now))];
    group.settle(first, nacks).await.expect("settle");
    let before = group.timer_wakes();
    let_it_run().await;
    let spins = group.timer_wakes() - before;
    assert!(
        spins <= 1,
        "no consumer waiting: the engine woke {spins} times"
    );

    // Paused, with a receive waiting 5 s: one wake, at its deadline.
    group.pause(true).await.expect("pause").expect("saved");
    let before = group.timer_wakes();
    let empty = group
        .receive(first, 1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert!(empty.is_empty());
    let wakes = group.timer_wakes() - before;
    assert!(wakes <= 2, "paused: the engine woke {wakes} times in 5 s");
    group.pause(false).await.expect("resume").expect("saved");

    // A consumer at max_in_flight waits 5 s while the other message is due.
    let one_at_a_time = GroupSettings {
        max_in_flight: 1,
        ..settings()
    };
    group
        .alter(one_at_a_time)
        .await
        .expect("alter")
        .expect("saved");
    let busy = group.join("busy").await.expect("join");
    let held = group
        .receive(busy, 1, Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(offsets(&held), vec![(0, 0, 2)]);
    let longer = vec![(0, 0, Settle::Extend(Duration::from_secs(60)))];
    group.settle(busy, longer).await.expect("extend");
    let before = group.timer_wakes();
    let empty = group
        .receive(busy, 1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert!(empty.is_empty(), "at max_in_flight");
    let wakes = group.timer_wakes() - before;
    assert!(
        wakes <= 2,
        "at max_in_flight: the engine woke {wakes} times in 5 s"
    );
    // Its ack makes room: the waiting redelivery is served at once.
    let waiting = tokio::spawn({
        let group = group.clone();
        async move { group.receive(busy, 1, Duration::from_secs(30)).await }
    });
    let_it_run().await;
    group
        .settle(busy, vec![(0, 0, Settle::Ack)])
        .await
        .expect("ack");
    let served = waiting.await.expect("join").expect("receive");
    assert_eq!(offsets(&served), vec![(0, 1, 2)]);
}

#[tokio::test(start_paused = true)]
async fn a_redelivery_coming_due_serves_a_waiting_receive_on_time() {
    let (source, sink) = (MemSource::watched(1, 1), Arc::new(MemSink::default()));
    let group = start_engine(&source, &sink);
    let consumer = group.join("test").await.expect("join");
    group
        .receive(consumer, 1, Duration::ZERO)
        .await
        .expect("receive");
    let later = Some(Duration::from_millis(700));
    group
        .settle(consumer, vec![(0, 0, Settle::Nack(later))])
        .await
        .expect("nack");
    let asked = Instant::now();
    let again = group
        .receive(consumer, 1, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(offsets(&again), vec![(0, 0, 2)]);
    let waited = asked.elapsed();
    assert!(
        (Duration::from_millis(699)..Duration::from_millis(720)).contains(&waited),
        "served {waited:?} after asking, due after 700 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_released_message_comes_back_at_once_with_the_same_attempt() {
    let (source, sink) = (MemSource::watched(1, 3), Arc::new(MemSink::default()));
    let group = start_engine(&source, &sink);
    let first = group.join("first").await.expect("join");
    let got = group
        .receive(first, 3, Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(offsets(&got), vec![(0, 0, 1), (0, 1, 1), (0, 2, 1)]);
    let second = group.join("second").await.expect("join");
    let waiting = tokio::spawn({
        let group = group.clone();
        async move { group.receive(second, 10, Duration::from_secs(30)).await }
    });
    let_it_run().await;
    let items = vec![
        (0, 0, 1, Settle::Ack),
        (0, 1, 1, Settle::Release),
        (0, 2, 1, Settle::Release),
        (0, 2, 1, Settle::Release),
    ];
    let results = group.settle_attempts(first, items).await.expect("settle");
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(
        matches!(results[3], Err(SettleError::LeaseLost { offset: 2 })),
        "released already: {results:?}"
    );
    let asked = Instant::now();
    let back = waiting.await.expect("join").expect("receive");
    assert_eq!(
        offsets(&back),
        vec![(0, 1, 1), (0, 2, 1)],
        "delivered again at once, attempt 1 again"
    );
    assert_eq!(asked.elapsed(), Duration::ZERO);
    let (_, figures) = group.describe().await.expect("describe");
    assert_eq!((figures[0].in_flight, figures[0].delayed), (2, 0));
}
