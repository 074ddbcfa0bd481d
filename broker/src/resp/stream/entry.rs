//! A stream entry ↔ a Pigeon record: how `XADD`'s field/value pairs are
//! stored and how any record (also one from `pigeon produce`) reads back
//! as an entry.
//!
//! ## Writing (`XADD key id field value …`)
//!
//! | the entry's fields | record key | record value | headers |
//! | --- | --- | --- | --- |
//! | exactly `value v` | none | `v` | none |
//! | exactly `key k value v` (in this order) | `k` | `v` | none |
//! | anything else | none | the pairs as a RESP2 array: `*<2n>\r\n` then `$<len>\r\n<bytes>\r\n` for each field and value | `redis.fields` = `resp` |
//!
//! An entry added with an explicit ID also carries the header
//! `redis.id` = `<ms>-<seq>` (ASCII). So the common one-field entry is a
//! plain record that every Pigeon consumer reads as is.
//!
//! ## Reading
//!
//! | the record | the entry's fields |
//! | --- | --- |
//! | has `redis.fields` = `resp` and its value is such an array | those pairs |
//! | any other | `key k` (when the record has a key), `value v`, then one field per header (its name, its value), the `redis.*` headers left out |
//!
//! A value marked `redis.fields` that is not a well-formed array (written
//! by someone else) reads as a plain record, never as an error.

use bytes::{BufMut, Bytes, BytesMut};
use pigeon_protocol::batch::Record;

use super::ids::StreamId;

/// Header marking a value that holds encoded field/value pairs.
pub const FIELDS_HEADER: &str = "redis.fields";

/// Value of [`FIELDS_HEADER`]: the pairs are a RESP2 array.
pub const FIELDS_RESP: &[u8] = b"resp";

/// Header holding an entry's explicit ID.
pub const ID_HEADER: &str = "redis.id";

/// Headers the entry mapping owns: not shown as fields.
const OWN_PREFIX: &str = "redis.";

/// A record to append for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The record key.
    pub key: Option<Bytes>,
    /// The record value.
    pub value: Bytes,
    /// Headers.
    pub headers: Vec<(&'static str, Bytes)>,
}

/// The record for an entry with `pairs` (field, value, field, value, …)
/// and, if given, its explicit ID.
pub fn to_record(pairs: &[Bytes], explicit: Option<StreamId>) -> NewRecord {
    let mut record = match pairs {
        [f, v] if f.as_ref() == b"value" => NewRecord {
            key: None,
            value: v.clone(),
            headers: Vec::new(),
        },
        [f1, k, f2, v] if f1.as_ref() == b"key" && f2.as_ref() == b"value" => NewRecord {
            key: Some(k.clone()),
            value: v.clone(),
            headers: Vec::new(),
        },
        _ => NewRecord {
            key: None,
            value: encode_pairs(pairs),
            headers: vec![(FIELDS_HEADER, Bytes::from_static(FIELDS_RESP))],
        },
    };
    if let Some(id) = explicit {
        record
            .headers
            .push((ID_HEADER, Bytes::from(id.to_string())));
    }
    record
}

