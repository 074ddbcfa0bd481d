//! The group engine: one task per consumer group, owning the group's
//! delivery state, fed by a channel (no locks around the state machine).
//!
//! It serves `join`, `receive` (long-poll: waits up to `max_wait` for a
//! message), `settle` (ack, nack, reject, extend), `seek`, `pause`,
//! `describe` and `leave`, one method per request; fires lease expiries and
//! redeliveries on time (see "Timer" below); copies dead letters out through a
//! [`DeadLetterSink`] and settles them only once the copy is durable (the
//! [`dead_letter`] pipeline, with its crash story); and journals every
//! change through the group's [journal writer](super::journal_writer)
//! (group-committed, lazily: the engine does not wait for the journal
//! before answering, so the last commit window of acks can be redelivered
//! after a crash, never lost).
//!
//! Source records are read through a [`SourceReader`], so the engine is
//! tested with paused tokio time against an in-memory source.
//!
//! ## Timer
//!
//! The engine sleeps until the earliest of: a lease deadline (exact, from
//! each partition's deadline index), a waiting receive's `max_wait`, and —
//! only while a receive is waiting — the next redelivery coming due. A
//! redelivery already due needs no timer: it waits for a receive, and a
//! receive takes it at once. So a due redelivery that nobody can take (the
//! group is paused, no consumer is waiting, or every waiting consumer is at
//! `max_in_flight`) does not wake the engine again and again; it wakes
//! once per deadline.
//!
//! ## Waiting receives
//!
//! After a request, the engine looks at its [waiting receives](Waiters)
//! only if something may have become available to them: an append, the
//! timer, a nack, a release, a consumer leaving, a seek, a resume, new
//! settings, or an ack or reject by a consumer that has a receive waiting
//! (its `max_in_flight` room grew). Then it serves them oldest first and
//! stops at the first one with room that gets nothing. Receives whose
//! `max_wait` passed are answered from the deadline index.

use crate::log::{Clock, TokioClock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pigeon_protocol::batch::Record;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

mod claims;

use super::dead_letter;
pub use super::dead_letter::DeadLetterSink;
use super::handle::Command;
pub use super::handle::{
    GroupDelivery, GroupError, GroupHandle, OffsetReport, PartitionFigures, PendingLease, SeekTo,
    Settle, Stopped,
};
use super::journal_writer::JournalWriter;
use super::partition::{ConsumerId, DeadLetter, OffsetState, PartitionDelivery, SettleError};
use super::settings::{GroupSettings, Jitter};
use super::stats::{DeliveryStats, RedeliveryCause};
use super::store::GroupStore;
use super::waiters::{Waiters, Waiting};

/// Reads the source topic's records for delivery.
pub trait SourceReader: Send + Sync + 'static {
    /// `(log start, log end)` of a partition.
    fn bounds(&self, partition: usize) -> (u64, u64);
    /// The records at `offsets` (sorted) of a partition; missing ones are
    /// left out (removed by retention).
    fn records(&self, partition: usize, offsets: &[u64]) -> Vec<Record>;
    /// One watch of the log end per partition, so waiting receives are
    /// served the moment a record is appended. Without watches (the
    /// default) the engine polls its waiting receives every few ms.
    fn end_watches(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        Vec::new()
    }
}

struct Engine<S: SourceReader, D: DeadLetterSink> {
    settings: GroupSettings,
    paused: bool,
    states: Vec<PartitionDelivery>,
    /// Acks and redeliveries per partition, for `/metrics`.
    stats: Vec<DeliveryStats>,
    /// Metadata updates (pause); `None` in tests without storage.
    store: Option<GroupStore>,
    /// Ordered channel to the journal writer task (discarding in tests
    /// without storage).
    journal: JournalWriter,
    source: Arc<S>,
    sink: Arc<D>,
    jitter: Jitter,
    next_consumer: ConsumerId,
    /// Members, with the names they joined with.
    consumers: HashMap<ConsumerId, String>,
    waiting: Waiters,
    /// Something may have become available to a waiting receive since they
    /// were last served (see "Waiting receives" above).
    maybe_available: bool,
    /// Times the engine woke on its timer (shared with the handles).
    timer_wakes: Arc<AtomicU64>,
    /// Round-robin start for fairness across partitions.
    rotate: usize,
    /// Signalled when a source partition's log end moves; `None` when the
    /// source offers no watches (then waiting receives are polled).
    appended: Option<Arc<tokio::sync::Notify>>,
    /// The engine's clock: follows tokio's (pausable) time.
    clock: TokioClock,
    /// The last source offset that could not be read (logged once).
    last_read_error: Option<(usize, u64)>,
}

