//! The segmented append-only log of one partition.
//!
//! ## Design constraints
//!
//! 1. Offsets are dense u64s from the log start; a record batch takes
//!    `record_count` consecutive offsets and is never split or re-encoded:
//!    the bytes appended are the bytes served.
//! 2. One writer per partition ([`Log`], driven by [`PartitionLog`]'s
//!    thread); any number of concurrent readers ([`LogReader`]) that never
//!    wait for it.
//! 3. `fsync=always` acknowledges an append only once an `fdatasync`
//!    covering it has completed; concurrent appends share one (group
//!    commit). Readers see a batch only once it is as durable as the policy
//!    promises.
//! 4. After a failed `fdatasync` the partition refuses writes until restart,
//!    and nothing past the last synced position is served or acknowledged,
//!    in this process or after a restart (the segment is cut back and a
//!    fence checkpoint records the position; see [`writer::fence`]).
//! 5. Restart work is bounded by the bytes written since the last checkpoint
//!    (default every 64 MiB and at each roll; at each roll only under
//!    `fsync=never`, once the sealed segment's background sync completed;
//!    and once the log took no write for 5 s, see
//!    [`writer::commit`]), not by the log's size; a clean shutdown, or a
//!    checkpoint at the end, makes it zero, and such an open writes
//!    nothing. Many logs are opened side by side ([`recovery::many`]).
//! 6. Nothing damaged is ever served: every batch read is checked.
//!
//! ## Files of a partition directory
//!
//! | file | content |
//! | --- | --- |
//! | `<base>.log` | record batches back to back (format: [`pigeon_protocol::batch`]) |
//! | `<base>.index` | sparse offset index, see [`index`] |
//! | `<base>.timeindex` | sparse time index, see [`index`] |
//! | `checkpoint` | recovery point and clean-shutdown flag, see [`checkpoint`] |
//!
//! `<base>` is the segment's first offset, zero-padded to 20 digits.
//!
//! ## Open files and maps
//!
//! | what | held open |
//! | --- | --- |
//! | `.log` of the active segment (and of a sealed one until its sync completed) | always, by the writer |
//! | `.log` of the other sealed segments | while among the `max_open_segments` most recently read of the broker (see [`open_segments`]); reopened by a read |
//! | `.index`, `.timeindex` | never: reopened only to seal them (see [`index`]) |
//! | the two index maps of the active segment (and of a sealed one until its sync completed) | always, by the writer |
//! | the two index maps of the other sealed segments | while among the `2 × max_open_segments` most recently used maps of the broker (see [`open_segments`]); mapped again by a lookup |
//!
//! ## Modules
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | settings and the fsync policy |
//! | [`segment`] | one segment's files, naming, the batch scanner |
//! | [`index`] | memory-mapped offset and time indexes (maps kept, files reopened only to seal) |
//! | [`open_segments`] | the broker-wide bound on open `.log` files: a CLOCK cache of sealed segments' files, reopened on demand |
//! | [`writer`] | the writer, [`Log`]: its state, the append pipeline step by step |
//! | [`writer::append`] | staging appends, the positioned write, rolling back a failed one |
//! | [`writer::commit`] | commits under each fsync policy, each append's answer, syncs, checkpoints |
//! | [`writer::fence`] | a failed fsync: back to the last synced point, read-only, fence |
//! | [`writer::roll`] | roll and seal, retention and trim deletes, clean close |
//! | [`writer::seal`] | under `fsync=never`/`interval`: the sealed segment's sync in the background, its checkpoint once it completed |
//! | [`recovery`] | opening and crash recovery, step by step; leftovers, continuity |
//! | [`recovery::sealed`] | sealed segments: the bounded check, index rebuilds |
//! | [`recovery::active`] | the active segment: fence cut, tail scan and cut |
//! | [`recovery::producer_state`] | the producer snapshot, and the walk when it is lost |
//! | [`reader`] | reads by offset and by time |
//! | [`retention`] | which segments retention deletes |
//! | [`checkpoint`] | the recovery checkpoint file |
//! | [`producers`] | idempotent producer state: sequence checks, snapshots |
//! | [`committer`] | the writer of a log: group commit behind an async API, one turn at a time on the pool |
//! | [`pool`] | the writer pool: a fixed set of threads and one timer thread serving every log with work |
//! | [`sealer`] | the sealer: a fixed set of threads running the background seal jobs of every log |
//! | [`stats`] | what a log counts for `/metrics`: appends, fsync latency, records per commit |

pub mod checkpoint;
pub mod clock;
pub mod committer;
pub mod config;
pub mod error;
pub mod index;
pub mod open_segments;
pub mod pool;
pub mod producers;
pub mod reader;
pub mod recovery;
pub mod retention;
pub(crate) mod sealer;
pub mod segment;
pub mod stats;
pub mod writer;

#[cfg(any(test, feature = "test-util"))]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock, TokioClock};
pub use committer::{PartitionLog, Submitted};
pub use config::{FsyncPolicy, LogConfig};
pub use error::{LogError, LogResult};
pub use open_segments::{DEFAULT_MAX_OPEN_SEGMENTS, OpenSegments};
pub use reader::{LogReader, ReadResult};
pub use recovery::RecoveryReport;
pub use stats::LogStats;
pub use writer::{AppendInfo, Log};

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod open_segments_tests;
#[cfg(test)]
mod powercut_tests;
#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod seal_tests;
#[cfg(test)]
mod startup_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod zeros_tests;
