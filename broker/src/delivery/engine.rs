//! The group engine: one task per consumer group, owning the group's
//! delivery state, fed by a channel (no locks around the state machine).
//!
//! It serves `join`, `receive` (long-poll: waits up to `max_wait` for a
//! message), `settle` (ack, nack, reject, extend), `seek`, `pause`,
//! `describe` and `leave`; fires lease expiries and redeliveries on time;
//! copies dead letters out through a [`DeadLetterSink`] and settles them only
//! once the copy is durable; and journals every change through the
//! [`GroupStore`] (group-committed, lazily: the engine does not wait for the
//! journal before answering, so the last commit window of acks can be
//! redelivered after a crash, never lost).
//!
//! ## Dead letters: the crash story
//!
//! 1. The state machine marks the message dead-lettering
//!    (`DeadLetterStarted`): it is out of delivery from then on.
//! 2. The engine waits until the journal holds that event durably (a
//!    barrier through the journal writer) — the one place it waits for the
//!    journal. A crash before this point: the journal still has the lease,
//!    nothing was parked, the message comes back (an attempt).
//! 3. The copy is written to the DLQ topic and made durable. A crash here:
//!    the journal says dead-lettering, so after the restart the copy is
//!    written again, and the sink finds it already parked (idempotent).
//! 4. `DeadLettered` settles it (journaled lazily, like an ack; a crash
//!    before it is journaled is step 3 again).
//!
//! So a parked message is never delivered again, and never parked twice.
//!
//! Source records are read through a [`SourceReader`], so the engine is
//! tested with paused tokio time against an in-memory source.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pigeon_protocol::batch::Record;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::partition::{
    ConsumerId, DeadLetter, Delivery, DeliveryTimes, OffsetState, PartitionDelivery, SettleError,
};
use super::settings::{GroupSettings, Jitter};
use super::store::GroupStore;

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

/// Writes dead-letter copies (to the `<topic>.<group>.dlq` topic).
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Makes the copy durable; the same `(partition, offset)` written twice
    /// must be stored once (an idempotent write keyed on the source offset).
    fn write(
        &self,
        partition: usize,
        dead: &DeadLetter,
        record: &Record,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// One message given to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDelivery {
    /// Source partition.
    pub partition: u32,
    /// The record (offset, timestamp, key, value, headers).
    pub record: Record,
    /// Which delivery this is.
    pub attempt: u32,
    /// When the lease ends.
    pub lease_deadline_ms: i64,
}

/// What a consumer does with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Processed.
    Ack,
    /// Deliver again after this delay (`None`: the group's backoff).
    Nack(Option<Duration>),
    /// Poison: to the dead-letter queue, with this reason.
    Reject(String),
    /// Lease ends this long from now.
    Extend(Duration),
}

/// Per-partition figures for `describe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionFigures {
    /// Every offset below is settled.
    pub committed_floor: u64,
    /// Source log start and end.
    pub log_start: u64,
    /// Source log end.
    pub log_end: u64,
    /// Messages not settled.
    pub lag: u64,
    /// Leased now.
    pub in_flight: u64,
    /// Waiting for redelivery.
    pub delayed: u64,
    /// Copied to the dead-letter queue.
    pub dead_lettered: u64,
    /// Deleted by retention before they were settled.
    pub removed_by_retention: u64,
}

/// Where one message stands, for `message show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetReport {
    /// Its state.
    pub state: OffsetState,
    /// When it was first and last delivered, while tracked.
    pub times: Option<DeliveryTimes>,
    /// The name the lease holder joined with (in flight only).
    pub holder: Option<String>,
}