/// The pairs as a RESP2 array of bulk strings.
fn encode_pairs(pairs: &[Bytes]) -> Bytes {
    let size: usize = pairs.iter().map(|p| p.len() + 16).sum();
    let mut out = BytesMut::with_capacity(size + 16);
    out.put_slice(format!("*{}\r\n", pairs.len()).as_bytes());
    for p in pairs {
        out.put_slice(format!("${}\r\n", p.len()).as_bytes());
        out.put_slice(p);
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// The pairs of a RESP2 array of bulk strings; `None` if it is not one.
fn decode_pairs(value: &Bytes) -> Option<Vec<Bytes>> {
    let mut at = 0;
    let count = number_line(value, &mut at, b'*')?;
    if !count.is_multiple_of(2) || count > value.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let len = number_line(value, &mut at, b'$')?;
        let end = at.checked_add(len)?;
        if value.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        pairs.push(value.slice(at..end));
        at = end + 2;
    }
    (at == value.len()).then_some(pairs)
}

/// Reads `<kind><n>\r\n` at `*at`.
fn number_line(bytes: &[u8], at: &mut usize, kind: u8) -> Option<usize> {
    if bytes.get(*at) != Some(&kind) {
        return None;
    }
    let rest = bytes.get(*at + 1..)?;
    let end = rest.iter().take(21).position(|b| *b == b'\r')?;
    let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    if rest.get(end + 1) != Some(&b'\n') {
        return None;
    }
    *at += end + 3;
    Some(n)
}

/// The ID of a record: its `redis.id` header when it has a valid one no
/// greater than `<append time>-<offset>`, else `<append time>-<offset>`.
/// (`XADD` only writes such IDs; a copy of the record elsewhere, say in a
/// dead-letter topic, keeps the header but not the bound, and reads with
/// its own derived ID.)
pub fn id_of(record: &Record) -> StreamId {
    let derived = StreamId::new(record.timestamp.max(0) as u64, record.offset);
    match record.header(ID_HEADER).and_then(|t| StreamId::parse(t, 0)) {
        Some(id) if id <= derived => id,
        _ => derived,
    }
}

/// The entry's field/value pairs of a record.
pub fn fields_of(record: &Record) -> Vec<Bytes> {
    if record
        .header(FIELDS_HEADER)
        .is_some_and(|v| v == FIELDS_RESP)
        && let Some(pairs) = decode_pairs(&record.value)
    {
        return pairs;
    }
    let mut pairs = Vec::with_capacity(2 + 2 * record.headers.len());
    if let Some(key) = &record.key {
        pairs.push(Bytes::from_static(b"key"));
        pairs.push(key.clone());
    }
    pairs.push(Bytes::from_static(b"value"));
    pairs.push(record.value.clone());
    for header in &record.headers {
        if !header.name.starts_with(OWN_PREFIX) {
            pairs.push(Bytes::from(header.name.clone()));
            pairs.push(header.value.clone());
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_protocol::batch::Header;

    fn record(new: &NewRecord, offset: u64) -> Record {
        Record {
            offset,
            timestamp: 1_700_000_000_000,
            key: new.key.clone(),
            value: new.value.clone(),
            headers: new
                .headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).to_owned(),
                    value: v.clone(),
                })
                .collect(),
        }
    }

    fn pairs(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn entries_round_trip_through_records() {
        let cases: [&[&str]; 5] = [
            &["value", "hello"],
            &["key", "k1", "value", "v1"],
            &["value", "a", "key", "k"],
            &["temp", "21.5", "unit", ""],
            &["bin\r\n", "*2\r\n$1\r\n"],
        ];
        for fields in cases {
            let new = to_record(&pairs(fields), None);
            assert_eq!(fields_of(&record(&new, 7)), pairs(fields), "{fields:?}");
        }
        let plain = to_record(&pairs(&["value", "hello"]), None);
        assert_eq!(plain.value, Bytes::from_static(b"hello"));
        assert!(
            plain.headers.is_empty(),
            "a one-field entry is a plain record"
        );
        let keyed = to_record(&pairs(&["key", "k1", "value", "v1"]), None);
        assert_eq!(keyed.key, Some(Bytes::from_static(b"k1")));
    }

    #[test]
    fn ids_are_the_append_time_and_offset_unless_given() {
        let new = to_record(&pairs(&["value", "x"]), None);
        assert_eq!(
            id_of(&record(&new, 42)),
            StreamId::new(1_700_000_000_000, 42)
        );
        let given = to_record(&pairs(&["value", "x"]), Some(StreamId::new(5, 1)));
        assert_eq!(id_of(&record(&given, 42)), StreamId::new(5, 1));
        assert_eq!(
            fields_of(&record(&given, 42)),
            pairs(&["value", "x"]),
            "redis.* headers are not fields"
        );
    }

    #[test]
    fn a_record_from_elsewhere_reads_with_its_key_value_and_headers() {
        let produced = Record {
            offset: 3,
            timestamp: 10,
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"*1\r\n"),
            headers: vec![
                Header {
                    name: FIELDS_HEADER.into(),
                    value: Bytes::from_static(FIELDS_RESP),
                },
                Header {
                    name: "trace".into(),
                    value: Bytes::from_static(b"t1"),
                },
            ],
        };
        assert_eq!(
            fields_of(&produced),
            pairs(&["key", "k", "value", "*1\r\n", "trace", "t1"]),
            "a malformed array reads as a plain record"
        );
    }
}
