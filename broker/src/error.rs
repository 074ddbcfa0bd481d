//! [`BrokerError`]: why a domain operation of the broker failed, as a kind
//! and one sentence, with no wire code.
//!
//! Every operation of the service layer ([`crate::service`]) and the
//! domain modules beneath it (topics, groups) fails with a `BrokerError`.
//! Each adapter (binary protocol, HTTP, later others) maps the
//! [`ErrorKind`] to its own vocabulary in one place (the binary protocol:
//! `From<ErrorKind> for ErrorCode` in `server/errors.rs`), so the domain
//! never speaks a wire format and every way in reports the same failure
//! the same way.
//!
//! The message says what was wrong and, where there is one, what to do;
//! adapters pass it through unchanged.

use crate::log::LogError;
use crate::log::producers::SequenceError;
use pigeon_protocol::batch::BatchError;

/// What kind of failure, for adapters to map and callers to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bug or an unclassified failure.
    Internal,
    /// The request itself is malformed or contradictory.
    InvalidRequest,
    /// A topic name breaks the naming rules.
    InvalidTopicName,
    /// A setting is out of range (partition count, group settings).
    InvalidConfig,
    /// A topic of that name exists already.
    TopicExists,
    /// No topic of that name.
    UnknownTopic,
    /// The topic has no such partition.
    UnknownPartition,
    /// A group of that name exists already on the topic.
    GroupExists,
    /// No group of that name on the topic.
    UnknownGroup,
    /// The offset is outside the partition's log.
    OffsetOutOfRange,
    /// A record batch is larger than allowed.
    BatchTooLarge,
    /// A record batch failed its CRC or structural checks.
    CorruptBatch,
    /// A record batch carries per-record timestamps (the broker assigns them).
    InvalidTimestamp,
    /// Stored data failed its checks and is not served.
    CorruptStoredData,
    /// An I/O error of the broker's storage.
    Storage,
    /// The disk is full.
    DiskFull,
    /// The partition refuses writes since an fsync (or a segment seal) failed.
    ReadOnly,
    /// The operation did not finish within its timeout.
    TimedOut,
    /// The broker (or the group) is shutting down.
    ShuttingDown,
    /// A newer session of this producer exists.
    ProducerFenced,
    /// A batch's sequence number is not the next one expected.
    OutOfOrderSequence,
    /// The producer id is not registered (or expired).
    UnknownProducer,
    /// The caller no longer holds the lease it settles.
    LeaseLost,
    /// The caller has not authenticated and the broker has users.
    AuthenticationRequired,
    /// Authentication failed (unknown user or wrong password, a refused
    /// mechanism, too many failures from the caller's address).
    AuthenticationFailed,
    /// The caller's rules do not allow the operation on the resource.
    NotAuthorized,
    /// The answer would not fit in one frame (`max_frame_bytes`).
    FrameTooLarge,
}

/// A failed broker operation: its kind and a sentence saying what went
/// wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BrokerError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong and what to do.
    pub message: String,
}

impl BrokerError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> BrokerError {
        BrokerError {
            kind,
            message: message.into(),
        }
    }

    /// A storage failure while doing `what`.
    pub fn storage(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BrokerError {
        BrokerError::new(ErrorKind::Storage, format!("{what}: {e}"))
    }

    /// The topic `name` does not exist.
    pub fn unknown_topic(name: &str) -> BrokerError {
        BrokerError::new(
            ErrorKind::UnknownTopic,
            format!("topic {name} does not exist; create it with `pigeon topic create {name}`"),
        )
    }

    /// The group `group` of `topic` does not exist.
    pub fn unknown_group(topic: &str, group: &str) -> BrokerError {
        BrokerError::new(
            ErrorKind::UnknownGroup,
            format!(
                "group {group} of topic {topic} does not exist; create it with `pigeon group create {group} --topic {topic}`"
            ),
        )
    }

    /// `topic` (with `partitions` partitions) has no partition `partition`.
    pub fn unknown_partition(topic: &str, partitions: u32, partition: u32) -> BrokerError {
        BrokerError::new(
            ErrorKind::UnknownPartition,
            format!(
                "topic {topic} has partitions 0 to {}; partition {partition} does not exist",
                partitions.saturating_sub(1)
            ),
        )
    }

    /// A group's engine stopped (the group is being deleted or the broker
    /// stops) before it answered.
    pub fn group_stopped() -> BrokerError {
        BrokerError::new(
            ErrorKind::ShuttingDown,
            "the consumer group is shutting down; retry",
        )
    }
}

impl From<&BatchError> for ErrorKind {
    fn from(e: &BatchError) -> ErrorKind {
        match e {
            BatchError::BadLength { reason, .. } if reason.contains("limit") => {
                ErrorKind::BatchTooLarge
            }
            _ => ErrorKind::CorruptBatch,
        }
    }
}

impl From<&LogError> for ErrorKind {
    fn from(e: &LogError) -> ErrorKind {
        match e {
            LogError::OffsetOutOfRange { .. } => ErrorKind::OffsetOutOfRange,
            LogError::InvalidBatch(b) => ErrorKind::from(b),
            LogError::TimestampDelta(_) => ErrorKind::InvalidTimestamp,
            LogError::Corrupt { .. } | LogError::Overlap { .. } => ErrorKind::CorruptStoredData,
            LogError::DiskFull { .. } => ErrorKind::DiskFull,
            LogError::ReadOnly { .. } => ErrorKind::ReadOnly,
            LogError::Closed => ErrorKind::ShuttingDown,
            LogError::Sequence(SequenceError::Fenced { .. }) => ErrorKind::ProducerFenced,
            LogError::Sequence(SequenceError::OutOfOrder { .. }) => ErrorKind::OutOfOrderSequence,
            LogError::Sequence(SequenceError::Unknown { .. }) => ErrorKind::UnknownProducer,
            _ => ErrorKind::Storage,
        }
    }
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> BrokerError {
        BrokerError::new(ErrorKind::from(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_segments_are_damaged_stored_data_not_a_storage_failure() {
        let overlap = LogError::Overlap {
            earlier: "00000000000000000000.log".into(),
            later: "00000000000000000010.log".into(),
            from: 10,
            to: 12,
        };
        assert_eq!(ErrorKind::from(&overlap), ErrorKind::CorruptStoredData);
    }
}