enum Command {
    Stop {
        reply: oneshot::Sender<()>,
    },
    Join {
        name: String,
        reply: oneshot::Sender<ConsumerId>,
    },
    Leave {
        consumer: ConsumerId,
    },
    Receive {
        consumer: ConsumerId,
        max: usize,
        wait: Duration,
        reply: oneshot::Sender<Vec<GroupDelivery>>,
    },
    Settle {
        consumer: ConsumerId,
        items: Vec<(u32, u64, u32, Settle)>,
        reply: oneshot::Sender<Vec<Result<(), SettleError>>>,
    },
    Seek {
        partition: Option<u32>,
        target: SeekTo,
        reply: oneshot::Sender<Vec<(u32, u64)>>,
    },
    Pause {
        paused: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Alter {
        settings: GroupSettings,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Describe {
        reply: oneshot::Sender<(bool, Vec<PartitionFigures>)>,
    },
    State {
        partition: u32,
        offset: u64,
        reply: oneshot::Sender<Option<OffsetReport>>,
    },
}

/// Where a seek moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// An offset (clamped to the log's bounds).
    Offset(u64),
    /// The log start.
    Earliest,
    /// The log end: only new messages.
    Latest,
}

/// Handle to a running group engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupHandle {
    commands: mpsc::Sender<Command>,
}

/// The engine was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the consumer group is shutting down")]
pub struct Stopped;

impl GroupHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// A new consumer joins.
    pub async fn join(&self, name: impl Into<String>) -> Result<ConsumerId, Stopped> {
        let name = name.into();
        self.ask(|reply| Command::Join { name, reply }).await
    }

    /// Stops the engine for good (the group is being deleted): every change
    /// is handed to the journal and appended first; receives still waiting
    /// are dropped, and every later request fails with [`Stopped`].
    pub async fn stop(&self) {
        let _ = self.ask(|reply| Command::Stop { reply }).await;
    }

    /// A consumer leaves (or its connection dropped): its leases return.
    pub async fn leave(&self, consumer: ConsumerId) {
        let _ = self.commands.send(Command::Leave { consumer }).await;
    }

    /// Up to `max` messages for `consumer`, waiting up to `wait` for one.
    pub async fn receive(
        &self,
        consumer: ConsumerId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<GroupDelivery>, Stopped> {
        self.ask(|reply| Command::Receive {
            consumer,
            max,
            wait,
            reply,
        })
        .await
    }

    /// Acks, nacks, rejects or extends `(partition, offset, action)`,
    /// whichever attempt the consumer's lease is; one result per item, in
    /// order.
    pub async fn settle(
        &self,
        consumer: ConsumerId,
        items: Vec<(u32, u64, Settle)>,
    ) -> Result<Vec<Result<(), SettleError>>, Stopped> {
        let items = items.into_iter().map(|(p, o, a)| (p, o, 0, a)).collect();
        self.settle_attempts(consumer, items).await
    }

    /// Like [`settle`](Self::settle) for `(partition, offset, attempt,
    /// action)`: an item applies only if the consumer's lease on the offset
    /// is that attempt (0: any), else `LeaseLost` — a late settle of an
    /// expired lease never touches a newer lease of the same message.
    pub async fn settle_attempts(
        &self,
        consumer: ConsumerId,
        items: Vec<(u32, u64, u32, Settle)>,
    ) -> Result<Vec<Result<(), SettleError>>, Stopped> {
        self.ask(|reply| Command::Settle {
            consumer,
            items,
            reply,
        })
        .await
    }

    /// Moves one partition (or all) to `target`; returns where each starts.
    pub async fn seek(
        &self,
        partition: Option<u32>,
        target: SeekTo,
    ) -> Result<Vec<(u32, u64)>, Stopped> {
        self.ask(|reply| Command::Seek {
            partition,
            target,
            reply,
        })
        .await
    }

    /// Pauses or resumes deliveries (durably).
    pub async fn pause(&self, paused: bool) -> Result<Result<(), String>, Stopped> {
        self.ask(|reply| Command::Pause { paused, reply }).await
    }

    /// Changes the settings (durably); leases already given keep their
    /// deadline.
    pub async fn alter(&self, settings: GroupSettings) -> Result<Result<(), String>, Stopped> {
        self.ask(|reply| Command::Alter { settings, reply }).await
    }

    /// Whether paused, and per-partition figures.
    pub async fn describe(&self) -> Result<(bool, Vec<PartitionFigures>), Stopped> {
        self.ask(|reply| Command::Describe { reply }).await
    }

    /// Where one message is.
    pub async fn state_of(
        &self,
        partition: u32,
        offset: u64,
    ) -> Result<Option<OffsetReport>, Stopped> {
        self.ask(|reply| Command::State {
            partition,
            offset,
            reply,
        })
        .await
    }
}