/// Starts the engine of a group over `states` (recovered from its store;
/// open leases are returned at once, counted as attempts).
pub fn start<S: SourceReader, D: DeadLetterSink>(
    settings: GroupSettings,
    paused: bool,
    mut states: Vec<PartitionDelivery>,
    store: Option<GroupStore>,
    source: Arc<S>,
    sink: Arc<D>,
) -> GroupHandle {
    let clock = TokioClock;
    let now = clock.now_ms();
    let mut recovered = Vec::new();
    let mut stats = vec![DeliveryStats::default(); states.len()];
    for (p, state) in states.iter_mut().enumerate() {
        state.note_dlq_end(sink.end_offset(p));
        let delayed = state.delayed();
        for dead in state.recover_leases(now, &settings) {
            recovered.push((p, dead));
        }
        stats[p].returned(RedeliveryCause::ConsumerGone, delayed, state.delayed());
    }
    let (commands, inbox) = mpsc::channel(1024);
    let journal = store
        .as_ref()
        .map_or_else(JournalWriter::discarding, |store| {
            JournalWriter::spawn(
                store.journals(),
                store.snapshot_files(),
                store.snapshot_every(),
            )
        });
    let appended = watch_appends(source.end_watches());
    let timer_wakes = Arc::new(AtomicU64::new(0));
    let mut engine = Engine {
        settings,
        paused,
        states,
        stats,
        store,
        journal,
        source,
        sink,
        jitter: Jitter::new(now as u64),
        next_consumer: first_consumer_id(),
        consumers: HashMap::new(),
        waiting: Waiters::default(),
        maybe_available: false,
        timer_wakes: Arc::clone(&timer_wakes),
        rotate: 0,
        appended,
        clock,
        last_read_error: None,
    };
    tokio::spawn(async move {
        // Dead letters left pending by a crash are written again (the sink
        // is idempotent, so nothing is parked twice).
        let recovered = dead_letter::left_by_a_crash(&engine.states, recovered);
        engine.dead_letter(recovered).await;
        engine.run(inbox).await;
    });
    GroupHandle::new(commands, timer_wakes)
}

