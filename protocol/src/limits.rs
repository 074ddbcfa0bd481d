//! Size limits of the protocol and the topic naming rules.
//!
//! Every limit is checked before the codec allocates or reserves memory for
//! the thing it limits.

/// Default maximum frame size: bytes after the length field (16 MiB).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16 * 1024 * 1024;
/// Default maximum size of one record batch in a produce request (8 MiB).
pub const DEFAULT_MAX_BATCH_SIZE: u32 = 8 * 1024 * 1024;
/// Longest topic name, in bytes.
pub const MAX_TOPIC_NAME_LEN: usize = 200;
/// Longest client or server software name in a handshake, in bytes.
pub const MAX_SOFTWARE_NAME_LEN: usize = 255;
/// Longest error message in an error response, in bytes. Longer messages
/// are truncated by the encoder (at a character boundary), never refused.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;

/// The limits one codec enforces. Both sides should agree; the server
/// announces its own in the handshake response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted or produced, counted after the length field.
    pub max_frame_size: u32,
    /// Largest record batch accepted in a produce request.
    pub max_batch_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
        }
    }
}

/// Why a topic name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_NAME_LEN`] bytes.
    #[error("topic name is {len} bytes long; the limit is {MAX_TOPIC_NAME_LEN}")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The name is `.` or `..`.
    #[error("topic name may not be \".\" or \"..\"")]
    Dots,
    /// The name contains a character outside `[A-Za-z0-9._-]`.
    #[error(
        "topic name contains {ch:?} at byte {at}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
    )]
    BadChar {
        /// The first offending character.
        ch: char,
        /// Its byte position in the name.
        at: usize,
    },
}

/// Checks a topic name: 1 to 200 characters from `[A-Za-z0-9._-]`, and
/// neither `.` nor `..` (names become directory names on the broker).
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicNameError::TooLong { len: name.len() });
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots);
    }
    match name
        .char_indices()
        .find(|&(_, ch)| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')))
    {
        Some((at, ch)) => Err(TopicNameError::BadChar { ch, at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for name in [
            "a",
            "orders",
            "Orders.v2",
            "a-b_c.d",
            "...",
            ".hidden",
            &"x".repeat(200),
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names() {
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert_eq!(validate_topic_name("."), Err(TopicNameError::Dots));
        assert_eq!(validate_topic_name(".."), Err(TopicNameError::Dots));
        assert_eq!(
            validate_topic_name(&"x".repeat(201)),
            Err(TopicNameError::TooLong { len: 201 })
        );
        assert_eq!(
            validate_topic_name("a/b"),
            Err(TopicNameError::BadChar { ch: '/', at: 1 })
        );
        assert_eq!(
            validate_topic_name("with space"),
            Err(TopicNameError::BadChar { ch: ' ', at: 4 })
        );
        assert_eq!(
            validate_topic_name("é"),
            Err(TopicNameError::BadChar { ch: 'é', at: 0 })
        );
        assert_eq!(
            validate_topic_name("nul\0"),
            Err(TopicNameError::BadChar { ch: '\0', at: 3 })
        );
        let message = validate_topic_name("a/b").expect_err("invalid").to_string();
        assert!(
            message.contains("'/'") && message.contains("byte 1"),
            "{message}"
        );
    }
}
