//! [`ClientError`]: everything that can go wrong between a caller of the
//! client library and the broker.
//!
//! This module owns the error taxonomy of the client and the one question
//! every retry loop asks of it: [`ClientError::is_retriable`]. Invariants:
//!
//! - The type is `Clone`, so one failure (a lost connection, a rejected
//!   batch) can be handed to every caller waiting on it.
//! - Messages name what the operator needs: the broker's address for
//!   connection problems, the broker's own code and message for broker
//!   errors, the position of damaged data for corruption.
//! - `is_retriable` is `true` only when sending the same request again later
//!   may succeed without anything else changing.

use std::time::Duration;

use crate::batch::BatchError;
use crate::protocol::{CodecError, ErrorCode};

/// An error of the Pigeon client.
///
/// ```
/// use pigeon_client::client::ClientError;
/// use pigeon_client::protocol::ErrorCode;
///
/// let err = ClientError::Broker { code: ErrorCode::ShuttingDown, message: "bye".into() };
/// assert!(err.is_retriable());
/// assert_eq!(err.code(), Some(ErrorCode::ShuttingDown));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker answered with an error code (top level or per partition).
    #[error("broker error {code}: {message}")]
    Broker {
        /// The code the broker sent.
        code: ErrorCode,
        /// The broker's message, or the client's description of the context.
        message: String,
    },
    /// A frame could not be encoded, or a response could not be decoded.
    #[error("protocol error: {0}")]
    Codec(#[from] CodecError),
    /// The connection to the broker could not be made, or was lost.
    #[error("connection to {addr} failed: {message}")]
    Connection {
        /// The broker address as given to the client.
        addr: String,
        /// The kind of I/O failure.
        kind: std::io::ErrorKind,
        /// What happened.
        message: String,
    },
    /// TLS could not be set up (an unreadable CA or certificate file) or
    /// its handshake failed (a certificate not trusted, expired or for
    /// another name; a broker not speaking TLS; a client certificate
    /// refused). Not retriable: a setting must change.
    #[error("TLS to {addr} failed: {message}")]
    Tls {
        /// The broker address (empty when the settings themselves failed).
        addr: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// A request got no answer in time.
    #[error("request timed out after {} ms", .after.as_millis())]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The broker has been unreachable for a while; requests fail at once
    /// (except an occasional probe) until it answers again.
    #[error(
        "broker at {addr} unreachable for {} s; failing fast until it answers again",
        .unreachable_for.as_secs()
    )]
    CircuitOpen {
        /// The broker address.
        addr: String,
        /// How long connection attempts have been failing.
        unreachable_for: Duration,
    },
    /// A record could not be delivered within the producer's delivery
    /// timeout; `last_error` is the failure of the last attempt.
    #[error("delivery timed out after {} ms; last error: {last_error}", .after.as_millis())]
    DeliveryTimeout {
        /// The delivery timeout.
        after: Duration,
        /// Why the last attempt failed.
        last_error: Box<ClientError>,
    },
    /// A fetched record batch failed its CRC or could not be decoded.
    #[error("corrupt record batch in {topic}/{partition} at offset {offset}: {source}")]
    CorruptBatch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Base offset of the damaged batch (as far as it can be read).
        offset: u64,
        /// What is wrong with it.
        source: BatchError,
    },
    /// A single record is larger than a batch may be.
    #[error("record of {size} bytes exceeds the maximum batch size of {max} bytes")]
    RecordTooLarge {
        /// Encoded size of a batch holding only this record.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The broker answered with a response of the wrong kind (a broker bug).
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
    /// The client or producer was closed.
    #[error("the client is closed")]
    Closed,
    /// A batch was in flight when an earlier batch of its partition failed
    /// with an unknown outcome: it may or may not be stored (once), and
    /// it is not sent again under the producer's new session, where it
    /// could be stored twice.
    #[error("the outcome of this batch is unknown: {0}")]
    OutcomeUnknown(String),
}

impl ClientError {
    /// Whether the same request may succeed if simply sent again later:
    /// lost connections, timeouts, an open circuit and the broker's
    /// retriable codes ([`ErrorCode::is_retriable`]).
    ///
    /// ```
    /// use pigeon_client::client::ClientError;
    /// assert!(!ClientError::Closed.is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Codec(err) => err.is_fatal(),
            ClientError::Connection { .. }
            | ClientError::Timeout { .. }
            | ClientError::CircuitOpen { .. } => true,
            ClientError::DeliveryTimeout { .. }
            | ClientError::CorruptBatch { .. }
            | ClientError::RecordTooLarge { .. }
            | ClientError::UnexpectedResponse(_)
            | ClientError::Tls { .. }
            | ClientError::OutcomeUnknown(_)
            | ClientError::Closed => false,
        }
    }

    /// The broker's error code, if this is a broker error.
    ///
    /// ```
    /// use pigeon_client::client::ClientError;
    /// assert_eq!(ClientError::Closed.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A broker error with `code` and the code's description plus `context`.
    pub(crate) fn broker(code: ErrorCode, context: impl std::fmt::Display) -> Self {
        ClientError::Broker {
            code,
            message: format!("{context}: {}", code.description()),
        }
    }

    /// A broker error with `code`, `context`, and the broker's own message
    /// when it sent one (else the code's description).
    pub(crate) fn broker_said(
        code: ErrorCode,
        context: impl std::fmt::Display,
        said: &str,
    ) -> Self {
        if said.is_empty() {
            return Self::broker(code, context);
        }
        ClientError::Broker {
            code,
            message: format!("{context}: {said}"),
        }
    }

    /// A connection error for `addr` from an I/O error.
    pub(crate) fn io(addr: &str, err: &std::io::Error) -> Self {
        ClientError::Connection {
            addr: addr.to_string(),
            kind: err.kind(),
            message: err.to_string(),
        }
    }

    /// A connection error for `addr` with a message.
    pub(crate) fn connection(addr: &str, message: impl Into<String>) -> Self {
        ClientError::Connection {
            addr: addr.to_string(),
            kind: std::io::ErrorKind::ConnectionAborted,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_classification() {
        let conn = ClientError::connection("127.0.0.1:1", "reset");
        assert!(conn.is_retriable());
        assert!(conn.to_string().contains("127.0.0.1:1"));
        let open = ClientError::CircuitOpen {
            addr: "h:1".into(),
            unreachable_for: Duration::from_secs(12),
        };
        assert_eq!(
            open.to_string(),
            "broker at h:1 unreachable for 12 s; failing fast until it answers again"
        );
        assert!(!ClientError::broker(ErrorCode::UnknownTopic, "t").is_retriable());
        assert!(ClientError::broker(ErrorCode::RequestTimedOut, "t").is_retriable());
        let timeout = ClientError::DeliveryTimeout {
            after: Duration::from_secs(1),
            last_error: Box::new(conn),
        };
        assert!(!timeout.is_retriable());
    }
}
