//! The one mapping from the service layer's [`ErrorKind`] to the wire's
//! [`ErrorCode`], and the error response frames built from a
//! [`BrokerError`].

use pigeon_protocol::{ErrorCode, RequestHeader, ResponseFrame};

use crate::error::{BrokerError, ErrorKind};
use crate::metrics;

impl From<ErrorKind> for ErrorCode {
    fn from(kind: ErrorKind) -> ErrorCode {
        match kind {
            ErrorKind::Internal => ErrorCode::Internal,
            ErrorKind::InvalidRequest => ErrorCode::InvalidRequest,
            ErrorKind::InvalidTopicName => ErrorCode::InvalidTopicName,
            ErrorKind::InvalidConfig => ErrorCode::InvalidConfig,
            ErrorKind::TopicExists => ErrorCode::TopicAlreadyExists,
            ErrorKind::UnknownTopic => ErrorCode::UnknownTopic,
            ErrorKind::UnknownPartition => ErrorCode::UnknownPartition,
            ErrorKind::GroupExists => ErrorCode::GroupAlreadyExists,
            ErrorKind::UnknownGroup => ErrorCode::UnknownGroup,
            ErrorKind::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
            ErrorKind::BatchTooLarge => ErrorCode::BatchTooLarge,
            ErrorKind::CorruptBatch => ErrorCode::CorruptMessage,
            ErrorKind::InvalidTimestamp => ErrorCode::InvalidTimestamp,
            ErrorKind::CorruptStoredData => ErrorCode::CorruptStoredData,
            ErrorKind::Storage => ErrorCode::StorageError,
            ErrorKind::DiskFull => ErrorCode::DiskFull,
            ErrorKind::ReadOnly => ErrorCode::PartitionReadOnly,
            ErrorKind::TimedOut => ErrorCode::RequestTimedOut,
            ErrorKind::ShuttingDown => ErrorCode::ShuttingDown,
            ErrorKind::ProducerFenced => ErrorCode::ProducerFenced,
            ErrorKind::OutOfOrderSequence => ErrorCode::OutOfOrderSequence,
            ErrorKind::UnknownProducer => ErrorCode::UnknownProducer,
            ErrorKind::LeaseLost => ErrorCode::LeaseLost,
            ErrorKind::AuthenticationRequired => ErrorCode::AuthenticationRequired,
            ErrorKind::AuthenticationFailed => ErrorCode::AuthenticationFailed,
            ErrorKind::NotAuthorized => ErrorCode::NotAuthorized,
            ErrorKind::FrameTooLarge => ErrorCode::FrameTooLarge,
        }
    }
}

/// The wire code and message of an error (counted in the error metric),
/// for an entry of a per-partition or per-item result list.
pub fn entry_error(error: Option<BrokerError>) -> (ErrorCode, String) {
    match error {
        None => (ErrorCode::None, String::new()),
        Some(e) => {
            let code = ErrorCode::from(e.kind);
            metrics::error(code);
            (code, e.message)
        }
    }
}

/// The frame answering `header` with `error` (counted in the error metric).
pub fn error_frame(header: &RequestHeader, error: BrokerError) -> ResponseFrame {
    let code = ErrorCode::from(error.kind);
    metrics::error(code);
    ResponseFrame::error(header, code, error.message)
}
