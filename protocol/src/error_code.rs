//! [`ErrorCode`]: the error numbers that travel on the wire.
//!
//! Numbers are fixed forever: a code is never renumbered and a retired code
//! is never reused. New codes take the next free number. `0xFFFF` is never
//! assigned (it is the tag of [`ErrorCode::Unrecognized`]).

/// An error code as carried in a response header or a per-partition result.
///
/// Codes this build does not know (sent by a newer peer) decode to
/// [`ErrorCode::Unrecognized`] carrying the raw number, never to a panic.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// An unexpected server-side error (a bug or an unclassified failure).
    Internal = 1,
    /// A record batch failed its CRC or structural validation.
    CorruptMessage = 2,
    /// The request body is malformed.
    InvalidRequest = 3,
    /// The API version is not supported by the server.
    UnsupportedVersion = 4,
    /// The API key is not known to the server.
    UnknownApi = 5,
    /// The frame is larger than the server's maximum frame size.
    FrameTooLarge = 6,
    /// The connection has too many requests in flight.
    TooManyRequestsInFlight = 7,
    /// The topic name breaks the naming rules.
    InvalidTopicName = 8,
    /// A topic with this name already exists.
    TopicAlreadyExists = 9,
    /// No topic with this name exists.
    UnknownTopic = 10,
    /// The topic has no partition with this id.
    UnknownPartition = 11,
    /// The offset is outside the partition's log.
    OffsetOutOfRange = 12,
    /// A record batch is larger than the maximum batch size.
    BatchTooLarge = 13,
    /// The storage layer failed an operation (I/O error).
    StorageError = 14,
    /// The partition refuses writes (after a failed fsync) until repaired.
    PartitionReadOnly = 15,
    /// The request did not complete within its timeout.
    RequestTimedOut = 16,
    /// The broker is shutting down.
    ShuttingDown = 17,
    /// A newer producer epoch exists for this producer id.
    ProducerFenced = 18,
    /// A batch's sequence number is not the next one expected.
    OutOfOrderSequence = 19,
    /// The producer id is not registered (or has expired).
    UnknownProducer = 20,
    /// No consumer group with this name exists.
    UnknownGroup = 21,
    /// A consumer group with this name already exists.
    GroupAlreadyExists = 22,
    /// The consumer's lease on a message or partition has expired.
    LeaseLost = 23,
    /// A configuration value is invalid (e.g. zero partitions).
    InvalidConfig = 24,
    /// A stored batch failed its CRC on read.
    CorruptStoredData = 25,
    /// The disk is full.
    DiskFull = 26,
    /// A timestamp is invalid (e.g. negative where a time was expected).
    InvalidTimestamp = 27,
    /// The request id is already in flight on this connection.
    DuplicateRequestId = 28,
    /// The broker already serves its maximum number of connections; this
    /// one is closed right after the error.
    TooManyConnections = 29,
    /// A code this build does not know, with its raw number.
    Unrecognized(u16) = 0xFFFF,
}

/// Every assigned code, in number order (without `Unrecognized`).
pub const ALL_ERROR_CODES: [ErrorCode; 30] = [
    ErrorCode::None,
    ErrorCode::Internal,
    ErrorCode::CorruptMessage,
    ErrorCode::InvalidRequest,
    ErrorCode::UnsupportedVersion,
    ErrorCode::UnknownApi,
    ErrorCode::FrameTooLarge,
    ErrorCode::TooManyRequestsInFlight,
    ErrorCode::InvalidTopicName,
    ErrorCode::TopicAlreadyExists,
    ErrorCode::UnknownTopic,
    ErrorCode::UnknownPartition,
    ErrorCode::OffsetOutOfRange,
    ErrorCode::BatchTooLarge,
    ErrorCode::StorageError,
    ErrorCode::PartitionReadOnly,
    ErrorCode::RequestTimedOut,
    ErrorCode::ShuttingDown,
    ErrorCode::ProducerFenced,
    ErrorCode::OutOfOrderSequence,
    ErrorCode::UnknownProducer,
    ErrorCode::UnknownGroup,
    ErrorCode::GroupAlreadyExists,
    ErrorCode::LeaseLost,
    ErrorCode::InvalidConfig,
    ErrorCode::CorruptStoredData,
    ErrorCode::DiskFull,
    ErrorCode::InvalidTimestamp,
    ErrorCode::DuplicateRequestId,
    ErrorCode::TooManyConnections,
];

