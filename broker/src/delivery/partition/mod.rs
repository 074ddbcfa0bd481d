//! The delivery state of one partition in one group: which offsets are
//! settled, leased to a consumer, waiting for a redelivery, or on their way
//! to the dead-letter queue. Pure and clock-driven (`now_ms` is passed in),
//! so the whole state machine is tested without sleeping.
//!
//! ## States of an offset
//!
//! ```text
//! new (≥ next) ──deliver──▶ in flight (lease: consumer, attempt, deadline)
//!   ▲                           │ ack ────────────────▶ settled
//!   │                           │ nack / expiry / consumer gone
//!   │                           │ (release: due now, attempt n − 1)
//!   │                           ▼
//!   └────── due ─────── delayed (attempt n, due at now + backoff(n))
//!                               │ attempt = max_deliveries, or reject
//!                               ▼
//!                  dead-lettering (DLQ copy being written) ──▶ settled
//! ```
//!
//! ## Invariants
//!
//! - An offset is in at most one of: in flight, delayed, dead-lettering,
//!   settled. So no message is leased to two consumers at once.
//! - Every offset below `floor` is settled (or skipped by a seek); `floor`
//!   ≤ `next`; offsets at or above `next` were never delivered since the
//!   last seek.
//! - The attempt number of a lease never exceeds `max_deliveries`: the
//!   attempt that reaches it is dead-lettered instead of delayed.
//! - A release (the consumer gives back a delivery it never processed)
//!   does not count: the message is due at once with the attempts it had
//!   before that delivery, so its next delivery has the same attempt
//!   number and `max_deliveries` is not moved closer.
//! - Memory: a lease costs one B-tree entry by offset and a share of a
//!   run of the deadline index (one run per batch of consecutive offsets
//!   with one deadline), a delay two B-tree entries (by due time, and by
//!   offset); figures from `cargo bench --bench delivery_timers` in
//!   `docs/benchmarks.md`. Settled offsets
//!   above the floor are held as ranges ([`OffsetRanges`]), so they cost
//!   one entry per gap, not one per ack.
//! - Cost: every operation is O(log n) per message it touches
//!   (deliver, ack, nack, release, extend, expiry, `state_of`, replay of an
//!   event); only a consumer leaving scans the leases (once), and a seek or
//!   retention drops what it passes.
//! - Delivery times (first and latest delivery of a message, for the
//!   dead-letter headers and `message show`) are kept to the second, as
//!   u32 seconds since the Unix epoch, so that they fit those budgets.

mod claims;
mod delays;
mod persist;
mod settled;

use std::collections::BTreeMap;

use delays::Delays;
pub use settled::OffsetRanges;

use super::journal::Event;
use super::leases::{LeaseEntry, Leases};
use super::settings::{GroupSettings, Jitter};

/// A consumer's id, assigned by the broker, unique within its run (32 bits
/// keep a lease at 16 bytes).
pub type ConsumerId = u32;

/// The holder of leases rebuilt from the journal after a restart.
pub const RECOVERED: ConsumerId = u32::MAX;

/// A message leased to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// When the lease ends unless acked or extended (ms since the epoch).
    pub deadline_ms: i64,
    /// Who holds it.
    pub consumer: ConsumerId,
    /// Which delivery this is (1 for the first).
    pub attempt: u32,
}

/// One message handed to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Its offset.
    pub offset: u64,
    /// Which delivery this is (1 for the first).
    pub attempt: u32,
    /// When the lease ends.
    pub deadline_ms: i64,
}

/// Why a message goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Its attempts reached `max_deliveries`.
    MaxDeliveries,
    /// A consumer rejected it, with this reason text.
    Rejected(String),
}

/// When a message was delivered to the group: whole seconds since the
/// Unix epoch, 0 when unknown (state written by an older version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryTimes {
    /// Its first delivery.
    pub first_s: u32,
    /// Its latest delivery.
    pub last_s: u32,
}

impl DeliveryTimes {
    /// The first delivery in ms since the epoch (to the second), if known.
    pub fn first_ms(&self) -> Option<i64> {
        known_ms(self.first_s)
    }

    /// The latest delivery in ms since the epoch (to the second), if known.
    pub fn last_ms(&self) -> Option<i64> {
        known_ms(self.last_s)
    }
}

fn known_ms(seconds: u32) -> Option<i64> {
    (seconds > 0).then(|| i64::from(seconds) * 1000)
}