/// A receive waiting for messages.
struct Waiting {
    consumer: ConsumerId,
    max: usize,
    until: Instant,
    reply: oneshot::Sender<Vec<GroupDelivery>>,
}

struct Engine<S: SourceReader, D: DeadLetterSink> {
    settings: GroupSettings,
    paused: bool,
    states: Vec<PartitionDelivery>,
    /// Metadata updates (pause); `None` in tests without storage.
    store: Option<GroupStore>,
    /// Ordered channel to the journal writer task.
    journal: Option<mpsc::UnboundedSender<JournalWork>>,
    source: Arc<S>,
    sink: Arc<D>,
    jitter: Jitter,
    next_consumer: ConsumerId,
    /// Members, with the names they joined with.
    consumers: HashMap<ConsumerId, String>,
    waiting: Vec<Waiting>,
    /// Round-robin start for fairness across partitions.
    rotate: usize,
    /// Signalled when a source partition's log end moves; `None` when the
    /// source offers no watches (then waiting receives are polled).
    appended: Option<Arc<tokio::sync::Notify>>,
    clock: fn() -> i64,
}

/// Milliseconds since the epoch, following tokio's (pausable) clock.
fn tokio_now_ms() -> i64 {
    static START: std::sync::OnceLock<(Instant, i64)> = std::sync::OnceLock::new();
    let (start, wall) = START.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        (Instant::now(), wall)
    });
    wall + Instant::now().duration_since(*start).as_millis() as i64
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
    let now = tokio_now_ms();
    let mut recovered = Vec::new();
    for (p, state) in states.iter_mut().enumerate() {
        for dead in state.recover_leases(now, &settings) {
            recovered.push((p, dead));
        }
    }
    let (commands, inbox) = mpsc::channel(1024);
    let journal = store
        .as_ref()
        .map(|store| spawn_journal_writer(store.journals()));
    let appended = watch_appends(source.end_watches());
    let mut engine = Engine {
        settings,
        paused,
        states,
        store,
        journal,
        source,
        sink,
        jitter: Jitter::new(now as u64),
        next_consumer: first_consumer_id(),
        consumers: HashMap::new(),
        waiting: Vec::new(),
        rotate: 0,
        appended,
        clock: tokio_now_ms,
    };
    tokio::spawn(async move {
        // Dead letters left pending by a crash are written again (the sink
        // is idempotent, so nothing is parked twice).
        for p in 0..engine.states.len() {
            let pending: Vec<DeadLetter> = engine.states[p].pending_dead_letters().collect();
            recovered.extend(pending.into_iter().map(|d| (p, d)));
        }
        recovered.sort_by_key(|(p, d)| (*p, d.offset));
        recovered.dedup_by_key(|(p, d)| (*p, d.offset));
        engine.dead_letter(recovered).await;
        engine.run(inbox).await;
    });
    GroupHandle { commands }
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
                    self.serve_waiting();
                    self.journal();
                    continue;
                }
            };
            let Some(command) = command else { return };
            if let Command::Stop { reply } = command {
                self.journal_durable().await;
                // The journals' writer threads write their clean-shutdown
                // checkpoint when closed: that must happen before the
                // group's directory is deleted, not during.
                if let Some(store) = &self.store {
                    store.close().await;
                }
                let _ = reply.send(());
                return;
            }
            self.handle(command).await;
            self.serve_waiting();
            self.journal();
        }
    }

    /// When the engine must wake without a request: a lease deadline, a
    /// delay coming due, or a waiting receive's deadline. New source data is
    /// noticed through the log end watches (or, for a source without them,
    /// by polling the waiting receives every few milliseconds).
    fn next_wake(&self) -> Option<Instant> {
        let now_ms = (self.clock)();
        let due_ms = self
            .states
            .iter()
            .filter_map(PartitionDelivery::next_deadline)
            .min();
        let due =
            due_ms.map(|ms| Instant::now() + Duration::from_millis((ms - now_ms).max(0) as u64));
        let waiting = self.waiting.iter().map(|w| w.until).min();
        let poll = (!self.waiting.is_empty() && self.appended.is_none())
            .then(|| Instant::now() + Duration::from_millis(5));
        due.into_iter().chain(waiting).chain(poll).min()
    }

    async fn on_timer(&mut self) {
        let now = (self.clock)();
        let mut dead = Vec::new();
        for (p, state) in self.states.iter_mut().enumerate() {
            dead.extend(
                state
                    .expire(now, &self.settings, &mut self.jitter)
                    .into_iter()
                    .map(|d| (p, d)),
            );
        }
        self.dead_letter(dead).await;
        self.serve_waiting();
        self.journal();
    }

    async fn handle(&mut self, command: Command) {
        let now = (self.clock)();
        match command {
            // Handled by the run loop, which ends with it.
            Command::Stop { reply } => {
                let _ = reply.send(());
            }
            Command::Join { name, reply } => {
                let id = self.next_consumer;
                self.next_consumer = next_consumer_id(id);
                self.consumers.insert(id, name);
                let _ = reply.send(id);
            }
            Command::Leave { consumer } => {
                self.consumers.remove(&consumer);
                self.waiting.retain(|w| w.consumer != consumer);
                let mut dead = Vec::new();
                for (p, state) in self.states.iter_mut().enumerate() {
                    dead.extend(
                        state
                            .drop_consumer(consumer, now, &self.settings, &mut self.jitter)
                            .into_iter()
                            .map(|d| (p, d)),
                    );
                }
                self.dead_letter(dead).await;
            }
            Command::Receive {
                consumer,
                max,
                wait,
                reply,
            } => {
                let got = self.take(consumer, max);
                if got.is_empty() && !wait.is_zero() {
                    self.waiting.push(Waiting {
                        consumer,
                        max,
                        until: Instant::now() + wait,
                        reply,
                    });
                } else {
                    let _ = reply.send(got);
                }
            }
            Command::Settle {
                consumer,
                items,
                reply,
            } => {
                let mut results = Vec::with_capacity(items.len());
                let mut dead = Vec::new();
                for (partition, offset, attempt, action) in items {
                    let Some(state) = self.states.get_mut(partition as usize) else {
                        results.push(Err(SettleError::LeaseLost { offset }));
                        continue;
                    };
                    if attempt != 0 && state.lease_of(offset).is_some_and(|l| l.attempt != attempt)
                    {
                        results.push(Err(SettleError::LeaseLost { offset }));
                        continue;
                    }
                    let result = match action {
                        Settle::Ack => state.ack(consumer, offset),
                        Settle::Nack(delay) => state
                            .nack(
                                consumer,
                                offset,
                                delay.map(|d| d.as_millis() as i64),
                                now,
                                &self.settings,
                                &mut self.jitter,
                            )
                            .map(|d| dead.extend(d.map(|d| (partition as usize, d)))),
                        Settle::Reject(reason) => state
                            .reject(consumer, offset, reason)
                            .map(|d| dead.extend(d.map(|d| (partition as usize, d)))),
                        Settle::Extend(by) => state
                            .extend(consumer, offset, by.as_millis() as i64, now)
                            .map(|_| ()),
                    };
                    results.push(result);
                }
                let _ = reply.send(results);
                self.dead_letter(dead).await;
            }
            Command::Seek {
                partition,
                target,
                reply,
            } => {
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
                let _ = reply.send(moved);
            }
            Command::Pause { paused, reply } => {
                let saved = match &mut self.store {
                    Some(store) => store
                        .update_meta(|m| m.paused = paused)
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                if saved.is_ok() {
                    self.paused = paused;
                }
                let _ = reply.send(saved);
            }
            Command::Alter { settings, reply } => {
                let saved = settings.validate().and_then(|()| match &mut self.store {
                    Some(store) => store
                        .update_meta(|m| m.set_settings(&settings))
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                });
                if saved.is_ok() {
                    self.settings = settings;
                }
                let _ = reply.send(saved);
            }
            Command::Describe { reply } => {
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
                        }
                    })
                    .collect();
                let _ = reply.send((self.paused, figures));
            }
            Command::State {
                partition,
                offset,
                reply,
            } => {
                let _ = reply.send(self.states.get(partition as usize).map(|s| {
                    let (state, times) = s.state_and_times(offset);
                    let holder = match &state {
                        OffsetState::InFlight(lease) => {
                            self.consumers.get(&lease.consumer).cloned()
                        }
                        _ => None,
                    };
                    OffsetReport {
                        state,
                        times,
                        holder,
                    }
                }));
            }
        }
    }

    /// Leases up to `max` messages to `consumer`, spreading over partitions,
    /// within its `max_in_flight`; reads their records.
    fn take(&mut self, consumer: ConsumerId, max: usize) -> Vec<GroupDelivery> {
        if self.paused || !self.consumers.contains_key(&consumer) {
            return Vec::new();
        }
        let held: usize = self.states.iter().map(|s| s.in_flight_of(consumer)).sum();
        let mut room = max.min((self.settings.max_in_flight as usize).saturating_sub(held));
        let now = (self.clock)();
        let count = self.states.len();
        let mut out = Vec::new();
        for i in 0..count {
            if room == 0 {
                break;
            }
            let p = (self.rotate + i) % count;
            let (log_start, log_end) = self.source.bounds(p);
            let state = &mut self.states[p];
            state.apply_retention(log_start);
            let leased: Vec<Delivery> = state.deliver(consumer, room, now, log_end, &self.settings);
            if leased.is_empty() {
                continue;
            }
            room -= leased.len();
            // Both in offset order, then matched in one walk.
            let mut leased = leased;
            leased.sort_unstable_by_key(|d| d.offset);
            let offsets: Vec<u64> = leased.iter().map(|d| d.offset).collect();
            let mut records = self.source.records(p, &offsets).into_iter().peekable();
            for d in leased {
                while records.next_if(|r| r.offset < d.offset).is_some() {}
                match records.next_if(|r| r.offset == d.offset) {
                    Some(record) => out.push(GroupDelivery {
                        partition: p as u32,
                        record,
                        attempt: d.attempt,
                        lease_deadline_ms: d.deadline_ms,
                    }),
                    // Deleted by retention between the bounds and the read.
                    None => {
                        let _ = state.ack(consumer, d.offset);
                        state.removed_by_retention += 1;
                    }
                }
            }
        }
        self.rotate = self.rotate.wrapping_add(1);
        out
    }

    /// Answers waiting receives that can now be served or have timed out.
    fn serve_waiting(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        let now = Instant::now();
        for w in waiting {
            let got = self.take(w.consumer, w.max);
            if !got.is_empty() || now >= w.until || w.reply.is_closed() {
                let _ = w.reply.send(got);
            } else {
                self.waiting.push(w);
            }
        }
    }

    /// Copies dead letters out, then settles each whose copy is durable. A
    /// failed copy stays pending and is tried again at the next call.
    /// Nothing is copied before the journal holds the dead-lettering (see
    /// the module's crash story).
    async fn dead_letter(&mut self, mut dead: Vec<(usize, DeadLetter)>) {
        for p in 0..self.states.len() {
            for pending in self.states[p].pending_dead_letters() {
                if !dead
                    .iter()
                    .any(|(q, d)| *q == p && d.offset == pending.offset)
                {
                    dead.push((p, pending));
                }
            }
        }
        if dead.is_empty() {
            return;
        }
        if !self.journal_durable().await {
            tracing::warn!(
                count = dead.len(),
                "the group journal did not take the dead-lettering; the copies wait for the next try"
            );
            return;
        }
        for (p, d) in dead {
            let records = self.source.records(p, &[d.offset]);
            let written = match records.first() {
                Some(record) => self.sink.write(p, &d, record).await,
                // Deleted by retention: nothing left to park.
                None => Ok(()),
            };
            match written {
                Ok(()) => self.states[p].dead_lettered(d.offset),
                Err(e) => {
                    tracing::warn!(partition = p, offset = d.offset, error = %e, "dead-letter copy failed; will retry")
                }
            }
        }
    }

    /// Hands the state changes to the journal writer, in order (not
    /// awaited: acks are persisted lazily, in group commits).
    fn journal(&mut self) {
        for (p, state) in self.states.iter_mut().enumerate() {
            let events = state.take_events();
            if let Some(journal) = &self.journal
                && !events.is_empty()
            {
                let _ = journal.send(JournalWork::Events(p, events));
            }
        }
    }

    /// Hands the state changes to the journal writer and waits until every
    /// change made so far is appended (durable under the journal's fsync
    /// policy); `false` if an append failed. `true` at once without a
    /// journal (tests without storage).
    async fn journal_durable(&mut self) -> bool {
        self.journal();
        let Some(journal) = &self.journal else {
            return true;
        };
        let (done, appended) = oneshot::channel();
        if journal.send(JournalWork::Barrier(done)).is_err() {
            return false;
        }
        appended.await.unwrap_or(false)
    }
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

