//! The handle to a group's [engine](super::engine): [`GroupHandle`], the
//! requests it sends down the engine's channel, and the answers.
//!
//! Each request but `leave` carries a `oneshot` for its answer; once the
//! engine has stopped, requests fail with [`Stopped`]. These types are
//! re-exported by [`engine`](super::engine), the path the rest of the broker
//! uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pigeon_protocol::batch::Record;
use tokio::sync::{mpsc, oneshot};

use super::partition::{ConsumerId, DeliveryTimes, OffsetState, SettleError};
use super::settings::GroupSettings;
use super::stats::DeliveryStats;

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
    /// Never processed (the consumer had it buffered): available again at
    /// once, and this delivery does not count as an attempt.
    Release,
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
    /// Acks and redeliveries since the engine started.
    pub stats: DeliveryStats,
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

/// One open lease, for pending-entry listings (the Redis listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLease {
    /// Source partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The holder.
    pub consumer: ConsumerId,
    /// The name the holder joined with (`None`: gone, or a lease from
    /// before a restart).
    pub holder: Option<String>,
    /// Deliveries so far, this one included.
    pub attempt: u32,
    /// When it was last delivered (ms since the epoch, to the second).
    pub delivered_ms: i64,
}

/// A request to the engine, with the channel of its answer.
pub(super) enum Command {
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
        max_bytes: usize,
        wait: Duration,
        reply: oneshot::Sender<Result<Vec<GroupDelivery>, GroupError>>,
    },
    Settle {
        consumer: ConsumerId,
        items: Vec<(u32, u64, u32, Settle)>,
        reply: oneshot::Sender<Result<Vec<Result<(), SettleError>>, GroupError>>,
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
    Pending {
        reply: oneshot::Sender<Vec<PendingLease>>,
    },
    Claim {
        consumer: ConsumerId,
        items: Vec<(u32, u64)>,
        min_idle_ms: i64,
        count_attempt: bool,
        reply: oneshot::Sender<Vec<Option<PendingLease>>>,
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
    /// How many times the engine woke on its timer.
    timer_wakes: Arc<AtomicU64>,
}

/// The engine was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the consumer group is shutting down")]
pub struct Stopped;

/// Why a group refused a receive or a settle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The engine was stopped.
    #[error("the consumer group is shutting down")]
    Stopped,
    /// The group's journal cannot be written: nothing is handed out or
    /// settled until its state is durable again.
    #[error(
        "the consumer group's state cannot be made durable ({0}); it refuses receives and settles until its journal can be written again (free disk space, or restart the broker after a failed fsync)"
    )]
    NotDurable(String),
}

impl From<Stopped> for GroupError {
    fn from(_: Stopped) -> GroupError {
        GroupError::Stopped
    }
}

impl GroupHandle {
    /// The handle of the engine reading `commands`, counting its timer
    /// wakes in `timer_wakes`.
    pub(super) fn new(commands: mpsc::Sender<Command>, timer_wakes: Arc<AtomicU64>) -> GroupHandle {
        GroupHandle {
            commands,
            timer_wakes,
        }
    }

    /// How many times the engine has woken on its timer (lease deadlines,
    /// redeliveries coming due for a waiting receive, receives' `max_wait`):
    /// a diagnostic, and how the tests see that the timer does not spin.
    pub fn timer_wakes(&self) -> u64 {
        self.timer_wakes.load(Ordering::Relaxed)
    }

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
    ) -> Result<Vec<GroupDelivery>, GroupError> {
        self.receive_within(consumer, max, usize::MAX, wait).await
    }

    /// Like [`receive`](Self::receive), and no more than `max_bytes` of
    /// deliveries as [`delivery_size`](super::engine::delivery_size)
    /// counts them (always at least one message): the engine leases only
    /// what fits, so nothing is leased that the answer cannot carry.
    pub async fn receive_within(
        &self,
        consumer: ConsumerId,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<GroupDelivery>, GroupError> {
        self.ask(|reply| Command::Receive {
            consumer,
            max,
            max_bytes,
            wait,
            reply,
        })
        .await?
    }

    /// Acks, nacks, rejects, extends or releases `(partition, offset, action)`,
    /// whichever attempt the consumer's lease is; one result per item, in
    /// order.
    pub async fn settle(
        &self,
        consumer: ConsumerId,
        items: Vec<(u32, u64, Settle)>,
    ) -> Result<Vec<Result<(), SettleError>>, GroupError> {
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
    ) -> Result<Vec<Result<(), SettleError>>, GroupError> {
        self.ask(|reply| Command::Settle {
            consumer,
            items,
            reply,
        })
        .await?
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

    /// Every open lease, by partition and offset.
    pub async fn pending(&self) -> Result<Vec<PendingLease>, Stopped> {
        self.ask(|reply| Command::Pending { reply }).await
    }

    /// Gives the leases on `items` (`(partition, offset)`) that have been
    /// idle at least `min_idle_ms` to `consumer` (with `count_attempt`, as
    /// a new delivery); per item, the lease it now holds, or `None`.
    pub async fn claim(
        &self,
        consumer: ConsumerId,
        items: Vec<(u32, u64)>,
        min_idle_ms: i64,
        count_attempt: bool,
    ) -> Result<Vec<Option<PendingLease>>, Stopped> {
        self.ask(|reply| Command::Claim {
            consumer,
            items,
            min_idle_ms,
            count_attempt,
            reply,
        })
        .await
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
