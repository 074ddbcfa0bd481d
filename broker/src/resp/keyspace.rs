//! Keys: how a Redis key names a Pigeon stream, and Redis's glob patterns
//! (`KEYS`, `SCAN MATCH`).
//!
//! A stream key is a topic name, optionally followed by `#` and a
//! partition number:
//!
//! | key | means |
//! | --- | --- |
//! | `orders` | topic `orders`: its only partition if it has one; the whole topic for `EXISTS`, `TYPE`, `DEL` and groups |
//! | `orders#2` | partition 2 of topic `orders` |
//!
//! `#` cannot occur in a topic name (`[A-Za-z0-9._-]`), so the form is
//! never ambiguous. Topics whose names begin with `__` are the broker's
//! own and are not listed as keys.

use bytes::Bytes;

use crate::error::{BrokerError, ErrorKind};
use crate::service::Checked;

/// The error for a key that cannot name a stream.
pub fn bad_key(key: &[u8]) -> String {
    format!(
        "ERR '{}' cannot name a Pigeon stream: a key is a topic name (1 to 200 of A-Z a-z 0-9 . _ -, not beginning with __), optionally with #<partition>",
        String::from_utf8_lossy(key)
    )
}

/// A key read as a stream name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKey {
    /// The topic.
    pub topic: String,
    /// The partition named after `#`, if any.
    pub partition: Option<u32>,
}

impl StreamKey {
    /// Reads `key`; `None` if it cannot name a stream (not a topic name,
    /// or a bad partition suffix).
    pub fn parse(key: &[u8]) -> Option<StreamKey> {
        let text = std::str::from_utf8(key).ok()?;
        let (topic, partition) = match text.rsplit_once('#') {
            Some((topic, p)) => {
                let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
                (topic, Some(p.parse::<u32>().ok().filter(|_| digits)?))
            }
            None => (text, None),
        };
        pigeon_protocol::validate_topic_name(topic).ok()?;
        if topic.starts_with("__") {
            // The broker's own topics.
            return None;
        }
        Some(StreamKey {
            topic: topic.to_owned(),
            partition,
        })
    }

    /// The one partition this key reads and writes: the one named, or the
    /// topic's only partition. A bare name of a topic with several
    /// partitions is an error saying how to name one.
    pub fn partition_in(&self, broker: &Checked<'_>) -> Result<u32, BrokerError> {
        let count = broker.describe_topic(&self.topic)?.partitions.len() as u32;
        match self.partition {
            Some(p) if p < count => Ok(p),
            Some(p) => Err(BrokerError::unknown_partition(&self.topic, count, p)),
            None if count == 1 => Ok(0),
            None => Err(BrokerError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "stream {0} has {count} partitions; name one as {0}#0 to {0}#{1}",
                    self.topic,
                    count - 1
                ),
            )),
        }
    }

    /// Whether the key names an existing stream (a topic, or an existing
    /// partition of one).
    pub fn exists(&self, broker: &Checked<'_>) -> bool {
        match broker.partitions_of(&self.topic) {
            Some(count) => self.partition.is_none_or(|p| p < count),
            None => false,
        }
    }
}

/// The streams shown as keys: every topic but the broker's own, by name.
pub fn stream_names(broker: &Checked<'_>) -> Vec<String> {
    let mut names: Vec<String> = broker
        .list_topics()
        .into_iter()
        .map(|t| t.name)
        .filter(|n| !n.starts_with("__"))
        .collect();
    names.sort();
    names
}

/// Whether `text` matches the Redis glob `pattern` (`*`, `?`, `[…]` with
/// ranges and `^`, `\` escapes), case-sensitively.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class_match(pattern, p, text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|c| *c == b'*')
}

/// Matches `c` against the class `[…]` starting at `pattern[at]`; the
/// pattern index after the class if it matches.
fn class_match(pattern: &[u8], at: usize, c: u8) -> Option<usize> {
    let mut i = at + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    (matched != negate).then_some((i + 1).min(pattern.len()))
}

/// The names among `names` that `pattern` matches (all without one).
pub fn matching(names: Vec<String>, pattern: Option<&Bytes>) -> Vec<String> {
    match pattern {
        None => names,
        Some(p) => names
            .into_iter()
            .filter(|n| glob_match(p, n.as_bytes()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_name_a_topic_or_one_of_its_partitions() {
        let key = |k: &str| StreamKey::parse(k.as_bytes());
        assert_eq!(
            key("orders#2"),
            Some(StreamKey {
                topic: "orders".into(),
                partition: Some(2)
            })
        );
        assert_eq!(key("orders").and_then(|k| k.partition), None);
        assert_eq!(key("orders#"), None);
        assert_eq!(key("orders#x"), None);
        assert_eq!(key("a:b"), None, "not a topic name");
        assert_eq!(key(""), None);
    }

    #[test]
    fn globs_match_as_redis_matches_them() {
        let cases: [(&str, &str, bool); 12] = [
            ("*", "orders", true),
            ("ord*", "orders", true),
            ("*ers", "orders", true),
            ("o?ders", "orders", true),
            ("o[a-r]ders", "orders", true),
            ("o[^r]ders", "orders", false),
            ("o[xy]ders", "orders", false),
            ("orders\\*", "orders*", true),
            ("*d*s", "orders", true),
            ("", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }
}