/// What the journal writer is asked to do.
enum JournalWork {
    /// Append these events of a partition (after those sent before).
    Events(usize, Vec<super::journal::Event>),
    /// Answer once everything sent before is appended: `true`, or `false`
    /// if an append failed.
    Barrier(oneshot::Sender<bool>),
}

/// The journal writer of a group: appends each partition's events in the
/// order the engine made them, everything queued in one append per
/// partition (so the journal's group commit covers many engine steps), the
/// partitions' appends concurrently (so one partition's fsync does not hold
/// up the others', and acks reach the disk sooner).
fn spawn_journal_writer(
    journals: Vec<crate::log::PartitionLog>,
) -> mpsc::UnboundedSender<JournalWork> {
    let (tx, mut rx) = mpsc::unbounded_channel::<JournalWork>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut by_partition: std::collections::BTreeMap<usize, Vec<super::journal::Event>> =
                std::collections::BTreeMap::new();
            let mut barriers = Vec::new();
            let mut work = Some(first);
            while let Some(next) = work {
                match next {
                    JournalWork::Events(p, events) => {
                        by_partition.entry(p).or_default().extend(events)
                    }
                    JournalWork::Barrier(done) => barriers.push(done),
                }
                work = rx.try_recv().ok();
            }
            let appends = by_partition.into_iter().map(|(p, events)| {
                let journal = journals.get(p);
                async move {
                    let Some(journal) = journal else {
                        return true;
                    };
                    match super::store::append_to(journal, &events).await {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::error!(partition = p, error = %e, "writing the group journal failed");
                            false
                        }
                    }
                }
            });
            let all_ok = futures_util::future::join_all(appends)
                .await
                .into_iter()
                .all(|ok| ok);
            for done in barriers {
                let _ = done.send(all_ok);
            }
        }
    });
    tx
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
mod tests {
    use super::*;
    use crate::delivery::DeadLetterReason;
    use bytes::Bytes;
    use parking_lot::Mutex;

