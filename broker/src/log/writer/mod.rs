//! [`Log`]: the writer side of a partition log, owned by its writer (run
//! by one thread of the [writer pool](super::pool) at a time).
//!
//! ## Append, step by step (what is on disk at each point)
//!
//! 1. [`Log::append`] validates limits, rolls the segment if needed, assigns
//!    the base offset and the append time, and copies the batch, restamped,
//!    into a staging buffer. Nothing is on disk; nothing is visible.
//! 2. [`Log::flush_writes`] writes the staging buffer with one positioned
//!    write. The bytes are in the page cache. Index entries for them become
//!    visible to index lookups. If the write fails (e.g. `ENOSPC`), the file
//!    is cut back to where the staged bytes began and the whole staged group
//!    fails; nothing that was acknowledged is touched.
//! 3. [`Log::sync`] runs one `fdatasync` for everything written so far
//!    (group commit). Only then, under `fsync=always`, do readers see the
//!    new batches. If it fails the log turns read-only: the kernel may have
//!    dropped the dirty pages, so retrying would pretend (see [`fence`]).
//!
//! A crash before 3 leaves a tail that recovery validates batch by batch and
//! cuts at the first torn or corrupt one.
//!
//! ## Modules
//!
//! | module | job |
//! | --- | --- |
//! | this one | [`Log`] and the state its parts share: the active segment and the cursor, the segment list readers share, accessors |
//! | [`append`] | steps 1 and 2: limits, retries of idempotent batches, staging, the positioned write and the rollback of a failed one; index entries |
//! | [`commit`] | step 3 and the answers: the fsync policy's work, tickets, sync, publishing to readers, recovery checkpoints |
//! | [`fence`] | a failed `fdatasync`: read-only, back to the last synced point, cut and fence checkpoint |
//! | [`roll`] | roll and seal, deleting whole sealed segments (retention, trim), clean close |
//! | [`seal`] | under `fsync=never`/`interval`: the sealed segment's sync in the background, and its checkpoint once it completed |

pub mod append;
pub mod commit;
pub mod fence;
pub mod roll;
pub mod seal;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use super::clock::Clock;
use super::config::LogConfig;
use super::error::LogError;
use super::producers::{EpochSource, ProducerEntry, ProducerTable};
use super::reader::LogReader;
use super::recovery::RecoveryReport;
use super::segment::Segment;
use super::stats::LogStats;
use crate::io::FileSystem;

use append::PendingEntry;
use fence::SyncedPoint;

/// What readers share with the writer.
#[derive(Debug)]
pub(crate) struct Shared {
    /// All segments, oldest first; the last one is active. Replaced as a
    /// whole (roll, retention) so readers take a snapshot without blocking.
    pub segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// Why the log refuses writes, once it does (set with the writer's own
    /// state, for readiness checks; never cleared before a restart).
    pub read_only: RwLock<Option<String>>,
    /// What the writer counts for `/metrics`.
    pub stats: LogStats,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        self.segments.read().clone()
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// Append time given to every record of the batch (ms since the epoch).
    pub timestamp: i64,
    /// The log start offset at the time of the append.
    pub log_start_offset: u64,
    /// The batch was a retry of one already appended: nothing new was
    /// written, and these are the original's offsets and time.
    pub duplicate: bool,
}

/// State of the writer kept across appends; restored when a staged group
/// fails to be written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    /// Offset the next batch gets.
    pub next_offset: u64,
    /// Largest timestamp assigned so far (timestamps never go back).
    pub max_timestamp: i64,
    /// Bytes appended since the last index entry.
    pub bytes_since_index: u64,
    /// Timestamp of the last time index entry.
    pub last_indexed_timestamp: i64,
    /// Relative offset of the last batch of the active segment.
    pub last_batch_relative: Option<u32>,
}

/// Why the checkpoint left on disk by the last run must be replaced by an
/// ordinary (unclean) one before the log takes its first append; until
/// then it is true of the log as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaleCheckpoint {
    /// A fence (an fsync failed, see [`super::checkpoint`]): left in
    /// place, the next start would cut the appends after it.
    Fence,
    /// A clean one: left in place, the next start would trust the active
    /// segment's index entries of appends that never reached the disk
    /// (a clean open keeps every entry of the index files).
    Clean,
}

/// The active segment and the writer's position in it.
#[derive(Debug)]
pub(crate) struct Active {
    pub segment: Arc<Segment>,
    /// When the segment got its first batch, for `segment_ms`.
    pub created_ms: i64,
    /// Bytes written to the file.
    pub write_pos: u64,
    /// At least the file's length: `write_pos` plus the zeros written
    /// ahead of small commits with `preallocate` (see
    /// [`commit`](self::commit), "Zeros ahead of the appends"); cut back to
    /// `write_pos` at a roll and a clean close.
    pub file_len: u64,
    /// Bytes covered by a completed fdatasync.
    pub synced_pos: u64,
    /// Position of the last checkpoint in this segment.
    pub checkpoint_pos: u64,
    pub cursor: Cursor,
}

