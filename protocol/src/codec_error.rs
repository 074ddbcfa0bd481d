//! [`CodecError`]: why a frame or a body could not be encoded or decoded.
//!
//! Every error carries the byte offset, counted from the first byte of the
//! frame (the first byte of its length field), where the codec stopped, so a
//! log line such as `client_name length 300 exceeds limit 255 at byte 14`
//! points at the exact field. Codec errors are distinct from
//! [`ErrorCode`](super::ErrorCode)s, which travel on the wire; a codec error
//! maps to the code a server answers with through [`CodecError::error_code`].

use super::ErrorCode;
use super::limits::TopicNameError;

/// A frame or body that could not be encoded or decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct CodecError {
    /// Byte offset within the frame (0 = first byte of the length field).
    pub offset: usize,
    /// What was wrong.
    pub kind: CodecErrorKind,
}

/// What was wrong with a frame or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecErrorKind {
    /// The frame's declared length is above the codec's maximum frame size.
    /// Fatal for the connection: the stream cannot be resynchronised.
    #[error("frame length {declared} exceeds limit {max}")]
    FrameTooLarge {
        /// Bytes after the length field, as declared (or as would be written).
        declared: u64,
        /// The codec's `max_frame_size`.
        max: u32,
    },
    /// The frame's declared length is too small to hold the header.
    /// Fatal for the connection.
    #[error("frame length {declared} is shorter than the {min}-byte header")]
    FrameTooShort {
        /// Bytes after the length field, as declared.
        declared: u32,
        /// Header bytes after the length field.
        min: u32,
    },
    /// The body ended before a field did.
    #[error("{field} needs {needed} bytes but only {available} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        available: usize,
    },
    /// A length prefix is above the limit for its field.
    #[error("{field} length {len} exceeds limit {max}")]
    LengthTooLarge {
        /// The field being read or written.
        field: &'static str,
        /// Declared (or actual) length in bytes.
        len: u64,
        /// The limit for this field.
        max: u64,
    },
    /// An array's declared element count cannot fit in the bytes that remain.
    #[error(
        "{field} count {count} cannot fit in the {remaining} bytes left (each element takes at least {min_element_size})"
    )]
    TooManyElements {
        /// The array being read.
        field: &'static str,
        /// Declared element count.
        count: u64,
        /// Bytes left in the body.
        remaining: usize,
        /// Smallest encoding of one element.
        min_element_size: usize,
    },
    /// An array that must have at least one element is empty.
    #[error("{field} must not be empty")]
    EmptyArray {
        /// The array.
        field: &'static str,
    },
    /// A string is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A topic name breaks the naming rules.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicNameError),
    /// A consumer group name breaks the naming rules, which are the topic
    /// naming rules.
    #[error("invalid group name (group names follow the topic naming rules): {0}")]
    InvalidGroupName(TopicNameError),
    /// A field holds a value outside its domain (e.g. an option tag of 7).
    #[error("{field} has invalid value {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A record batch's length prefix is above the maximum batch size.
    #[error("record batch length {len} exceeds max batch size {max}")]
    BatchTooLarge {
        /// Declared batch length.
        len: u64,
        /// The codec's `max_batch_size`.
        max: u32,
    },
    /// The frame names an API key this build does not know.
    #[error("unknown API key {0}")]
    UnknownApi(u16),
    /// The frame's API version is outside the range this build supports.
    #[error("API key {api_key} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion {
        /// The API key.
        api_key: u16,
        /// The version asked for.
        version: u16,
        /// Lowest supported version.
        min: u16,
        /// Highest supported version.
        max: u16,
    },
    /// The body was fully decoded but bytes were left over.
    #[error("{0} unexpected trailing bytes after the body")]
    TrailingBytes(usize),
    /// The frame is a request where a response was expected or vice versa,
    /// or a response's API key does not match its body.
    #[error("API key mismatch: header says {header}, body is {body}")]
    ApiKeyMismatch {
        /// API key in the header.
        header: u16,
        /// API key of the body.
        body: u16,
    },
    /// The underlying transport failed (only produced through
    /// `From<std::io::Error>`, which `tokio_util::codec` requires).
    #[error("I/O error ({kind:?}): {message}")]
    Io {
        /// The I/O error kind.
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
}

impl CodecError {
    /// An error of `kind` at frame offset `offset`.
    pub fn new(offset: usize, kind: CodecErrorKind) -> Self {
        CodecError { offset, kind }
    }

    /// The error code a server answers with when a request fails to decode
    /// with this error (for the fatal framing errors, the code it sends
    /// before closing the connection).
    pub fn error_code(&self) -> ErrorCode {
        match self.kind {
            CodecErrorKind::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            CodecErrorKind::InvalidTopicName(_) => ErrorCode::InvalidTopicName,
            CodecErrorKind::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            CodecErrorKind::UnknownApi(_) => ErrorCode::UnknownApi,
            CodecErrorKind::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            CodecErrorKind::Io { .. } => ErrorCode::Internal,
            CodecErrorKind::FrameTooShort { .. }
            | CodecErrorKind::Truncated { .. }
            | CodecErrorKind::LengthTooLarge { .. }
            | CodecErrorKind::TooManyElements { .. }
            | CodecErrorKind::EmptyArray { .. }
            | CodecErrorKind::InvalidUtf8 { .. }
            | CodecErrorKind::InvalidGroupName(_)
            | CodecErrorKind::InvalidValue { .. }
            | CodecErrorKind::TrailingBytes(_)
            | CodecErrorKind::ApiKeyMismatch { .. } => ErrorCode::InvalidRequest,
        }
    }

    /// Whether the connection must be closed after this error: the frame
    /// boundaries can no longer be trusted (or the transport failed).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.kind,
            CodecErrorKind::FrameTooLarge { .. }
                | CodecErrorKind::FrameTooShort { .. }
                | CodecErrorKind::Io { .. }
        )
    }
}

impl From<std::io::Error> for CodecError {
    fn from(err: std::io::Error) -> Self {
        CodecError::new(
            0,
            CodecErrorKind::Io {
                kind: err.kind(),
                message: err.to_string(),
            },
        )
    }
}
