//! Errors of the partition log. Each says what went wrong, where, and what
//! the caller can do about it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use pigeon_protocol::batch::BatchError;
use thiserror::Error;

/// An error of the partition log. Cloneable, because one failed group
/// commit fails every append in the group.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum LogError {
    /// Asked for an offset the log does not hold.
    #[error("offset {requested} is out of range: earliest is {earliest}, next is {next}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The log start offset (older records were removed by retention).
        earliest: u64,
        /// The offset the next record will get.
        next: u64,
    },
    /// The batch to append is malformed. Not retriable.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The batch sets record timestamps; the broker assigns append times.
    #[error(
        "record batch has a record with timestamp delta {0}; records must have delta 0 because the broker assigns append time (send an event time as a header)"
    )]
    TimestampDelta(u32),
    /// Stored data failed its checks: never served.
    #[error("corrupt data in segment {segment} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the damaged batch.
        position: u64,
        /// What failed.
        reason: String,
    },
    /// Two segments hold the same offsets: the earlier one runs past the
    /// base offset of the later one. Neither copy can be told right, so
    /// neither is served: the partition is not opened.
    #[error(
        "segments {} and {} overlap: both hold offsets {from}..{to}, and overlapping copies are not served; compare them, move the files of the segment whose copy is wrong (.log, .index, .timeindex) out of the directory, and restart",
        earlier.display(),
        later.display()
    )]
    Overlap {
        /// The `.log` file of the earlier segment.
        earlier: PathBuf,
        /// The `.log` file of the later segment.
        later: PathBuf,
        /// The later segment's base offset: the first offset held twice.
        from: u64,
        /// The earlier segment's end: the offset after the last held twice.
        to: u64,
    },
    /// The disk is full. Retriable once space is freed.
    #[error(
        "no space left on device while {context}; free disk space or lower retention, then retry"
    )]
    DiskFull {
        /// What the log was doing.
        context: String,
    },
    /// Any other I/O error.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// An `fsync` failed earlier (or a segment could not be sealed), so the
    /// log can no longer promise that written data is durable; it refuses
    /// writes until restarted.
    #[error(
        "partition refuses writes since {cause}; restart the broker to recover from the last durable state"
    )]
    ReadOnly {
        /// What failed, e.g. `an fsync failed (fdatasync of …: …)`.
        cause: String,
    },
    /// An idempotent producer's batch was refused (fenced, out of order,
    /// unknown producer). Not retriable as is.
    #[error("{0}")]
    Sequence(#[from] super::producers::SequenceError),
    /// The log was closed.
    #[error("the partition log is closed")]
    Closed,
}

impl LogError {
    /// Wraps an I/O error with what was being done; `ENOSPC` becomes
    /// [`LogError::DiskFull`].
    pub fn io(context: impl Into<String>, source: io::Error) -> LogError {
        let context = context.into();
        if source.raw_os_error() == Some(28) || source.kind() == io::ErrorKind::StorageFull {
            LogError::DiskFull { context }
        } else {
            LogError::Io {
                context,
                source: Arc::new(source),
            }
        }
    }

    /// Whether retrying the same request later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, LogError::DiskFull { .. } | LogError::Io { .. })
    }
}

/// `Result` with [`LogError`].
pub type LogResult<T> = Result<T, LogError>;
