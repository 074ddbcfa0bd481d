//! Leases listed and moved between consumers, for adapters with Redis's
//! pending-entry model (`XPENDING`, `XCLAIM`, `XREADGROUP` of a consumer's
//! own history): a lease can be re-taken by another consumer (or by its
//! holder again, counting a new delivery), journaled as a new lease of the
//! offset, so the attempt count stays durable.

use super::super::leases::LeaseEntry;
use super::super::settings::GroupSettings;
use super::{ConsumerId, Delivery, DeliveryTimes, Lease, PartitionDelivery, seconds_of};

impl PartitionDelivery {
    /// Every open lease: offset, lease, and its delivery times, by offset.
    pub fn leases(&self) -> impl Iterator<Item = (u64, Lease, DeliveryTimes)> + '_ {
        self.in_flight.iter().map(|(o, e)| (o, e.lease, e.times()))
    }

    /// Gives the lease on `offset` to `consumer` if it is open and was
    /// last delivered at least `min_idle_ms` ago (to the second). With
    /// `count_attempt` this is a new delivery (its attempt number grows,
    /// up to `max_deliveries`, and its delivery time is now); without, the
    /// lease only changes hands. The new deadline is the ack timeout from
    /// now. `None`: not leased, or not idle long enough.
    pub fn claim(
        &mut self,
        offset: u64,
        consumer: ConsumerId,
        now_ms: i64,
        min_idle_ms: i64,
        count_attempt: bool,
        settings: &GroupSettings,
    ) -> Option<Delivery> {
        let entry: LeaseEntry = *self.in_flight.get(offset)?;
        let idle_ms = now_ms - i64::from(entry.leased_s) * 1000;
        if idle_ms < min_idle_ms {
            return None;
        }
        let (attempt, last_s) = if count_attempt {
            let next = entry
                .lease
                .attempt
                .saturating_add(1)
                .min(settings.max_deliveries);
            (next.max(entry.lease.attempt), seconds_of(now_ms))
        } else {
            (entry.lease.attempt, entry.leased_s)
        };
        let times = DeliveryTimes {
            first_s: entry.first_s,
            last_s,
        };
        let deadline_ms = now_ms.saturating_add(settings.ack_timeout.as_millis() as i64);
        Some(self.lease(offset, attempt, consumer, deadline_ms, times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_lease_changes_hands_and_counts_a_delivery_only_when_asked() {
        let settings = GroupSettings::default();
        let mut state = PartitionDelivery::new(0);
        state.deliver(1, 2, 10_000, 2, &settings);
        state.take_events();
        assert_eq!(
            state.claim(0, 2, 10_500, 5_000, true, &settings),
            None,
            "not idle long enough"
        );
        let moved = state
            .claim(0, 2, 20_000, 5_000, false, &settings)
            .expect("claimed");
        assert_eq!((moved.offset, moved.attempt), (0, 1));
        assert_eq!(state.lease_of(0).map(|l| l.consumer), Some(2));
        assert_eq!(state.in_flight_of(1), 1);
        let again = state
            .claim(0, 2, 21_000, 0, true, &settings)
            .expect("claimed");
        assert_eq!(again.attempt, 2, "a new delivery");
        assert_eq!(
            state.claim(7, 2, 21_000, 0, true, &settings),
            None,
            "not leased"
        );
        let replayed = PartitionDelivery::replay(PartitionDelivery::new(0), state.take_events());
        let attempts: Vec<(u64, u32)> = replayed.leases().map(|(o, l, _)| (o, l.attempt)).collect();
        assert_eq!(attempts, vec![(0, 2)], "the attempt count is journaled");
    }
}