    /// Records in memory; with `ends`, it offers log end watches like a
    /// real topic.
    #[derive(Default)]
    struct MemSource(
        Mutex<Vec<Vec<Record>>>,
        Option<Vec<tokio::sync::watch::Sender<u64>>>,
    );

    impl MemSource {
        fn with(partitions: usize, per_partition: u64) -> Arc<MemSource> {
            Self::build(partitions, per_partition, false)
        }

        fn watched(partitions: usize, per_partition: u64) -> Arc<MemSource> {
            Self::build(partitions, per_partition, true)
        }

        fn build(partitions: usize, per_partition: u64, watched: bool) -> Arc<MemSource> {
            let ends = watched.then(|| {
                (0..partitions)
                    .map(|_| tokio::sync::watch::channel(0).0)
                    .collect()
            });
            let source = MemSource(Mutex::new(vec![Vec::new(); partitions]), ends);
            for p in 0..partitions {
                for _ in 0..per_partition {
                    source.push(p, "m");
                }
            }
            Arc::new(source)
        }

        fn push(&self, p: usize, value: &str) {
            let mut parts = self.0.lock();
            let offset = parts[p].len() as u64;
            parts[p].push(Record {
                offset,
                timestamp: 1,
                key: None,
                value: Bytes::from(format!("{value}-{p}-{offset}")),
                headers: Vec::new(),
            });
            if let Some(ends) = &self.1 {
                ends[p].send_replace(offset + 1);
            }
        }
    }