impl ErrorCode {
    /// The code for `n`; unknown numbers give [`ErrorCode::Unrecognized`].
    pub fn from_u16(n: u16) -> ErrorCode {
        ALL_ERROR_CODES
            .get(usize::from(n))
            .copied()
            .unwrap_or(ErrorCode::Unrecognized(n))
    }

    /// The number on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::None => 0,
            ErrorCode::Internal => 1,
            ErrorCode::CorruptMessage => 2,
            ErrorCode::InvalidRequest => 3,
            ErrorCode::UnsupportedVersion => 4,
            ErrorCode::UnknownApi => 5,
            ErrorCode::FrameTooLarge => 6,
            ErrorCode::TooManyRequestsInFlight => 7,
            ErrorCode::InvalidTopicName => 8,
            ErrorCode::TopicAlreadyExists => 9,
            ErrorCode::UnknownTopic => 10,
            ErrorCode::UnknownPartition => 11,
            ErrorCode::OffsetOutOfRange => 12,
            ErrorCode::BatchTooLarge => 13,
            ErrorCode::StorageError => 14,
            ErrorCode::PartitionReadOnly => 15,
            ErrorCode::RequestTimedOut => 16,
            ErrorCode::ShuttingDown => 17,
            ErrorCode::ProducerFenced => 18,
            ErrorCode::OutOfOrderSequence => 19,
            ErrorCode::UnknownProducer => 20,
            ErrorCode::UnknownGroup => 21,
            ErrorCode::GroupAlreadyExists => 22,
            ErrorCode::LeaseLost => 23,
            ErrorCode::InvalidConfig => 24,
            ErrorCode::CorruptStoredData => 25,
            ErrorCode::DiskFull => 26,
            ErrorCode::InvalidTimestamp => 27,
            ErrorCode::DuplicateRequestId => 28,
            ErrorCode::TooManyConnections => 29,
            ErrorCode::Unrecognized(n) => n,
        }
    }

    /// Whether this is [`ErrorCode::None`].
    pub fn is_ok(self) -> bool {
        self == ErrorCode::None
    }

    /// Whether the same request may succeed if simply sent again later
    /// (after a backoff): transient conditions, not mistakes in the request.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::TooManyRequestsInFlight
                | ErrorCode::StorageError
                | ErrorCode::RequestTimedOut
                | ErrorCode::ShuttingDown
                | ErrorCode::DiskFull
                | ErrorCode::TooManyConnections
        )
    }

    /// The code's name, as in the protocol documentation.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "None",
            ErrorCode::Internal => "Internal",
            ErrorCode::CorruptMessage => "CorruptMessage",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::UnsupportedVersion => "UnsupportedVersion",
            ErrorCode::UnknownApi => "UnknownApi",
            ErrorCode::FrameTooLarge => "FrameTooLarge",
            ErrorCode::TooManyRequestsInFlight => "TooManyRequestsInFlight",
            ErrorCode::InvalidTopicName => "InvalidTopicName",
            ErrorCode::TopicAlreadyExists => "TopicAlreadyExists",
            ErrorCode::UnknownTopic => "UnknownTopic",
            ErrorCode::UnknownPartition => "UnknownPartition",
            ErrorCode::OffsetOutOfRange => "OffsetOutOfRange",
            ErrorCode::BatchTooLarge => "BatchTooLarge",
            ErrorCode::StorageError => "StorageError",
            ErrorCode::PartitionReadOnly => "PartitionReadOnly",
            ErrorCode::RequestTimedOut => "RequestTimedOut",
            ErrorCode::ShuttingDown => "ShuttingDown",
            ErrorCode::ProducerFenced => "ProducerFenced",
            ErrorCode::OutOfOrderSequence => "OutOfOrderSequence",
            ErrorCode::UnknownProducer => "UnknownProducer",
            ErrorCode::UnknownGroup => "UnknownGroup",
            ErrorCode::GroupAlreadyExists => "GroupAlreadyExists",
            ErrorCode::LeaseLost => "LeaseLost",
            ErrorCode::InvalidConfig => "InvalidConfig",
            ErrorCode::CorruptStoredData => "CorruptStoredData",
            ErrorCode::DiskFull => "DiskFull",
            ErrorCode::InvalidTimestamp => "InvalidTimestamp",
            ErrorCode::DuplicateRequestId => "DuplicateRequestId",
            ErrorCode::TooManyConnections => "TooManyConnections",
            ErrorCode::Unrecognized(_) => "Unrecognized",
        }
    }

    /// A one-line human description.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::None => "success",
            ErrorCode::Internal => "unexpected server error",
            ErrorCode::CorruptMessage => "a record batch failed its CRC or validation",
            ErrorCode::InvalidRequest => "the request body is malformed",
            ErrorCode::UnsupportedVersion => "the API version is not supported by the server",
            ErrorCode::UnknownApi => "the API key is not known to the server",
            ErrorCode::FrameTooLarge => "the frame exceeds the maximum frame size",
            ErrorCode::TooManyRequestsInFlight => "too many requests in flight on this connection",
            ErrorCode::InvalidTopicName => "the topic name is invalid",
            ErrorCode::TopicAlreadyExists => "the topic already exists",
            ErrorCode::UnknownTopic => "the topic does not exist",
            ErrorCode::UnknownPartition => "the partition does not exist",
            ErrorCode::OffsetOutOfRange => "the offset is outside the partition's log",
            ErrorCode::BatchTooLarge => "a record batch exceeds the maximum batch size",
            ErrorCode::StorageError => "the storage layer failed (I/O error)",
            ErrorCode::PartitionReadOnly => "the partition refuses writes after a failed fsync",
            ErrorCode::RequestTimedOut => "the request timed out",
            ErrorCode::ShuttingDown => "the broker is shutting down",
            ErrorCode::ProducerFenced => "a newer epoch of this producer exists",
            ErrorCode::OutOfOrderSequence => "the batch sequence number is out of order",
            ErrorCode::UnknownProducer => "the producer id is not registered",
            ErrorCode::UnknownGroup => "the consumer group does not exist",
            ErrorCode::GroupAlreadyExists => "the consumer group already exists",
            ErrorCode::LeaseLost => "the consumer's lease has expired",
            ErrorCode::InvalidConfig => "a configuration value is invalid",
            ErrorCode::CorruptStoredData => "a stored batch failed its CRC on read",
            ErrorCode::DiskFull => "the disk is full",
            ErrorCode::InvalidTimestamp => "the timestamp is invalid",
            ErrorCode::DuplicateRequestId => "the request id is already in flight",
            ErrorCode::TooManyConnections => "the broker serves its maximum number of connections",
            ErrorCode::Unrecognized(_) => "an error code unknown to this client",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.name(),
            self.as_u16(),
            self.description()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_pinned_and_round_trip() {
        for (n, code) in ALL_ERROR_CODES.iter().enumerate() {
            assert_eq!(usize::from(code.as_u16()), n, "{code:?} is out of place");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), *code);
        }
        assert_eq!(ErrorCode::PartitionReadOnly.as_u16(), 15);
        assert_eq!(ErrorCode::CorruptStoredData.as_u16(), 25);
        assert_eq!(ErrorCode::DuplicateRequestId.as_u16(), 28);
        assert_eq!(ErrorCode::TooManyConnections.as_u16(), 29);
    }

    #[test]
    fn unknown_numbers_are_preserved() {
        for n in [30u16, 100, 0xFFFE, 0xFFFF] {
            let code = ErrorCode::from_u16(n);
            assert_eq!(code, ErrorCode::Unrecognized(n));
            assert_eq!(code.as_u16(), n);
            assert!(!code.is_retriable());
        }
    }

    #[test]
    fn retriable_set() {
        let retriable: Vec<u16> = ALL_ERROR_CODES
            .iter()
            .filter(|c| c.is_retriable())
            .map(|c| c.as_u16())
            .collect();
        assert_eq!(retriable, vec![7, 14, 16, 17, 26, 29]);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = ALL_ERROR_CODES.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_ERROR_CODES.len());
    }
}