/// The writer of one partition log. See the module doc for the crash story.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) active: Active,
    /// Batches copied in, restamped, not yet written.
    staged: Vec<u8>,
    /// Cursor before the first staged batch, to roll back a failed write.
    staged_from: Option<Cursor>,
    pending_entries: Vec<PendingEntry>,
    /// Ticket of the next staged append.
    next_ticket: u64,
    /// Ticket of the first append in `staged`.
    staged_first_ticket: u64,
    /// Appends since the last commit: `(base offset, ticket)`, so that a
    /// retry in the same group shares its original's ticket.
    unsettled: Vec<(u64, u64)>,
    /// Tickets lost by failed writes since the last commit.
    lost: Vec<(std::ops::Range<u64>, LogError)>,
    /// Tickets below this are written and as durable as the policy promises
    /// (under `fsync=always`: synced).
    durable_below: u64,
    /// Set after a failed fsync: the log refuses writes.
    read_only: Option<String>,
    /// The writer's state at `active.synced_pos`.
    synced: SyncedPoint,
    /// The checkpoint on disk must be replaced by an ordinary one before
    /// the first append (see [`StaleCheckpoint`]).
    pub(crate) stale_checkpoint: Option<StaleCheckpoint>,
    /// Start of the idle period after which a checkpoint is written at the
    /// end (see [`commit`]): when bytes were last written to the active
    /// segment, or, after a recovery that left the checkpoint behind the
    /// recovered end, about when the open ended; cleared once that
    /// checkpoint was tried.
    pub(crate) idle_since: Option<Instant>,
    /// When the oldest write not yet synced happened (interval policy).
    unsynced_since: Option<Instant>,
    /// How often the log writes small groups: whether zeros are written
    /// ahead of them (see [`commit`], "Zeros ahead of the appends").
    pub(crate) small_writes: commit::WriteRate,
    /// What opening the log had to do.
    pub(crate) recovery: RecoveryReport,
    /// Idempotent producers' sequences and recent batches.
    pub(crate) producers: ProducerTable,
    /// A sealed segment whose background sync is not settled yet.
    pending_seal: Option<seal::PendingSeal>,
    /// How seal jobs run.
    seal_mode: seal::SealMode,
    /// The broker's producer registry, for fencing.
    epochs: Option<Arc<dyn EpochSource>>,
    /// Producer entries as they were before the staged group touched them.
    staged_producers: Vec<(i64, Option<ProducerEntry>)>,
}

impl Log {
    pub(crate) fn assemble(
        dir: &Path,
        config: LogConfig,
        fs: Arc<dyn FileSystem>,
        clock: Arc<dyn Clock>,
        segments: Vec<Arc<Segment>>,
        active: Active,
    ) -> Log {
        // Every segment but the active one was sealed and synced when the
        // log was opened, and recovery released each to the caches of open
        // segments as it opened it.
        let shared = Arc::new(Shared {
            segments: RwLock::new(Arc::new(segments)),
            read_only: RwLock::new(None),
            stats: LogStats::default(),
        });
        Log {
            dir: dir.to_owned(),
            config,
            fs,
            clock,
            shared,
            staged: Vec::new(),
            staged_from: None,
            pending_entries: Vec::new(),
            next_ticket: 0,
            staged_first_ticket: 0,
            unsettled: Vec::new(),
            lost: Vec::new(),
            durable_below: 0,
            read_only: None,
            synced: SyncedPoint::of(&active, 0),
            stale_checkpoint: None,
            idle_since: None,
            unsynced_since: None,
            small_writes: commit::WriteRate::default(),
            recovery: RecoveryReport::default(),
            producers: ProducerTable::new(),
            pending_seal: None,
            seal_mode: seal::SealMode::Background,
            epochs: None,
            staged_producers: Vec::new(),
            active,
        }
    }

    /// Uses `epochs` to fence producers whose epoch is no longer current.
    pub fn with_epochs(mut self, epochs: Arc<dyn EpochSource>) -> Log {
        self.epochs = Some(epochs);
        self
    }

    /// The idempotent producer state.
    pub fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    /// A reader sharing this log's segments.
    pub fn reader(&self) -> LogReader {
        LogReader::new(self.shared.clone())
    }

    /// `(segment base, bytes written)` of the active segment.
    pub fn end_position(&self) -> (u64, u64) {
        (self.active.segment.base_offset, self.active.write_pos)
    }

    /// What opening the log had to do (scan, truncation, index rebuilds).
    pub fn recovery_report(&self) -> RecoveryReport {
        self.recovery
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Offset the next appended record will get (staged batches included).
    pub fn next_offset(&self) -> u64 {
        self.active.cursor.next_offset
    }

    /// `(segment base, bytes)` up to which the log is durable: the active
    /// segment's bytes covered by a completed fsync, or, while a sealed
    /// segment's background sync is unsettled, that segment's.
    pub fn durable_position(&self) -> (u64, u64) {
        if let Some(position) = self.pending_durable_position() {
            return position;
        }
        (self.active.segment.base_offset, self.active.synced_pos)
    }
}