impl<S: SourceReader, D: DeadLetterSink> Engine<S, D> {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let appended = self.appended.clone();
        loop {
            let wake = self.next_wake();
            let command = tokio::select! {
                command = inbox.recv() => command,
                _ = sleep_until_opt(wake) => {
                    self.on_timer().await;
                    continue;
                }
                () = notified(appended.as_deref()) => {
                    self.maybe_available = true;
                    self.serve_waiting();
                    self.journal().await;
                    continue;
                }
            };
            let Some(command) = command else { return };
            if let Command::Stop { reply } = command {
                self.stop().await;
                let _ = reply.send(());
                return;
            }
            self.handle(command).await;
            self.serve_waiting();
            self.journal().await;
        }
    }

    /// Hands every change to the journal and waits until it is appended,
    /// then closes the journals.
    async fn stop(&mut self) {
        // Snapshotted too, so that the next open replays nothing.
        self.journal.durable_with_snapshots(&mut self.states).await;
        // The journals' writers write their clean-shutdown
        // checkpoint when closed: that must happen before the group's
        // directory is deleted, not during.
        if let Some(store) = &self.store {
            store.close().await;
        }
    }

    /// When the engine must wake without a request: a lease deadline, a
    /// waiting receive's deadline, or, while a receive waits, a delay
    /// coming due (one already due is not a reason: see "Timer" above).
    /// New source data is noticed through the log end watches (or, for a
    /// source without them, by polling the waiting receives every few
    /// milliseconds).
    fn next_wake(&self) -> Option<Instant> {
        let now_ms = self.clock.now_ms();
        let leases = self
            .states
            .iter()
            .filter_map(PartitionDelivery::next_lease_deadline)
            .min();
        let delays = if self.waiting.is_empty() {
            None
        } else {
            self.states
                .iter()
                .filter_map(|s| s.next_due_after(now_ms))
                .min()
        };
        let due = leases
            .into_iter()
            .chain(delays)
            .min()
            .map(|ms| Instant::now() + Duration::from_millis((ms - now_ms).max(0) as u64));
        let waiting = self.waiting.next_deadline();
        let poll = (!self.waiting.is_empty() && self.appended.is_none())
            .then(|| Instant::now() + Duration::from_millis(5));
        due.into_iter().chain(waiting).chain(poll).min()
    }

    async fn on_timer(&mut self) {
        self.timer_wakes.fetch_add(1, Ordering::Relaxed);
        // Leases returned, or redeliveries come due.
        self.maybe_available = true;
        let now = self.clock.now_ms();
        self.note_dlq_ends();
        let mut dead = Vec::new();
        for (p, state) in self.states.iter_mut().enumerate() {
            let delayed = state.delayed();
            dead.extend(
                state
                    .expire(now, &self.settings, &mut self.jitter)
                    .into_iter()
                    .map(|d| (p, d)),
            );
            self.stats[p].returned(RedeliveryCause::LeaseExpired, delayed, state.delayed());
        }
        self.dead_letter(dead).await;
        self.serve_waiting();
        self.journal().await;
    }

    /// Serves one request: each has its own method.
    async fn handle(&mut self, command: Command) {
        match command {
            // Handled by the run loop, which ends with it.
            Command::Stop { reply } => {
                let _ = reply.send(());
            }
            Command::Join { name, reply } => {
                let _ = reply.send(self.join(name));
            }
            Command::Leave { consumer } => self.leave(consumer).await,
            Command::Receive {
                consumer,
                max,
                max_bytes,
                wait,
                reply,
            } => self.receive(consumer, max, max_bytes, wait, reply),
            Command::Settle {
                consumer,
                items,
                reply,
            } => self.settle(consumer, items, reply).await,
            Command::Seek {
                partition,
                target,
                reply,
            } => {
                let _ = reply.send(self.seek(partition, target));
            }
            Command::Pause { paused, reply } => {
                let _ = reply.send(self.pause(paused));
            }
            Command::Alter { settings, reply } => {
                let _ = reply.send(self.alter(settings));
            }
            Command::Describe { reply } => {
                let _ = reply.send(self.describe());
            }
            Command::State {
                partition,
                offset,
                reply,
            } => {
                let _ = reply.send(self.state_of(partition, offset));
            }
            Command::Pending { reply } => {
                let _ = reply.send(self.pending());
            }
            Command::Claim {
                consumer,
                items,
                min_idle_ms,
                count_attempt,
                reply,
            } => {
                let _ = reply.send(self.claim(consumer, &items, min_idle_ms, count_attempt));
            }
        }
    }

    /// A new member, named `name`: its id.
    fn join(&mut self, name: String) -> ConsumerId {
        let id = self.next_consumer;
        self.next_consumer = next_consumer_id(id);
        self.consumers.insert(id, name);
        id
    }

    /// A member leaves: its waiting receives are dropped and its leases
    /// return (those with no deliveries left are dead-lettered).
    async fn leave(&mut self, consumer: ConsumerId) {
        let now = self.clock.now_ms();
        self.consumers.remove(&consumer);
        self.waiting.drop_consumer(consumer);
        self.maybe_available = true;
        self.note_dlq_ends();
        let mut dead = Vec::new();
        for (p, state) in self.states.iter_mut().enumerate() {
            let delayed = state.delayed();
            dead.extend(
                state
                    .drop_consumer(consumer, now, &self.settings, &mut self.jitter)
                    .into_iter()
                    .map(|d| (p, d)),
            );
            self.stats[p].returned(RedeliveryCause::ConsumerGone, delayed, state.delayed());
        }
        self.dead_letter(dead).await;
    }

    /// Answers with what can be leased now; with nothing and a `wait`, the
    /// receive waits (answered by [`serve_waiting`](Self::serve_waiting)).
    fn receive(
        &mut self,
        consumer: ConsumerId,
        max: usize,
        max_bytes: usize,
        wait: Duration,
        reply: oneshot::Sender<Result<Vec<GroupDelivery>, GroupError>>,
    ) {
        if let Some(cause) = self.journal.failure() {
            let _ = reply.send(Err(GroupError::NotDurable(cause)));
            return;
        }
        let got = self.take(consumer, max, max_bytes);
        // A consumer that left (its connection went away) is not waited for.
        let member = self.consumers.contains_key(&consumer);
        if got.is_empty() && !wait.is_zero() && member {
            self.waiting.push(Waiting {
                consumer,
                max,
                max_bytes,
                until: Instant::now() + wait,
                reply,
            });
        } else {
            let _ = reply.send(Ok(got));
        }
    }

    /// Applies the items in order and answers, then dead-letters what they
    /// sent to the dead-letter queue.
    async fn settle(
        &mut self,
        consumer: ConsumerId,
        items: Vec<(u32, u64, u32, Settle)>,
        reply: oneshot::Sender<Result<Vec<Result<(), SettleError>>, GroupError>>,
    ) {
        if let Some(cause) = self.journal.failure() {
            let _ = reply.send(Err(GroupError::NotDurable(cause)));
            return;
        }
        let now = self.clock.now_ms();
        self.note_dlq_ends();
        let mut results = Vec::with_capacity(items.len());
        let mut dead = Vec::new();
        for item in items {
            let partition = item.0 as usize;
            let frees = self.frees_messages(consumer, &item.3);
            let result = self.settle_one(consumer, item, now);
            self.maybe_available |= frees && result.is_ok();
            results.push(result.map(|d| dead.extend(d.map(|d| (partition, d)))));
        }
        let _ = reply.send(Ok(results));
        self.dead_letter(dead).await;
    }

    /// Whether `action` by `consumer`, applied, may let a waiting receive
    /// have a message: a nack or release returns one; any end of a lease
    /// gives `consumer` room under `max_in_flight` (which matters only if
    /// it has a receive waiting).
    fn frees_messages(&self, consumer: ConsumerId, action: &Settle) -> bool {
        match action {
            Settle::Nack(_) | Settle::Release => true,
            Settle::Ack | Settle::Reject(_) => self.waiting.has_consumer(consumer),
            Settle::Extend(_) => false,
        }
    }

    /// One settle item `(partition, offset, attempt, action)`: the dead
    /// letter it starts, if any. `LeaseLost` for an unknown partition, or a
    /// lease of another attempt than a non-zero `attempt`.
    fn settle_one(
        &mut self,
        consumer: ConsumerId,
        (partition, offset, attempt, action): (u32, u64, u32, Settle),
        now: i64,
    ) -> Result<Option<DeadLetter>, SettleError> {
        let Some(state) = self.states.get_mut(partition as usize) else {
            return Err(SettleError::LeaseLost { offset });
        };
        if attempt != 0 && state.lease_of(offset).is_some_and(|l| l.attempt != attempt) {
            return Err(SettleError::LeaseLost { offset });
        }
        let stats = &mut self.stats[partition as usize];
        match action {
            Settle::Ack => state.ack(consumer, offset).map(|()| {
                stats.acked();
                None
            }),
            Settle::Nack(delay) => {
                let delayed = state.delayed();
                let nacked = state.nack(
                    consumer,
                    offset,
                    delay.map(|d| d.as_millis() as i64),
                    now,
                    &self.settings,
                    &mut self.jitter,
                );
                stats.returned(RedeliveryCause::Nack, delayed, state.delayed());
                nacked
            }
            Settle::Reject(reason) => state.reject(consumer, offset, reason),
            Settle::Extend(by) => state
                .extend(consumer, offset, by.as_millis() as i64, now)
                .map(|_| None),
            Settle::Release => state.release(consumer, offset, now).map(|()| None),
        }
    }

    /// Moves one partition (or all) to `target`, clamped to the source
    /// log's bounds; where each starts.
    fn seek(&mut self, partition: Option<u32>, target: SeekTo) -> Vec<(u32, u64)> {
        let mut moved = Vec::new();
        for (p, state) in self.states.iter_mut().enumerate() {
            if partition.is_some_and(|only| only as usize != p) {
                continue;
            }
            let (start, end) = self.source.bounds(p);
            let offset = match target {
                SeekTo::Offset(o) => o.clamp(start, end),
                SeekTo::Earliest => start,
                SeekTo::Latest => end,
            };
            state.seek(offset);
            moved.push((p as u32, offset));
        }
        self.maybe_available = true;
        moved
    }

    /// Pauses or resumes, once the store has saved it.
    fn pause(&mut self, paused: bool) -> Result<(), String> {
        let saved = match &mut self.store {
            Some(store) => store
                .update_meta(|m| m.paused = paused)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        };
        if saved.is_ok() {
            self.paused = paused;
            self.maybe_available |= !paused;
        }
        saved
    }

    /// Takes new settings, once they are valid and the store has saved them.
    fn alter(&mut self, settings: GroupSettings) -> Result<(), String> {
        let saved = settings.validate().and_then(|()| match &mut self.store {
            Some(store) => store
                .update_meta(|m| m.set_settings(&settings))
                .map_err(|e| e.to_string()),
            None => Ok(()),
        });
        if saved.is_ok() {
            self.settings = settings;
            self.maybe_available = true;
        }
        saved
    }

    /// Whether paused, and each partition's figures (after applying the
    /// source's retention).
    fn describe(&mut self) -> (bool, Vec<PartitionFigures>) {
        let figures = self
            .states
            .iter_mut()
            .enumerate()
            .map(|(p, state)| {
                let (log_start, log_end) = self.source.bounds(p);
                state.apply_retention(log_start);
                PartitionFigures {
                    committed_floor: state.floor(),
                    log_start,
                    log_end,
                    lag: state.lag(log_end),
                    in_flight: state.in_flight() as u64,
                    delayed: state.delayed() as u64,
                    dead_lettered: state.dead_lettered,
                    removed_by_retention: state.removed_by_retention,
                    stats: self.stats[p],
                }
            })
            .collect();
        (self.paused, figures)
    }

    /// Where one message stands (`None`: no such partition).
    fn state_of(&self, partition: u32, offset: u64) -> Option<OffsetReport> {
        self.states.get(partition as usize).map(|s| {
            let (state, times) = s.state_and_times(offset);
            let holder = match &state {
                OffsetState::InFlight(lease) => self.consumers.get(&lease.consumer).cloned(),
                _ => None,
            };
            OffsetReport {
                state,
                times,
                holder,
            }
        })
    }

    /// Leases up to `max` messages, of at most `max_bytes` in all (always
    /// at least one), to `consumer`, spreading over partitions, within its
    /// `max_in_flight`; reads their records. A partition's candidates are
    /// read before they are leased, so a message that does not fit is
    /// never leased (no attempt is counted for it).
    fn take(&mut self, consumer: ConsumerId, max: usize, max_bytes: usize) -> Vec<GroupDelivery> {
        let durable = self.journal.failure().is_none();
        if self.paused || !durable {
            return Vec::new();
        }
        let mut room = self.room(consumer, max);
        let mut bytes_left = max_bytes;
        let count = self.states.len();
        let mut out = Vec::new();
        for i in 0..count {
            if room == 0 || bytes_left == 0 {
                break;
            }
            let p = (self.rotate + i) % count;
            let taken = self.take_from(p, consumer, room, &mut bytes_left, out.is_empty());
            room -= taken.len();
            out.extend(taken);
        }
        self.rotate = self.rotate.wrapping_add(1);
        out
    }

    /// How many messages `consumer` may be leased now, up to `max`: its
    /// room under `max_in_flight` (0 for a consumer that is not a member).
    fn room(&self, consumer: ConsumerId, max: usize) -> usize {
        if !self.consumers.contains_key(&consumer) {
            return 0;
        }
        let held: usize = self.states.iter().map(|s| s.in_flight_of(consumer)).sum();
        max.min((self.settings.max_in_flight as usize).saturating_sub(held))
    }

    /// Leases to `consumer` what partition `p` has for it, up to `room`
    /// messages and `bytes_left` bytes (taken from it); with `first`, at
    /// least one message whatever its size.
    fn take_from(
        &mut self,
        p: usize,
        consumer: ConsumerId,
        room: usize,
        bytes_left: &mut usize,
        first: bool,
    ) -> Vec<GroupDelivery> {
        let now = self.clock.now_ms();
        let (log_start, log_end) = self.source.bounds(p);
        let state = &mut self.states[p];
        state.apply_retention(log_start);
        let candidates = state.candidates(room, now, log_end);
        if candidates.is_empty() {
            return Vec::new();
        }
        // Usually already in offset order (new messages); redeliveries first
        // may not be.
        let records = if candidates.is_sorted() {
            self.source.records(p, &candidates)
        } else {
            let mut sorted = candidates.clone();
            sorted.sort_unstable();
            self.source.records(p, &sorted)
        };
        // In offset order: found by binary search in `read`, taken at most
        // once from `records`.
        let read: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let mut records: Vec<Option<Record>> = records.into_iter().map(Some).collect();
        let find = |offset: u64| read.binary_search(&offset).ok();
        // How many of the candidates, in delivery order, were read and fit
        // the budget.
        let mut fitting = 0;
        let mut unread = None;
        for offset in &candidates {
            let Some(record) = find(*offset).and_then(|i| records[i].as_ref()) else {
                unread = Some(*offset);
                break;
            };
            let size = delivery_size(record);
            if size > *bytes_left && !(first && fitting == 0) {
                break;
            }
            *bytes_left = bytes_left.saturating_sub(size);
            fitting += 1;
        }
        if let Some(offset) = unread {
            self.not_read(p, offset);
        }
        let state = &mut self.states[p];
        let leased = state.deliver(consumer, fitting, now, log_end, &self.settings);
        let mut out = Vec::with_capacity(leased.len());
        for d in leased {
            if let Some(record) = find(d.offset).and_then(|i| records[i].take()) {
                out.push(GroupDelivery {
                    partition: p as u32,
                    record,
                    attempt: d.attempt,
                    lease_deadline_ms: d.deadline_ms,
                });
            }
        }
        out
    }

    /// A candidate of partition `p` could not be read, so it was not
    /// leased (nor anything after it this time). Below the log start it was
    /// deleted by retention meanwhile: counted (journaled) as removed. Else
    /// it is a read error, not retention: the message stays available and
    /// the error is logged (once per offset), never counted as removed.
    fn not_read(&mut self, p: usize, offset: u64) {
        let (log_start, _) = self.source.bounds(p);
        if offset < log_start {
            self.states[p].apply_retention(log_start);
        } else if self.last_read_error != Some((p, offset)) {
            self.last_read_error = Some((p, offset));
            tracing::error!(
                partition = p,
                offset,
                "a message of the group's source cannot be read; it is not delivered (nor what follows it in this partition) until it can be"
            );
        }
    }

    /// Answers the waiting receives whose `max_wait` has passed, and, if
    /// something may have become available, those that can now be served:
    /// oldest first, until one with room gets nothing (then nothing is
    /// available for anyone).
    fn serve_waiting(&mut self) {
        for w in self.waiting.take_due(Instant::now()) {
            let got = if w.reply.is_closed() {
                Vec::new()
            } else {
                self.take(w.consumer, w.max, w.max_bytes)
            };
            let _ = w.reply.send(Ok(got));
        }
        if !std::mem::take(&mut self.maybe_available) {
            return;
        }
        let mut from = 0;
        while let Some(seq) = self.waiting.next_from(from) {
            from = seq + 1;
            let Some(w) = self.waiting.get(seq) else {
                break;
            };
            if w.reply.is_closed() {
                self.waiting.remove(seq);
                continue;
            }
            let (consumer, max, max_bytes) = (w.consumer, w.max, w.max_bytes);
            if self.room(consumer, max) == 0 {
                continue;
            }
            let got = self.take(consumer, max, max_bytes);
            if got.is_empty() {
                break;
            }
            if let Some(w) = self.waiting.remove(seq) {
                let _ = w.reply.send(Ok(got));
            }
        }
    }

    /// Tells each partition's state where its dead-letter partition ends,
    /// before anything that may start a dead letter (which records it).
    fn note_dlq_ends(&mut self) {
        for (p, state) in self.states.iter_mut().enumerate() {
            state.note_dlq_end(self.sink.end_offset(p));
        }
    }

    /// Runs the [dead-letter pipeline](super::dead_letter) over `dead` and
    /// the dead letters still pending.
    async fn dead_letter(&mut self, dead: Vec<(usize, DeadLetter)>) {
        dead_letter::park(
            &mut self.states,
            &self.journal,
            self.source.as_ref(),
            self.sink.as_ref(),
            dead,
        )
        .await;
    }

    /// Hands the state changes to the journal writer, in order (not
    /// awaited: acks are persisted lazily, in group commits).
    async fn journal(&mut self) {
        self.journal.hand_over(&mut self.states).await;
    }
}

