//! What the commands print: a buffered stdout, record rendering (a human
//! line or one JSON object), and RFC 3339 timestamps.
//!
//! ## The `--json` record format
//!
//! One object per line, fields in this order: `topic`, `partition`,
//! `offset`, `timestamp` (ms since the Unix epoch, a number), `key` (`null`
//! when absent), `value`, `headers` (an object name → value in record
//! order; a repeated name maps to an array of its values). A key, value or
//! header value is a string of the bytes when they are valid UTF-8; when
//! they are not, it is their standard base64 and a marker says so:
//! `"key_encoding":"base64"` after `key`, `"value_encoding":"base64"` after
//! `value`, and `"headers_encoding":"base64"` after `headers` (then *every*
//! header value is base64).

use std::io::{BufWriter, Stdout, Write};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use pigeon_client::batch::{Header, Record};
use serde_json::{Map, Value};

use super::Failure;

/// Buffered stdout; every write error (a closed pipe included) is a
/// [`Failure`] that `main` recognises.
pub(crate) struct Out {
    stdout: BufWriter<Stdout>,
}

impl Out {
    pub(crate) fn new() -> Out {
        Out {
            stdout: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
        }
    }

    /// Writes `line` and a newline (buffered).
    pub(crate) fn line(&mut self, line: impl std::fmt::Display) -> Result<(), Failure> {
        writeln!(self.stdout, "{line}").context("cannot write to stdout")
    }

    /// Pushes what is buffered to stdout.
    pub(crate) fn flush(&mut self) -> Result<(), Failure> {
        self.stdout.flush().context("cannot write to stdout")
    }
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds:
/// `2026-11-23T10:00:00.123Z` (the bare number if out of range).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => ms.to_string(),
    }
}

/// A JSON object of `fields`, in order.
pub(crate) fn json_object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
    )
}

/// One record as a `--json` line (see the module documentation).
pub(crate) fn record_json(topic: &str, partition: u32, record: &Record) -> String {
    Value::Object(record_json_map(topic, partition, record)).to_string()
}

/// One record as the JSON object of a `--json` line.
pub(crate) fn record_json_map(topic: &str, partition: u32, record: &Record) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("topic".into(), topic.into());
    object.insert("partition".into(), partition.into());
    object.insert("offset".into(), record.offset.into());
    object.insert("timestamp".into(), record.timestamp.into());
    match &record.key {
        None => {
            object.insert("key".into(), Value::Null);
        }
        Some(key) => insert_bytes(&mut object, "key", key),
    }
    insert_bytes(&mut object, "value", &record.value);
    let base64 = record
        .headers
        .iter()
        .any(|h| std::str::from_utf8(&h.value).is_err());
    object.insert("headers".into(), headers_json(&record.headers, base64));
    if base64 {
        object.insert("headers_encoding".into(), "base64".into());
    }
    object
}

/// Inserts `name` as text, or as base64 followed by `<name>_encoding`.
fn insert_bytes(object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            object.insert(name.into(), text.into());
        }
        Err(_) => {
            object.insert(name.into(), BASE64.encode(bytes).into());
            object.insert(format!("{name}_encoding"), "base64".into());
        }
    }
}

/// Headers as an object; a repeated name collects its values in an array.
fn headers_json(headers: &[Header], base64: bool) -> Value {
    let mut object = Map::new();
    for header in headers {
        let value: Value = if base64 {
            BASE64.encode(&header.value).into()
        } else {
            String::from_utf8_lossy(&header.value).into_owned().into()
        };
        match object.get_mut(&header.name) {
            None => {
                object.insert(header.name.clone(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(object)
}

/// One record as a human line:
/// `t/0@5 2026-11-23T10:00:00.123Z key=k [h=v, ...] value`.
pub(crate) fn record_human(topic: &str, partition: u32, record: &Record) -> String {
    let mut line = format!(
        "{topic}/{partition}@{} {}",
        record.offset,
        rfc3339_ms(record.timestamp)
    );
    if let Some(key) = &record.key {
        line.push_str(" key=");
        line.push_str(&printable(key));
    }
    if !record.headers.is_empty() {
        let headers: Vec<String> = record
            .headers
            .iter()
            .map(|h| format!("{}={}", printable(h.name.as_bytes()), printable(&h.value)))
            .collect();
        line.push_str(&format!(" [{}]", headers.join(", ")));
    }
    line.push(' ');
    line.push_str(&printable(&record.value));
    line
}

/// Bytes for a terminal: UTF-8 text with control characters escaped
/// (`\n`, `\t`, `\u{1b}`), or `base64:` and the base64 of anything else.
pub(crate) fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut out = String::with_capacity(text.len());
            for c in text.chars() {
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Err(_) => format!("base64:{}", BASE64.encode(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(
        key: Option<&'static [u8]>,
        value: &'static [u8],
        headers: &[(&str, &'static [u8])],
    ) -> Record {
        Record {
            offset: 5,
            timestamp: 1_795_428_000_123,
            key: key.map(Bytes::from_static),
            value: Bytes::from_static(value),
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: Bytes::from_static(v),
                })
                .collect(),
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_795_428_000_123), "2026-11-23T10:00:00.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn json_has_the_documented_fields_in_order() {
        let line = record_json("t", 0, &record(None, b"hello", &[]));
        assert_eq!(
            line,
            r#"{"topic":"t","partition":0,"offset":5,"timestamp":1795428000123,"key":null,"value":"hello","headers":{}}"#
        );
    }

    #[test]
    fn json_repeated_header_names_become_arrays() {
        let line = record_json(
            "t",
            1,
            &record(Some(b"k"), b"v", &[("a", b"1"), ("b", b"2"), ("a", b"3")]),
        );
        assert!(
            line.contains(r#""key":"k","value":"v","headers":{"a":["1","3"],"b":"2"}}"#),
            "{line}"
        );
    }

    #[test]
    fn json_non_utf8_bytes_are_base64_with_a_marker() {
        let line = record_json(
            "t",
            0,
            &record(Some(b"\xff"), b"\x00\xfe", &[("h", b"\x80"), ("i", b"ok")]),
        );
        assert!(
            line.contains(r#""key":"/w==","key_encoding":"base64""#),
            "{line}"
        );
        assert!(
            line.contains(r#""value":"AP4=","value_encoding":"base64""#),
            "{line}"
        );
        assert!(
            line.contains(r#""headers":{"h":"gA==","i":"b2s="},"headers_encoding":"base64""#),
            "{line}"
        );
    }

    #[test]
    fn human_lines_escape_control_characters_and_show_binary_as_base64() {
        let line = record_human("t", 0, &record(Some(b"k"), b"a\tb\x1b", &[("h", b"v")]));
        assert_eq!(
            line,
            r"t/0@5 2026-11-23T10:00:00.123Z key=k [h=v] a\tb\u{1b}"
        );
        assert_eq!(printable(b"\xff"), "base64:/w==");
    }
}