/// A message to copy to the dead-letter queue. It stays out of delivery
/// until [`PartitionDelivery::dead_lettered`] says the copy is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The source offset.
    pub offset: u64,
    /// Deliveries it had.
    pub attempts: u32,
    /// Why.
    pub reason: DeadLetterReason,
    /// When it was first and last delivered.
    pub times: DeliveryTimes,
    /// The end offset of the dead-letter partition when the dead-lettering
    /// started: the copy, if one was written, is at or after it, so a
    /// restart looks for it from there on. `None` for state written before
    /// it was recorded.
    pub dlq_from: Option<u64>,
}

/// The end offset of a partition's dead-letter partition, as the engine
/// last told the state machine ([`PartitionDelivery::note_dlq_end`]); a
/// dead letter started from then on records it. It is a hint, not state:
/// it is neither journaled nor snapshotted, and two states are equal
/// whatever their hints. A stale (lower) value is still correct, since a
/// dead-letter partition only grows: a restart searches a little more.
#[derive(Debug, Clone, Copy, Default)]
struct DlqEndHint(u64);

impl PartialEq for DlqEndHint {
    fn eq(&self, _other: &DlqEndHint) -> bool {
        true
    }
}

/// A message waiting for its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Waiting {
    /// Deliveries so far.
    attempts: u32,
    /// Its first and latest delivery.
    times: DeliveryTimes,
}

/// Seconds since the epoch of `ms`, clamped to u32.
pub fn seconds_of(ms: i64) -> u32 {
    u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX)
}

/// Why an ack, nack, reject or extend was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The consumer does not hold a lease on the offset (it expired and the
    /// message went back, perhaps to another consumer, or it was settled).
    #[error(
        "lease lost: offset {offset} is no longer leased to this consumer (the lease expired or the message was settled); the message will be or was delivered again"
    )]
    LeaseLost {
        /// The offset.
        offset: u64,
    },
}

/// Where an offset is, for "why is this message stuck?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetState {
    /// Not delivered yet (or due for redelivery now).
    Available {
        /// Deliveries so far.
        attempts: u32,
    },
    /// Leased.
    InFlight(Lease),
    /// Waiting for its next attempt.
    Delayed {
        /// Deliveries so far.
        attempts: u32,
        /// When it is due.
        due_ms: i64,
    },
    /// Its dead-letter copy is being written.
    DeadLettering {
        /// Deliveries it had.
        attempts: u32,
    },
    /// Acked, dead-lettered, or skipped by a seek.
    Settled,
}

/// The persistent content of a [`PartitionDelivery`], for snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotParts {
    /// Every offset below is settled.
    pub floor: u64,
    /// Offsets from here on were never delivered (since the last seek).
    pub next: u64,
    /// Messages dead-lettered so far.
    pub dead_lettered: u64,
    /// Messages removed by retention before the group settled them.
    pub removed_by_retention: u64,
    /// Settled offsets in `floor..next`, as inclusive ranges `(first,
    /// last)` in offset order.
    pub settled: Vec<(u64, u64)>,
    /// Open leases: (offset, attempt, times).
    pub leases: Vec<(u64, u32, DeliveryTimes)>,
    /// (due_ms, offset, attempts, times), earliest due first.
    pub delayed: Vec<(i64, u64, u32, DeliveryTimes)>,
    /// Messages whose dead-letter copy is being written.
    pub dead_lettering: Vec<DeadLetter>,
}

/// The delivery state of one partition in one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionDelivery {
    /// Every offset below is settled.
    floor: u64,
    /// Offsets from here on were never delivered (since the last seek).
    next: u64,
    /// Settled offsets in `floor..next`.
    settled: OffsetRanges,
    in_flight: Leases,
    /// Messages waiting for their next attempt.
    delayed: Delays,
    /// Offsets whose dead-letter copy is being written.
    dead_lettering: BTreeMap<u64, DeadLetter>,
    /// Changes not yet taken by the journal writer.
    events: Vec<Event>,
    /// Messages copied to the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages that retention deleted before they were settled.
    pub removed_by_retention: u64,
    /// Where the dead-letter partition ends, as last told.
    dlq_end: DlqEndHint,
}

impl PartitionDelivery {
    /// A partition whose delivery starts at `start`.
    pub fn new(start: u64) -> PartitionDelivery {
        PartitionDelivery {
            floor: start,
            next: start,
            ..PartitionDelivery::default()
        }
    }

