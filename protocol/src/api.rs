//! [`ApiKey`]: which operation a frame carries, and the versions of each
//! that this build speaks.
//!
//! Keys are fixed forever and never reused. They are grouped in ranges with
//! room to grow:
//!
//! | keys | group |
//! | --- | --- |
//! | 0–9 | connection (0 Handshake, 1 SaslHandshake, 2 SaslAuthenticate) |
//! | 10–19 | topic administration (10 CreateTopic … 14 AlterTopic) |
//! | 20–29 | producing (20 Produce, 21 RegisterProducer) |
//! | 30–39 | reading (30 Fetch, 31 ListOffsets) |
//! | 40–59 | consumer groups (40 CreateGroup … 50 Redrive, 51 ListGroups) |
//! | 60–69 | broker administration (60 DescribeBroker) |
//!
//! Each key is written once, as one entry of the `api_keys!` table below
//! (its doc, name, number and the versions this build speaks); the macro
//! generates the enum, [`ALL_API_KEYS`], [`ApiKey::from_u16`] and
//! [`ApiKey::supported_versions`]. The Handshake announces the whole table
//! (`supported_api_versions`). A new key also needs its request and response
//! bodies in `body.rs`, whose dispatch over every key the compiler checks.

use super::codec_error::{CodecError, CodecErrorKind};

/// Generates [`ApiKey`], [`ALL_API_KEYS`], [`ApiKey::from_u16`] and
/// [`ApiKey::supported_versions`] from one entry per key:
///
/// ```text
/// /// Variant doc.
/// Name = number, versions: min..=max;
/// ```
///
/// Entries are listed in number order; the compiler refuses a number or a
/// name given twice (they are the enum's discriminants and variants).
macro_rules! api_keys {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $n:literal, versions: $min:literal ..= $max:literal;
    )*) => {
        /// The operation a frame carries.
        #[repr(u16)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ApiKey {
            $(
                $(#[$doc])*
                $variant = $n,
            )*
        }

        /// Every API key, in number order.
        pub const ALL_API_KEYS: [ApiKey; [$($n),*].len()] = [$(ApiKey::$variant),*];

        impl ApiKey {
            /// The key for `n`, if this build knows it.
            pub fn from_u16(n: u16) -> Option<ApiKey> {
                match n {
                    $($n => Some(ApiKey::$variant),)*
                    _ => None,
                }
            }

            /// The number on the wire.
            pub fn as_u16(self) -> u16 {
                self as u16
            }

            /// The versions of this API that this build encodes and decodes.
            pub fn supported_versions(self) -> VersionRange {
                match self {
                    $(ApiKey::$variant => VersionRange { min: $min, max: $max },)*
                }
            }
        }
    };
}

