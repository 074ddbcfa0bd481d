//! [`StreamId`]: Redis's `<ms>-<seq>` entry IDs, their text forms and the
//! error texts Redis answers for bad ones.

use std::fmt;

/// A stream entry ID: milliseconds and a sequence number, ordered as a
/// pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// The time part.
    pub ms: u64,
    /// The sequence part.
    pub seq: u64,
}

/// The largest ID.
pub const MAX_ID: StreamId = StreamId {
    ms: u64::MAX,
    seq: u64::MAX,
};

/// Redis's answer to an ID it cannot read.
pub const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl StreamId {
    /// `ms-seq`.
    pub const fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// The next ID, if there is one.
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId::new(self.ms, seq)),
            None => self.ms.checked_add(1).map(|ms| StreamId::new(ms, 0)),
        }
    }

    /// The previous ID, if there is one.
    pub fn prev(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId::new(self.ms, seq)),
            None => self.ms.checked_sub(1).map(|ms| StreamId::new(ms, u64::MAX)),
        }
    }

    /// Reads `ms-seq`, or `ms` alone with `seq` as its sequence part.
    pub fn parse(text: &[u8], seq: u64) -> Option<StreamId> {
        let text = std::str::from_utf8(text).ok()?;
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || s.starts_with('+') {
                return None;
            }
            s.parse().ok()
        };
        match text.split_once('-') {
            Some((ms, s)) => Some(StreamId::new(number(ms)?, number(s)?)),
            None => Some(StreamId::new(number(text)?, seq)),
        }
    }
}

/// One end of an `XRANGE` interval, as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `-` or `+`, or an ID (inclusive).
    Inclusive(StreamId),
    /// `(id`: everything strictly beyond it.
    Exclusive(StreamId),
}

/// Reads an interval end: `-`, `+`, `ms`, `ms-seq`, `(ms-seq`. An `ms`
/// alone is `ms-0` as a start and `ms-<max>` as an end.
pub fn parse_bound(text: &[u8], is_start: bool) -> Option<Bound> {
    match text {
        b"-" => Some(Bound::Inclusive(StreamId::default())),
        b"+" => Some(Bound::Inclusive(MAX_ID)),
        _ => {
            let seq = if is_start { 0 } else { u64::MAX };
            match text.strip_prefix(b"(") {
                Some(rest) => StreamId::parse(rest, seq).map(Bound::Exclusive),
                None => StreamId::parse(text, seq).map(Bound::Inclusive),
            }
        }
    }
}

/// The inclusive form of a start bound; `Err` with Redis's text when an
/// exclusive start has no next ID.
pub fn start_of(bound: Bound) -> Result<StreamId, &'static str> {
    match bound {
        Bound::Inclusive(id) => Ok(id),
        Bound::Exclusive(id) => id.next().ok_or("ERR invalid start ID for the interval"),
    }
}

/// The inclusive form of an end bound; `Err` with Redis's text when an
/// exclusive end has no previous ID.
pub fn end_of(bound: Bound) -> Result<StreamId, &'static str> {
    match bound {
        Bound::Inclusive(id) => Ok(id),
        Bound::Exclusive(id) => id.prev().ok_or("ERR invalid end ID for the interval"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_and_order_as_redis_reads_them() {
        assert_eq!(StreamId::parse(b"5-3", 0), Some(StreamId::new(5, 3)));
        assert_eq!(StreamId::parse(b"5", 7), Some(StreamId::new(5, 7)));
        assert_eq!(StreamId::parse(b"5-", 0), None);
        assert_eq!(StreamId::parse(b"-1", 0), None);
        assert_eq!(StreamId::parse(b"x", 0), None);
        assert!(StreamId::new(1, 9) < StreamId::new(2, 0));
        assert_eq!(StreamId::new(1, u64::MAX).next(), Some(StreamId::new(2, 0)));
        assert_eq!(MAX_ID.next(), None);
        assert_eq!(StreamId::default().prev(), None);
        assert_eq!(
            parse_bound(b"(5", true).map(start_of),
            Some(Ok(StreamId::new(5, 1)))
        );
        assert_eq!(
            parse_bound(b"5", false),
            Some(Bound::Inclusive(StreamId::new(5, u64::MAX)))
        );
        assert_eq!(
            parse_bound(b"(0-0", false).map(end_of),
            Some(Err("ERR invalid end ID for the interval"))
        );
    }
}