    /// The dead-letter partition ends at `end` now: dead letters started
    /// from now on record it (see [`DeadLetter::dlq_from`]). The engine
    /// calls it before anything that may dead-letter.
    pub fn note_dlq_end(&mut self, end: u64) {
        self.dlq_end = DlqEndHint(end);
    }

    /// Every offset below is settled.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The first offset never delivered since the last seek.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Leases held.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Leases held by `consumer`.
    pub fn in_flight_of(&self, consumer: ConsumerId) -> usize {
        self.in_flight.held_by(consumer)
    }

    /// Messages waiting for a redelivery.
    pub fn delayed(&self) -> usize {
        self.delayed.len()
    }

    /// Messages not settled yet, up to `log_end`: those from the floor on,
    /// plus leases and dead-letter copies still open below it (kept across a
    /// forward seek).
    pub fn lag(&self, log_end: u64) -> u64 {
        let above = log_end
            .saturating_sub(self.floor)
            .saturating_sub(self.settled.len());
        let below = self.in_flight.below(self.floor).count()
            + self.dead_lettering.range(..self.floor).count();
        above + below as u64
    }

    /// The settled offsets above the floor (their ranges show what they
    /// cost).
    pub fn settled(&self) -> &OffsetRanges {
        &self.settled
    }

    /// The earliest lease deadline: when expiry has work to do.
    pub fn next_lease_deadline(&self) -> Option<i64> {
        self.in_flight.next_deadline()
    }

    /// The earliest due time after `now_ms` of a delayed message: when a
    /// redelivery that is not due yet becomes deliverable. (Those already
    /// due wait for a receive, not for a timer.)
    pub fn next_due_after(&self, now_ms: i64) -> Option<i64> {
        self.delayed.first_due_after(now_ms)
    }

    /// The offsets [`deliver`](Self::deliver) would lease now, up to
    /// `max`, in the order it would lease them (due redeliveries first,
    /// then new offsets): a caller can read them before leasing any.
    pub fn candidates(&self, max: usize, now_ms: i64, log_end: u64) -> Vec<u64> {
        let due = self.delayed.due_offsets(now_ms);
        let new = (self.next..log_end).filter(|o| !self.settled.contains(*o));
        due.chain(new).take(max).collect()
    }

    /// Leases up to `max` messages to `consumer`: due redeliveries first,
    /// then new offsets in order, up to `log_end`.
    pub fn deliver(
        &mut self,
        consumer: ConsumerId,
        max: usize,
        now_ms: i64,
        log_end: u64,
        settings: &GroupSettings,
    ) -> Vec<Delivery> {
        let deadline_ms = now_ms + settings.ack_timeout.as_millis() as i64;
        let now_s = seconds_of(now_ms);
        let mut out = Vec::new();
        while out.len() < max {
            let Some((offset, delay)) = self.delayed.pop_due(now_ms) else {
                break;
            };
            let waiting = delay.waiting;
            let times = DeliveryTimes {
                first_s: waiting.times.first_s,
                last_s: now_s,
            };
            out.push(self.lease(offset, waiting.attempts + 1, consumer, deadline_ms, times));
        }
        let first = DeliveryTimes {
            first_s: now_s,
            last_s: now_s,
        };
        while out.len() < max && self.next < log_end {
            let offset = self.next;
            self.next += 1;
            if !self.settled.contains(offset) {
                out.push(self.lease(offset, 1, consumer, deadline_ms, first));
            }
        }
        out
    }

    fn lease(
        &mut self,
        offset: u64,
        attempt: u32,
        consumer: ConsumerId,
        deadline_ms: i64,
        times: DeliveryTimes,
    ) -> Delivery {
        self.in_flight.insert(
            offset,
            LeaseEntry {
                lease: Lease {
                    consumer,
                    attempt,
                    deadline_ms,
                },
                first_s: times.first_s,
                leased_s: times.last_s,
            },
        );
        self.events.push(Event::Leased {
            offset,
            attempt,
            times,
        });
        Delivery {
            offset,
            attempt,
            deadline_ms,
        }
    }

    /// The lease of `consumer` on `offset`, removed.
    fn take_lease(&mut self, consumer: ConsumerId, offset: u64) -> Result<LeaseEntry, SettleError> {
        match self.in_flight.get(offset) {
            Some(entry) if entry.lease.consumer == consumer => self
                .in_flight
                .remove(offset)
                .ok_or(SettleError::LeaseLost { offset }),
            _ => Err(SettleError::LeaseLost { offset }),
        }
    }