/// Bytes a delivery of `record` takes in a Receive answer, at most: the
/// record's key, value and headers, and a fixed allowance for the
/// delivery's own fields and length prefixes.
pub fn delivery_size(record: &Record) -> usize {
    const FIXED: usize = 64;
    const PER_HEADER: usize = 8;
    let headers: usize = record
        .headers
        .iter()
        .map(|h| PER_HEADER + h.name.len() + h.value.len())
        .sum();
    FIXED + record.key.as_ref().map_or(0, |k| k.len()) + record.value.len() + headers
}

/// Where this run's consumer ids start: a value drawn from the clock and
/// the process id, so that ids are not reused across restarts. A client
/// that still holds a delivery from before a crash settles it, after
/// reconnecting, with its old id: were ids to start again from 1, that id
/// could be a new member's on the new connection, and the stale settle
/// would apply to the new lease of the same message (same offset, same
/// attempt when the lease was not journaled). With a fresh base per run a
/// collision needs two of a few 2^32 values to meet.
fn first_consumer_id() -> ConsumerId {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    next_consumer_id((mixed >> 32) as ConsumerId)
}

/// The id after `id`, skipping 0 and [`RECOVERED`](super::partition::RECOVERED).
fn next_consumer_id(id: ConsumerId) -> ConsumerId {
    match id.wrapping_add(1) {
        0 | super::partition::RECOVERED => 1,
        next => next,
    }
}

