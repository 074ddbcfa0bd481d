//! [`ErrorCode`]: the error numbers that travel on the wire.
//!
//! Numbers are fixed forever: a code is never renumbered and a retired code
//! is never reused. New codes take the next free number. `0xFFFF` is never
//! assigned (it is the tag of [`ErrorCode::Unrecognized`]).
//!
//! Each code is written once, as one entry of the `error_codes!` table
//! below (its doc, name, number, whether it is retriable, and its one-line
//! description); the macro generates the enum, [`ALL_ERROR_CODES`] and
//! every per-code `match`. To add a code, add one entry.

/// Generates [`ErrorCode`], [`ALL_ERROR_CODES`] and the per-code methods
/// from one entry per code:
///
/// ```text
/// /// Variant doc.
/// Name = number, retriable: bool, "description";
/// ```
///
/// [`ErrorCode::name`] is the variant name, as in `docs/protocol.md`.
/// Entries are listed in number order; the compiler refuses a number or a
/// name given twice (they are the enum's discriminants and variants).
macro_rules! error_codes {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $n:literal, retriable: $retriable:literal, $description:literal;
    )*) => {
        /// An error code as carried in a response header or a per-partition result.
        ///
        /// Codes this build does not know (sent by a newer peer) decode to
        /// [`ErrorCode::Unrecognized`] carrying the raw number, never to a panic.
        #[repr(u16)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                $(#[$doc])*
                $variant = $n,
            )*
            /// A code this build does not know, with its raw number.
            Unrecognized(u16) = 0xFFFF,
        }

        /// Every assigned code, in number order (without `Unrecognized`).
        pub const ALL_ERROR_CODES: [ErrorCode; [$($n),*].len()] = [$(ErrorCode::$variant),*];

        impl ErrorCode {
            /// The code for `n`; unknown numbers give [`ErrorCode::Unrecognized`].
            pub fn from_u16(n: u16) -> ErrorCode {
                match n {
                    $($n => ErrorCode::$variant,)*
                    n => ErrorCode::Unrecognized(n),
                }
            }

            /// The number on the wire.
            pub fn as_u16(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $n,)*
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
                match self {
                    $(ErrorCode::$variant => $retriable,)*
                    ErrorCode::Unrecognized(_) => false,
                }
            }

            /// The code's name, as in the protocol documentation.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => stringify!($variant),)*
                    ErrorCode::Unrecognized(_) => "Unrecognized",
                }
            }

            /// A one-line human description.
            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $description,)*
                    ErrorCode::Unrecognized(_) => "an error code unknown to this client",
                }
            }
        }
    };
}

error_codes! {
    /// Success.
    None = 0, retriable: false, "success";
    /// An unexpected server-side error (a bug or an unclassified failure).
    Internal = 1, retriable: false, "unexpected server error";
    /// A record batch failed its CRC or structural validation.
    CorruptMessage = 2, retriable: false, "a record batch failed its CRC or validation";
    /// The request body is malformed.
    InvalidRequest = 3, retriable: false, "the request body is malformed";
    /// The API version is not supported by the server.
    UnsupportedVersion = 4, retriable: false, "the API version is not supported by the server";
    /// The API key is not known to the server.
    UnknownApi = 5, retriable: false, "the API key is not known to the server";
    /// The frame is larger than the server's maximum frame size.
    FrameTooLarge = 6, retriable: false, "the frame exceeds the maximum frame size";
    /// The connection has too many requests in flight.
    TooManyRequestsInFlight = 7, retriable: true,
        "too many requests in flight on this connection";
    /// The topic name breaks the naming rules.
    InvalidTopicName = 8, retriable: false, "the topic name is invalid";
    /// A topic with this name already exists.
    TopicAlreadyExists = 9, retriable: false, "the topic already exists";
    /// No topic with this name exists.
    UnknownTopic = 10, retriable: false, "the topic does not exist";
    /// The topic has no partition with this id.
    UnknownPartition = 11, retriable: false, "the partition does not exist";
    /// The offset is outside the partition's log.
    OffsetOutOfRange = 12, retriable: false, "the offset is outside the partition's log";
    /// A record batch is larger than the maximum batch size.
    BatchTooLarge = 13, retriable: false, "a record batch exceeds the maximum batch size";
    /// The storage layer failed an operation (I/O error).
    StorageError = 14, retriable: true, "the storage layer failed (I/O error)";
    /// The partition refuses writes (after a failed fsync) until repaired.
    PartitionReadOnly = 15, retriable: false,
        "the partition refuses writes after a failed fsync";
    /// The request did not complete within its timeout.
    RequestTimedOut = 16, retriable: true, "the request timed out";
    /// The broker is shutting down.
    ShuttingDown = 17, retriable: true, "the broker is shutting down";
    /// A newer producer epoch exists for this producer id.
    ProducerFenced = 18, retriable: false, "a newer epoch of this producer exists";
    /// A batch's sequence number is not the next one expected.
    OutOfOrderSequence = 19, retriable: false, "the batch sequence number is out of order";
    /// The producer id is not registered (or has expired).
    UnknownProducer = 20, retriable: false, "the producer id is not registered";
    /// No consumer group with this name exists.
    UnknownGroup = 21, retriable: false, "the consumer group does not exist";
    /// A consumer group with this name already exists.
    GroupAlreadyExists = 22, retriable: false, "the consumer group already exists";
    /// The consumer's lease on a message or partition has expired.
    LeaseLost = 23, retriable: false, "the consumer's lease has expired";
    /// A configuration value is invalid (e.g. zero partitions).
    InvalidConfig = 24, retriable: false, "a configuration value is invalid";
    /// A stored batch failed its CRC on read.
    CorruptStoredData = 25, retriable: false, "a stored batch failed its CRC on read";
    /// The disk is full.
    DiskFull = 26, retriable: true, "the disk is full";
    /// A timestamp is invalid (e.g. negative where a time was expected).
    InvalidTimestamp = 27, retriable: false, "the timestamp is invalid";
    /// The request id is already in flight on this connection.
    DuplicateRequestId = 28, retriable: false, "the request id is already in flight";
    /// The broker already serves its maximum number of connections; this
    /// one is closed right after the error.
    TooManyConnections = 29, retriable: true,
        "the broker serves its maximum number of connections";
    /// The listener speaks TLS and the client did not: sent in the clear as
    /// a connection-level error, then the connection is closed.
    TlsRequired = 30, retriable: false, "the broker's listener requires TLS";
    /// The connection has not authenticated, and the broker has users: only
    /// Handshake, SaslHandshake and SaslAuthenticate are served.
    AuthenticationRequired = 31, retriable: false,
        "the connection must authenticate first";
    /// Authentication failed: unknown user or wrong password, a mechanism
    /// not offered, a malformed SASL message, or too many failures from
    /// the client's address.
    AuthenticationFailed = 32, retriable: false, "authentication failed";
    /// The user's rules do not allow this operation on this resource; the
    /// message names the user, the permission and the resource.
    NotAuthorized = 33, retriable: false, "the user is not allowed this operation";
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
        assert_eq!(ErrorCode::TlsRequired.as_u16(), 30);
        assert_eq!(ErrorCode::AuthenticationFailed.as_u16(), 32);
        assert_eq!(ErrorCode::NotAuthorized.as_u16(), 33);
    }

    #[test]
    fn unknown_numbers_are_preserved() {
        for n in [100u16, 0xFFFE, 0xFFFF] {
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