    /// The consumer processed the message: settle it.
    pub fn ack(&mut self, consumer: ConsumerId, offset: u64) -> Result<(), SettleError> {
        self.take_lease(consumer, offset)?;
        self.events.push(Event::Acked { offset });
        self.settle(offset);
        Ok(())
    }

    /// The consumer asks for a redelivery, after `delay_ms` or the backoff.
    pub fn nack(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
        delay_ms: Option<i64>,
        now_ms: i64,
        settings: &GroupSettings,
        jitter: &mut Jitter,
    ) -> Result<Option<DeadLetter>, SettleError> {
        let entry = self.take_lease(consumer, offset)?;
        Ok(self.retry_or_dead_letter(offset, &entry, delay_ms, now_ms, settings, jitter))
    }

    /// The consumer rejects the message: it goes to the dead-letter queue.
    pub fn reject(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
        reason: String,
    ) -> Result<Option<DeadLetter>, SettleError> {
        let entry = self.take_lease(consumer, offset)?;
        if offset < self.floor {
            self.events.push(Event::Acked { offset });
            return Ok(None);
        }
        Ok(Some(self.start_dead_letter(
            offset,
            &entry,
            DeadLetterReason::Rejected(reason),
        )))
    }

    /// The consumer needs more time: the lease ends `extend_ms` from now.
    pub fn extend(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
        extend_ms: i64,
        now_ms: i64,
    ) -> Result<i64, SettleError> {
        self.in_flight
            .set_deadline(consumer, offset, now_ms + extend_ms)
            .ok_or(SettleError::LeaseLost { offset })
    }

    /// The consumer gives the message back unprocessed (its client had it
    /// buffered, never handed to the application): it is available again
    /// at once and this delivery is not counted, so the next delivery has
    /// the same attempt number.
    pub fn release(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
        now_ms: i64,
    ) -> Result<(), SettleError> {
        let entry = self.take_lease(consumer, offset)?;
        if offset < self.floor {
            // Skipped by a seek while it was leased: nothing to redeliver.
            self.events.push(Event::Acked { offset });
            return Ok(());
        }
        let attempt = entry.lease.attempt;
        self.put_back(offset, attempt, entry.times(), now_ms);
        self.events.push(Event::Released {
            offset,
            attempt,
            at_ms: now_ms,
        });
        Ok(())
    }

    /// A released lease of attempt `attempt`: due at `at_ms` with the
    /// deliveries it had before it.
    fn put_back(&mut self, offset: u64, attempt: u32, times: DeliveryTimes, at_ms: i64) {
        let waiting = Waiting {
            attempts: attempt.saturating_sub(1),
            times,
        };
        self.delayed.insert(offset, at_ms, waiting);
    }

    /// Ends every lease whose deadline has passed; returns the messages
    /// that reached `max_deliveries`.
    pub fn expire(
        &mut self,
        now_ms: i64,
        settings: &GroupSettings,
        jitter: &mut Jitter,
    ) -> Vec<DeadLetter> {
        let expired = self.in_flight.take_expired(now_ms);
        self.return_leases(expired, now_ms, settings, jitter)
    }

    /// A consumer left (or its connection dropped): its leases come back at
    /// once, each counted as an attempt.
    pub fn drop_consumer(
        &mut self,
        consumer: ConsumerId,
        now_ms: i64,
        settings: &GroupSettings,
        jitter: &mut Jitter,
    ) -> Vec<DeadLetter> {
        if self.in_flight.held_by(consumer) == 0 {
            return Vec::new();
        }
        let held = self.in_flight.take_where(|e| e.lease.consumer == consumer);
        self.return_leases(held, now_ms, settings, jitter)
    }

    /// Returns leases already removed from the table (by offset).
    fn return_leases(
        &mut self,
        leases: Vec<(u64, LeaseEntry)>,
        now_ms: i64,
        settings: &GroupSettings,
        jitter: &mut Jitter,
    ) -> Vec<DeadLetter> {
        let mut dead = Vec::new();
        for (offset, entry) in leases {
            if let Some(d) =
                self.retry_or_dead_letter(offset, &entry, None, now_ms, settings, jitter)
            {
                dead.push(d);
            }
        }
        dead
    }