    impl SourceReader for MemSource {
        fn bounds(&self, partition: usize) -> (u64, u64) {
            (0, self.0.lock()[partition].len() as u64)
        }
        fn records(&self, partition: usize, offsets: &[u64]) -> Vec<Record> {
            let parts = self.0.lock();
            offsets
                .iter()
                .filter_map(|o| parts[partition].get(*o as usize).cloned())
                .collect()
        }
        fn end_watches(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
            self.1.iter().flatten().map(|end| end.subscribe()).collect()
        }
    }

    #[derive(Default)]
    struct MemSink(Mutex<Vec<(usize, u64, u32, DeadLetterReason)>>);

    impl DeadLetterSink for MemSink {
        async fn write(
            &self,
            partition: usize,
            dead: &DeadLetter,
            record: &Record,
        ) -> Result<(), String> {
            assert_eq!(record.offset, dead.offset);
            self.0
                .lock()
                .push((partition, dead.offset, dead.attempts, dead.reason.clone()));
            Ok(())
        }
    }

    fn settings() -> GroupSettings {
        GroupSettings {
            ack_timeout: Duration::from_secs(1),
            max_deliveries: 3,
            backoff_initial: Duration::from_millis(100),
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(10),
            backoff_jitter: 0.0,
            max_in_flight: 100,
        }
    }