/// One task per watch that signals the returned `Notify` whenever that log
/// end moves (a permit is kept if the engine is busy, so no append is
/// missed). The tasks end with their logs.
fn watch_appends(
    watches: Vec<tokio::sync::watch::Receiver<u64>>,
) -> Option<Arc<tokio::sync::Notify>> {
    if watches.is_empty() {
        return None;
    }
    let notify = Arc::new(tokio::sync::Notify::new());
    for mut watch in watches {
        let notify = Arc::clone(&notify);
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                notify.notify_one();
            }
        });
    }
    Some(notify)
}

/// Waits for `notify`; forever without one.
async fn notified(notify: Option<&tokio::sync::Notify>) {
    match notify {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "engine_timer_tests.rs"]
mod timer_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::DeadLetterReason;
    use crate::delivery::test_support::{MemSink, MemSource, offsets, settings, start_engine};

    /// Polls `group` with receives until `done` holds for the answer
    /// (bounded: 20 s).
    async fn receive_until(
        group: &GroupHandle,
        consumer: ConsumerId,
        done: impl Fn(&Result<Vec<GroupDelivery>, GroupError>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = group.receive(consumer, 1, Duration::ZERO).await;
            if done(&answer) {
                return;
            }
            assert!(Instant::now() < deadline, "still {answer:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_journal_write_refuses_receives_and_settles_until_it_is_durable_again() {
        use crate::delivery::store::{GroupMeta, GroupStore};
        use crate::io::{Fault, FaultPlan, FaultyFs, FileSystem, Op};
        use crate::log::{LogConfig, SystemClock};
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = FaultPlan::new();
        let fs: Arc<dyn FileSystem> = Arc::new(FaultyFs::new(plan.clone()));
        let settings = GroupSettings {
            ack_timeout: Duration::from_secs(600),
            ..settings()
        };
        let dir = tmp.path().join("t").join("g");
        let meta = GroupMeta::new("t", "g", &settings, 1);
        let clock = Arc::new(SystemClock);
        let (store, states) = GroupStore::create(
            fs.clone(),
            &dir,
            meta,
            &[0],
            LogConfig::default(),
            clock.clone(),
        )
        .expect("create");
        let (source, sink) = (MemSource::with(1, 10), Arc::new(MemSink::default()));
        let group = start(settings, false, states, Some(store), source, sink);
        let consumer = group.join("test").await.expect("join");
        let synced = plan.calls(Op::Sync, ".log");
        let got = group
            .receive(consumer, 2, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(offsets(&got), vec![(0, 0, 1), (0, 1, 1)]);
        // The journal is written lazily: wait until the receive's leases are
        // committed, so that the fault below meets the ack's append and not
        // theirs (on a busy machine they could still be queued, and the
        // settle would then be refused before it is applied).
        let deadline = Instant::now() + Duration::from_secs(20);
        while plan.calls(Op::Sync, ".log") == synced {
            assert!(Instant::now() < deadline, "the leases were never journaled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // The disk fills up: the next journal append fails.
        plan.inject(Op::Write, ".log", Fault::NoSpace, 0, None);
        let acked = group.settle(consumer, vec![(0, 0, Settle::Ack)]).await;
        assert!(
            acked.expect("settle")[0].is_ok(),
            "acks are persisted lazily"
        );
        receive_until(&group, consumer, |r| {
            matches!(r, Err(GroupError::NotDurable(_)))
        })
        .await;
        let refused = group.settle(consumer, vec![(0, 1, Settle::Ack)]).await;
        assert!(
            matches!(&refused, Err(GroupError::NotDurable(cause)) if cause.contains("journal")),
            "{refused:?}"
        );

        // Space returns: the kept events are appended and service resumes.
        plan.clear();
        receive_until(&group, consumer, Result::is_ok).await;
        group.stop().await;
        let (_store, states) =
            GroupStore::open(fs, &dir, &[0], LogConfig::default(), clock).expect("reopen");
        assert_eq!(
            states[0].state_of(0),
            OffsetState::Settled,
            "the ack whose append failed was appended once the disk had room"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_cannot_be_read_is_not_counted_as_removed_by_retention() {
        let (source, sink) = (MemSource::with(1, 3), Arc::new(MemSink::default()));
        source.2.lock().insert((0, 1));
        let group = start_engine(&source, &sink);
        let consumer = group.join("test").await.expect("join");
        let got = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(
            offsets(&got),
            vec![(0, 0, 1)],
            "nothing at or past the unreadable offset"
        );
        let (_, figures) = group.describe().await.expect("describe");
        assert_eq!(
            figures[0].removed_by_retention, 0,
            "a read error is not retention"
        );
        source.2.lock().clear();
        let rest = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(
            offsets(&rest),
            vec![(0, 1, 1), (0, 2, 1)],
            "delivered once readable, at their first attempt"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_receive_leases_only_what_fits_its_byte_budget_and_at_least_one() {
        let (source, sink) = (MemSource::with(1, 5), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let consumer = group.join("test").await.expect("join");
        let one = source.0.lock()[0][0].clone();
        let size = delivery_size(&one);
        let two = group
            .receive_within(consumer, 10, 2 * size + size / 2, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(offsets(&two), vec![(0, 0, 1), (0, 1, 1)]);
        let tiny = group
            .receive_within(consumer, 10, 1, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(offsets(&tiny), vec![(0, 2, 1)], "always at least one");
        let rest = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(
            offsets(&rest),
            vec![(0, 3, 1), (0, 4, 1)],
            "what did not fit was never leased: first attempts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_after_the_lease_expired_is_answered_lease_lost() {
        let (source, sink) = (MemSource::with(1, 1), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let slow = group.join("test").await.expect("join");
        let fast = group.join("test").await.expect("join");
        assert_eq!(
            group
                .receive(slow, 1, Duration::ZERO)
                .await
                .expect("receive")
                .len(),
            1
        );
        let again = group
            .receive(fast, 1, Duration::from_secs(10))
            .await
            .expect("receive");
        assert_eq!(
            offsets(&again),
            vec![(0, 0, 2)],
            "re-leased to the other consumer"
        );
        let late = group
            .settle(slow, vec![(0, 0, Settle::Ack)])
            .await
            .expect("settle");
        assert!(matches!(late[0], Err(SettleError::LeaseLost { offset: 0 })));
        assert!(
            group
                .settle(fast, vec![(0, 0, Settle::Ack)])
                .await
                .expect("settle")[0]
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_receive_waits_for_new_messages_and_partitions_share_the_load() {
        let (source, sink) = (MemSource::with(2, 0), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let consumer = group.join("test").await.expect("join");
        let waiting = tokio::spawn({
            let group = group.clone();
            async move { group.receive(consumer, 10, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        source.push(1, "late");
        let got = waiting.await.expect("join").expect("receive");
        assert_eq!(offsets(&got), vec![(1, 0, 1)]);
        source.push(0, "a");
        source.push(1, "b");
        let both = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(offsets(&both), vec![(0, 0, 1), (1, 1, 1)]);
        let empty = group
            .receive(consumer, 10, Duration::from_millis(200))
            .await
            .expect("receive");
        assert!(empty.is_empty(), "answers empty after max_wait");
    }

    #[test]
    fn consumer_ids_skip_zero_and_recovered_and_start_afresh_each_run() {
        assert_eq!(next_consumer_id(7), 8);
        assert_eq!(next_consumer_id(u32::MAX - 1), 1, "RECOVERED is skipped");
        assert_eq!(next_consumer_id(u32::MAX), 1, "0 is skipped");
        let firsts: std::collections::HashSet<ConsumerId> =
            (0..16).map(|_| first_consumer_id()).collect();
        assert!(firsts.len() > 1, "the base is drawn, not fixed: {firsts:?}");
        assert!(!firsts.contains(&0) && !firsts.contains(&crate::delivery::RECOVERED));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_receive_is_served_the_moment_a_record_is_appended() {
        let (source, sink) = (MemSource::watched(2, 0), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let consumer = group.join("test").await.expect("join");
        for round in 0..3u64 {
            let waiting = tokio::spawn({
                let group = group.clone();
                async move { group.receive(consumer, 10, Duration::from_secs(30)).await }
            });
            // Off the 5 ms grid a poll would follow.
            tokio::time::sleep(Duration::from_millis(52)).await;
            let appended = Instant::now();
            source.push(1, "late");
            let got = waiting.await.expect("join").expect("receive");
            assert_eq!(offsets(&got), vec![(1, round, 1)]);
            // Paused time only moves when every task waits on a timer: a
            // poll would have cost a step of it; the watch costs none.
            assert_eq!(appended.elapsed(), Duration::ZERO, "round {round}");
            group
                .settle(consumer, vec![(1, round, Settle::Ack)])
                .await
                .expect("settle");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_group_delivers_nothing_until_resumed() {
        let (source, sink) = (MemSource::with(1, 3), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let consumer = group.join("test").await.expect("join");
        group.pause(true).await.expect("pause").expect("saved");
        assert!(
            group
                .receive(consumer, 10, Duration::from_millis(100))
                .await
                .expect("receive")
                .is_empty()
        );
        assert!(group.describe().await.expect("describe").0);
        group.pause(false).await.expect("resume").expect("saved");
        assert_eq!(
            group
                .receive(consumer, 10, Duration::ZERO)
                .await
                .expect("receive")
                .len(),
            3
        );
    }

    #[tokio::test(start_paused = true)]
    async fn seek_replays_from_an_offset_with_attempts_reset() {
        let (source, sink) = (MemSource::with(1, 6), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let consumer = group.join("test").await.expect("join");
        let got = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        let acks = got
            .iter()
            .map(|d| (0, d.record.offset, Settle::Ack))
            .collect();
        group.settle(consumer, acks).await.expect("settle");
        assert_eq!(
            group.seek(None, SeekTo::Offset(2)).await.expect("seek"),
            vec![(0, 2)]
        );
        let replay = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(
            offsets(&replay),
            (2..6).map(|o| (0, o, 1)).collect::<Vec<_>>()
        );
        assert_eq!(
            group.seek(Some(0), SeekTo::Latest).await.expect("seek"),
            vec![(0, 6)]
        );
        assert_eq!(
            group.seek(Some(0), SeekTo::Offset(99)).await.expect("seek"),
            vec![(0, 6)],
            "clamped to the log end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_leaves_returns_its_leases_and_a_reject_parks_at_once() {
        let (source, sink) = (MemSource::with(1, 2), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let first = group.join("test").await.expect("join");
        assert_eq!(
            group
                .receive(first, 10, Duration::ZERO)
                .await
                .expect("receive")
                .len(),
            2
        );
        group.leave(first).await;
        let second = group.join("test").await.expect("join");
        let back = group
            .receive(second, 10, Duration::from_secs(10))
            .await
            .expect("receive");
        assert_eq!(offsets(&back), vec![(0, 0, 2), (0, 1, 2)]);
        let results = group
            .settle(
                second,
                vec![
                    (0, 0, Settle::Reject("bad schema".into())),
                    (0, 1, Settle::Ack),
                ],
            )
            .await
            .expect("settle");
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            *sink.0.lock(),
            vec![(0, 0, 2, DeadLetterReason::Rejected("bad schema".into()))]
        );
        assert_eq!(group.describe().await.expect("describe").1[0].lag, 0);
    }

    /// Deleting a group removes its directory right after `stop`: the
    /// journals must be closed by then, or their writers' clean-shutdown
    /// checkpoint lands in the directory while it is being removed
    /// ("Directory not empty").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_closes_the_journals_before_it_returns() {
        use crate::delivery::store::GroupMeta;
        use crate::log::{Clock, LogConfig, LogError, SystemClock};
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("t").join("g");
        let meta = GroupMeta::new("t", "g", &settings(), 1);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (store, states) = GroupStore::create(
            Arc::new(crate::io::StdFs),
            &dir,
            meta,
            &[0],
            LogConfig::default(),
            clock,
        )
        .expect("create");
        let journals = store.journals();
        let (source, sink) = (MemSource::with(1, 3), Arc::new(MemSink::default()));
        let group = start(settings(), false, states, Some(store), source, sink);
        let consumer = group.join("test").await.expect("join");
        let got = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        let items = got
            .iter()
            .map(|d| (d.partition, d.record.offset, Settle::Ack))
            .collect();
        group.settle(consumer, items).await.expect("settle");
        group.stop().await;
        assert!(
            matches!(journals[0].close().await, Err(LogError::Closed)),
            "the journal is still open after stop"
        );
        std::fs::remove_dir_all(&dir).expect("the group directory is removable");
    }
}