    /// After the lease `entry` on `offset` ended without an ack (already
    /// out of the table): schedule the next attempt, or dead-letter it.
    fn retry_or_dead_letter(
        &mut self,
        offset: u64,
        entry: &LeaseEntry,
        delay_ms: Option<i64>,
        now_ms: i64,
        settings: &GroupSettings,
        jitter: &mut Jitter,
    ) -> Option<DeadLetter> {
        if offset < self.floor {
            // Skipped by a seek while it was leased: nothing to redeliver.
            self.events.push(Event::Acked { offset });
            return None;
        }
        let attempts = entry.lease.attempt;
        if attempts >= settings.max_deliveries {
            return Some(self.start_dead_letter(offset, entry, DeadLetterReason::MaxDeliveries));
        }
        let delay = delay_ms.unwrap_or_else(|| settings.backoff_ms(attempts, jitter.unit()));
        let due_ms = now_ms + delay.max(0);
        self.delayed.insert(
            offset,
            due_ms,
            Waiting {
                attempts,
                times: entry.times(),
            },
        );
        self.events.push(Event::Delayed {
            offset,
            attempt: attempts,
            due_ms,
        });
        None
    }

    fn start_dead_letter(
        &mut self,
        offset: u64,
        entry: &LeaseEntry,
        reason: DeadLetterReason,
    ) -> DeadLetter {
        let dead = DeadLetter {
            offset,
            attempts: entry.lease.attempt,
            reason,
            times: entry.times(),
            dlq_from: Some(self.dlq_end.0),
        };
        self.dead_lettering.insert(offset, dead.clone());
        self.events.push(Event::DeadLetterStarted {
            offset,
            attempts: dead.attempts,
            reason: dead.reason.clone(),
            dlq_from: dead.dlq_from,
        });
        dead
    }

    /// The dead-letter copy of `offset` is durable: settle it.
    pub fn dead_lettered(&mut self, offset: u64) {
        if self.dead_lettering.remove(&offset).is_some() {
            self.events.push(Event::DeadLettered { offset });
            self.dead_lettered += 1;
            self.settle(offset);
        }
    }

    /// Messages waiting for their dead-letter copy (to retry after a
    /// failed write, or after a restart).
    pub fn pending_dead_letters(&self) -> impl Iterator<Item = DeadLetter> + '_ {
        self.dead_lettering.values().cloned()
    }

    /// Gives back memory a burst left behind (maps keep their capacity
    /// when they empty); the group engine calls it now and then.
    pub fn compact(&mut self) {
        if self.events.capacity() > 1024 && self.events.is_empty() {
            self.events = Vec::new();
        }
    }

    /// The changes made since the last call, for the journal.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// After a restart, leases that were open belong to nobody: each comes
    /// back for delivery at once, counted as an attempt (or goes to the
    /// dead-letter queue if it reached `max_deliveries`).
    pub fn recover_leases(&mut self, now_ms: i64, settings: &GroupSettings) -> Vec<DeadLetter> {
        let open = self.in_flight.take_where(|_| true);
        let mut no_jitter = Jitter::new(1);
        let mut dead = Vec::new();
        for (offset, entry) in open {
            if let Some(d) =
                self.retry_or_dead_letter(offset, &entry, Some(0), now_ms, settings, &mut no_jitter)
            {
                dead.push(d);
            }
        }
        dead
    }

    fn settle(&mut self, offset: u64) {
        if offset < self.floor {
            return;
        }
        self.settled.insert(offset);
        self.advance_floor();
    }

    /// Moves the floor over the settled range starting at it, if any (never
    /// past `next`).
    fn advance_floor(&mut self) {
        if self.floor >= self.next {
            return;
        }
        let Some(last) = self.settled.take_range_at(self.floor) else {
            return;
        };
        if last >= self.next {
            // Settled offsets at or past `next` (a journal with a gap) stay.
            self.settled.insert_range(self.next, last);
            self.floor = self.next;
        } else {
            self.floor = last + 1;
        }
    }

    /// Moves delivery to `target`: every offset from there on is delivered
    /// again with attempts reset; leases and delays at or after it are
    /// dropped. Offsets below it count as settled; leases below it may still
    /// be acked, but are not redelivered.
    pub fn seek(&mut self, target: u64) {
        // At or above the target everything is new again; below it
        // everything is skipped, so no delay survives either way.
        self.in_flight.split_off(target);
        self.delayed.clear();
        self.dead_lettering.split_off(&target);
        self.settled.clear();
        self.floor = target;
        self.next = target;
        self.events.push(Event::Seek { target });
    }

    /// Retention deleted offsets below `log_start`: count those never
    /// settled, and move past them.
    pub fn apply_retention(&mut self, log_start: u64) {
        if log_start <= self.floor {
            return;
        }
        self.events.push(Event::Retention { log_start });
        // Every offset of `floor..log_start` not settled, leased or being
        // dead-lettered (the three are disjoint) was never settled.
        let kept = self.settled.count_in(self.floor, log_start)
            + self.in_flight.count_in(self.floor, log_start) as u64
            + self.dead_lettering.range(self.floor..log_start).count() as u64;
        let removed = (log_start - self.floor).saturating_sub(kept);
        self.removed_by_retention += removed;
        self.delayed.remove_below(log_start);
        self.settled.remove_below(log_start);
        self.floor = log_start;
        self.next = self.next.max(log_start);
        self.advance_floor();
    }

    /// The lease on `offset`, if it is in flight.
    pub fn lease_of(&self, offset: u64) -> Option<Lease> {
        self.in_flight.get(offset).map(|e| e.lease)
    }

    /// Where `offset` is.
    pub fn state_of(&self, offset: u64) -> OffsetState {
        self.state_and_times(offset).0
    }

    /// Where `offset` is, and when it was first and last delivered while
    /// the state machine tracks it (leased, delayed, or being
    /// dead-lettered; `None` after it settled or before its first
    /// delivery). One lookup for both, for `message show`.
    pub fn state_and_times(&self, offset: u64) -> (OffsetState, Option<DeliveryTimes>) {
        if let Some(entry) = self.in_flight.get(offset) {
            let times = entry.times();
            return (OffsetState::InFlight(entry.lease), Some(times));
        }
        if let Some(dead) = self.dead_lettering.get(&offset) {
            let state = OffsetState::DeadLettering {
                attempts: dead.attempts,
            };
            return (state, Some(dead.times));
        }
        if let Some(delay) = self.delayed.get(offset) {
            let state = OffsetState::Delayed {
                attempts: delay.waiting.attempts,
                due_ms: delay.due_ms,
            };
            return (state, Some(delay.waiting.times));
        }
        if offset < self.floor || self.settled.contains(offset) {
            return (OffsetState::Settled, None);
        }
        (OffsetState::Available { attempts: 0 }, None)
    }
}