    fn start_engine(source: &Arc<MemSource>, sink: &Arc<MemSink>) -> GroupHandle {
        let partitions = source.0.lock().len();
        let states = (0..partitions).map(|_| PartitionDelivery::new(0)).collect();
        start(
            settings(),
            false,
            states,
            None,
            source.clone(),
            sink.clone(),
        )
    }

    fn offsets(got: &[GroupDelivery]) -> Vec<(u32, u64, u32)> {
        let mut v: Vec<_> = got
            .iter()
            .map(|d| (d.partition, d.record.offset, d.attempt))
            .collect();
        v.sort_unstable();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn a_poison_message_reaches_the_dlq_after_max_deliveries_and_the_rest_settle() {
        let (source, sink) = (MemSource::with(1, 5), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let consumer = group.join("test").await.expect("join");
        let first = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(
            offsets(&first),
            (0..5).map(|o| (0, o, 1)).collect::<Vec<_>>()
        );
        let acks = (0..4).map(|o| (0, o, Settle::Ack)).collect();
        assert!(
            group
                .settle(consumer, acks)
                .await
                .expect("settle")
                .iter()
                .all(Result::is_ok)
        );
        // Offset 4 is never acked: its lease expires, it comes back with
        // backoff, attempt 2 then 3, then it is parked.
        for attempt in 2..=3 {
            let again = group
                .receive(consumer, 10, Duration::from_secs(10))
                .await
                .expect("receive");
            assert_eq!(offsets(&again), vec![(0, 4, attempt)]);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while sink.0.lock().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            *sink.0.lock(),
            vec![(0, 4, 3, DeadLetterReason::MaxDeliveries)]
        );
        let (paused, figures) = group.describe().await.expect("describe");
        assert!(!paused);
        assert_eq!(
            (
                figures[0].lag,
                figures[0].dead_lettered,
                figures[0].committed_floor
            ),
            (0, 1, 5)
        );
        assert_eq!(
            group.state_of(0, 4).await.expect("state"),
            Some(OffsetReport {
                state: OffsetState::Settled,
                times: None,
                holder: None
            })
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
