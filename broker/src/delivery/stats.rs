//! [`DeliveryStats`]: what a group's engine counts in one partition for
//! `/metrics`: acks, and redeliveries by their cause.
//!
//! A redelivery is counted when a message goes back to wait for another
//! attempt (it joins the partition's delayed messages), by what ended its
//! lease:
//!
//! | cause | when |
//! | --- | --- |
//! | `nack` | the consumer nacked it |
//! | `lease_expired` | its lease passed its deadline without a settle |
//! | `consumer_gone` | its consumer left (its connection closed, or it expired), or the broker restarted with the lease open |
//!
//! A message that reached `max_deliveries` instead goes to the dead-letter
//! queue and is not counted here (`pigeon_group_dead_lettered_total` counts
//! it). The engine counts an operation's redeliveries as the growth of the
//! partition's delayed messages over it: expiring, dropping a consumer's
//! leases and nacking only ever add to them.
//!
//! The counts live in memory and restart from zero with the engine (a
//! broker restart, or the group deleted and created again); Prometheus
//! reads the drop as a counter reset.

/// Why a message is delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeliveryCause {
    /// The consumer nacked it.
    Nack,
    /// Its lease ended without a settle.
    LeaseExpired,
    /// Its consumer left, or the broker restarted with the lease open.
    ConsumerGone,
}

impl RedeliveryCause {
    /// Every cause, in the order metrics list them.
    pub const ALL: [RedeliveryCause; 3] = [
        RedeliveryCause::Nack,
        RedeliveryCause::LeaseExpired,
        RedeliveryCause::ConsumerGone,
    ];

    /// The `cause` label value.
    pub fn label(self) -> &'static str {
        match self {
            RedeliveryCause::Nack => "nack",
            RedeliveryCause::LeaseExpired => "lease_expired",
            RedeliveryCause::ConsumerGone => "consumer_gone",
        }
    }
}

/// Acks and redeliveries of one partition in one group, since the engine
/// started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Messages acked.
    pub acks: u64,
    /// Redeliveries, indexed like [`RedeliveryCause::ALL`].
    redeliveries: [u64; 3],
}

impl DeliveryStats {
    /// One ack.
    pub fn acked(&mut self) {
        self.acks += 1;
    }

    /// Counts the redeliveries an operation scheduled: the growth of the
    /// partition's delayed messages from `delayed_before` to
    /// `delayed_after`.
    pub fn returned(
        &mut self,
        cause: RedeliveryCause,
        delayed_before: usize,
        delayed_after: usize,
    ) {
        let added = delayed_after.saturating_sub(delayed_before) as u64;
        self.redeliveries[cause as usize] += added;
    }

    /// Redeliveries for `cause`.
    pub fn redeliveries(&self, cause: RedeliveryCause) -> u64 {
        self.redeliveries[cause as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_counts_apart() {
        let mut stats = DeliveryStats::default();
        stats.acked();
        stats.returned(RedeliveryCause::Nack, 0, 1);
        stats.returned(RedeliveryCause::LeaseExpired, 1, 4);
        stats.returned(RedeliveryCause::ConsumerGone, 4, 4);
        assert_eq!(stats.acks, 1);
        let counts = RedeliveryCause::ALL.map(|c| stats.redeliveries(c));
        assert_eq!(counts, [1, 3, 0]);
        let labels = RedeliveryCause::ALL.map(RedeliveryCause::label);
        assert_eq!(labels, ["nack", "lease_expired", "consumer_gone"]);
    }

    /// Drives a group's engine through every way a lease ends.
    #[tokio::test(start_paused = true)]
    async fn the_engine_counts_acks_and_each_cause_of_redelivery() {
        use std::sync::Arc;
        use std::time::Duration;

        use crate::delivery::engine::Settle;
        use crate::delivery::test_support::{MemSink, MemSource, offsets, start_engine};

        let (source, sink) = (MemSource::with(1, 4), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let stats = |group: &crate::delivery::engine::GroupHandle| {
            let group = group.clone();
            async move { group.describe().await.expect("describe").1[0].stats }
        };
        let first = group.join("first").await.expect("join");
        let got = group
            .receive(first, 4, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(got.len(), 4);
        let settled = group
            .settle(first, vec![(0, 0, Settle::Ack), (0, 1, Settle::Nack(None))])
            .await
            .expect("settle");
        assert!(settled.iter().all(Result::is_ok));
        // Time moves through waiting receives (a due redelivery nobody
        // receives would keep the engine's timer firing, so paused time
        // would never advance through a plain sleep).
        let nacked = group
            .receive(first, 4, Duration::from_secs(5))
            .await
            .expect("receive");
        assert_eq!(offsets(&nacked), vec![(0, 1, 2)]);
        group
            .settle(first, vec![(0, 1, Settle::Ack)])
            .await
            .expect("ack");
        // 2 and 3 are never settled: their leases (1 s) expire.
        let expired = group
            .receive(first, 4, Duration::from_secs(5))
            .await
            .expect("receive");
        assert_eq!(offsets(&expired), vec![(0, 2, 2), (0, 3, 2)]);
        group.leave(first).await;
        let s = stats(&group).await;
        assert_eq!(s.acks, 2);
        let counts = RedeliveryCause::ALL.map(|c| s.redeliveries(c));
        assert_eq!(counts, [1, 2, 2], "nack, lease_expired, consumer_gone");
        // At max_deliveries (3) a nack dead-letters: not a redelivery.
        let second = group.join("second").await.expect("join");
        let last = group
            .receive(second, 4, Duration::from_secs(5))
            .await
            .expect("receive");
        assert_eq!(offsets(&last), vec![(0, 2, 3), (0, 3, 3)]);
        let nacks = (2..4).map(|o| (0, o, Settle::Nack(None))).collect();
        group.settle(second, nacks).await.expect("settle");
        let s = stats(&group).await;
        assert_eq!(s.redeliveries(RedeliveryCause::Nack), 1);
        assert_eq!(sink.0.lock().len(), 2, "dead-lettered instead");
    }
}