/// A lease rebuilt from a snapshot or the journal: held by nobody until
/// [`PartitionDelivery::recover_leases`] returns it.
fn recovered_lease(attempt: u32, times: DeliveryTimes) -> LeaseEntry {
    LeaseEntry {
        lease: Lease {
            deadline_ms: i64::MAX,
            consumer: RECOVERED,
            attempt,
        },
        first_s: times.first_s,
        leased_s: times.last_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_times_follow_a_message_to_the_dead_letter_queue_and_survive_replay() {
        let settings = GroupSettings {
            max_deliveries: 2,
            ..GroupSettings::default()
        };
        let mut jitter = Jitter::new(1);
        let mut state = PartitionDelivery::new(0);
        let mut journal = Vec::new();
        let first = state.deliver(1, 1, 10_500, 1, &settings);
        assert_eq!(
            state.state_and_times(0).1,
            Some(DeliveryTimes {
                first_s: 10,
                last_s: 10
            })
        );
        state
            .nack(
                1,
                first[0].offset,
                Some(1_000),
                11_000,
                &settings,
                &mut jitter,
            )
            .expect("nack");
        assert_eq!(state.state_and_times(0).1.map(|t| t.first_s), Some(10));
        journal.extend(state.take_events());
        let again = state.deliver(2, 1, 20_000, 1, &settings);
        assert_eq!(again[0].attempt, 2);
        journal.extend(state.take_events());
        let replayed = PartitionDelivery::replay(PartitionDelivery::new(0), journal.clone());
        assert_eq!(replayed.state_and_times(0).1, state.state_and_times(0).1);
        let (from_snapshot, _) =
            super::super::snapshot::decode(&super::super::snapshot::encode(&state, 0))
                .expect("snapshot");
        assert_eq!(
            from_snapshot.state_and_times(0).1,
            state.state_and_times(0).1
        );
        let dead = state
            .nack(2, 0, None, 21_000, &settings, &mut jitter)
            .expect("nack")
            .expect("max deliveries reached");
        assert_eq!(
            dead.times,
            DeliveryTimes {
                first_s: 10,
                last_s: 20
            }
        );
        journal.extend(state.take_events());
        let replayed = PartitionDelivery::replay(PartitionDelivery::new(0), journal);
        assert_eq!(replayed.pending_dead_letters().next(), Some(dead));
        state.dead_lettered(0);
        assert_eq!(state.state_and_times(0).1, None, "settled");
    }
}