// Raise a key's `max` (and keep decoding the old versions) when its body
// changes.
api_keys! {
    /// Version negotiation and limits; the first request on a connection.
    Handshake = 0, versions: 0..=0;
    /// Choose a SASL mechanism; the broker lists those it offers.
    SaslHandshake = 1, versions: 0..=0;
    /// One step of the SASL exchange (PLAIN over TLS, SCRAM-SHA-256).
    SaslAuthenticate = 2, versions: 0..=0;
    /// Create a topic.
    CreateTopic = 10, versions: 0..=0;
    /// Delete a topic and its data.
    DeleteTopic = 11, versions: 0..=0;
    /// List all topics.
    ListTopics = 12, versions: 0..=0;
    /// Describe one topic's partitions.
    DescribeTopic = 13, versions: 0..=0;
    /// Change a topic's retention.
    AlterTopic = 14, versions: 0..=0;
    // v1 adds `throttle_ms` to the response.
    /// Append record batches.
    Produce = 20, versions: 0..=1;
    /// Register an idempotent producer by name: producer id and epoch.
    RegisterProducer = 21, versions: 0..=0;
    /// Read record batches.
    Fetch = 30, versions: 0..=0;
    /// Look up offsets (earliest, latest, by timestamp).
    ListOffsets = 31, versions: 0..=0;
    /// Create a consumer group on a topic, with its settings.
    CreateGroup = 40, versions: 0..=0;
    /// Describe a group: settings, pause state, per-partition progress.
    DescribeGroup = 41, versions: 0..=0;
    /// Change a group's settings.
    AlterGroup = 42, versions: 0..=0;
    /// Move a group to an offset, a time, the earliest or the latest.
    SeekGroup = 43, versions: 0..=0;
    /// Pause or resume a group's deliveries.
    PauseGroup = 44, versions: 0..=0;
    /// Delete a group and its delivery state.
    DeleteGroup = 45, versions: 0..=0;
    /// A consumer joins a group: consumer id and the group's settings.
    JoinGroup = 46, versions: 0..=0;
    /// A consumer receives deliveries (leased messages).
    Receive = 47, versions: 0..=1;
    // v1 adds the attempt to each item; v2 the Release action.
    /// A consumer settles deliveries: ack, nack, reject, extend or release.
    Settle = 48, versions: 0..=2;
    /// One message's state in a group.
    MessageState = 49, versions: 0..=0;
    // v1 answers counts and offset ranges instead of every message.
    /// Move dead-lettered messages back into the source topic.
    Redrive = 50, versions: 0..=1;
    /// List consumer groups (all, or one topic's) with their lag.
    ListGroups = 51, versions: 0..=0;
    /// The broker's version, uptime, settings in effect and disk usage.
    DescribeBroker = 60, versions: 0..=0;
}

/// An inclusive range of versions of one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    /// Lowest version.
    pub min: u16,
    /// Highest version.
    pub max: u16,
}

impl VersionRange {
    /// Whether `version` is in the range.
    pub fn contains(self, version: u16) -> bool {
        self.min <= version && version <= self.max
    }

    /// The highest version in both ranges, if they overlap.
    pub fn highest_common(self, other: VersionRange) -> Option<u16> {
        let min = self.min.max(other.min);
        let max = self.max.min(other.max);
        (min <= max).then_some(max)
    }
}

impl ApiKey {
    /// Fails with `UnsupportedVersion` at frame offset `offset` unless this
    /// build speaks `version` of this API.
    pub fn check_version(self, version: u16, offset: usize) -> Result<(), CodecError> {
        let range = self.supported_versions();
        if range.contains(version) {
            Ok(())
        } else {
            Err(CodecError::new(
                offset,
                CodecErrorKind::UnsupportedVersion {
                    api_key: self.as_u16(),
                    version,
                    min: range.min,
                    max: range.max,
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_pinned() {
        let numbers: Vec<u16> = ALL_API_KEYS.iter().map(|k| k.as_u16()).collect();
        assert_eq!(
            numbers,
            vec![
                0, 1, 2, 10, 11, 12, 13, 14, 20, 21, 30, 31, 40, 41, 42, 43, 44, 45, 46, 47, 48,
                49, 50, 51, 60
            ]
        );
        for key in ALL_API_KEYS {
            assert_eq!(ApiKey::from_u16(key.as_u16()), Some(key));
        }
        assert_eq!(ApiKey::from_u16(3), None);
        assert_eq!(ApiKey::from_u16(39), None);
        assert_eq!(ApiKey::from_u16(52), None);
        assert_eq!(ApiKey::from_u16(61), None);
        assert_eq!(ApiKey::from_u16(u16::MAX), None);
    }

    #[test]
    fn version_ranges() {
        let a = VersionRange { min: 0, max: 3 };
        let b = VersionRange { min: 2, max: 5 };
        assert_eq!(a.highest_common(b), Some(3));
        assert_eq!(a.highest_common(VersionRange { min: 4, max: 4 }), None);
        assert!(a.contains(0) && a.contains(3) && !a.contains(4));
    }
}
