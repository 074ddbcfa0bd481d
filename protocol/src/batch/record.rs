//! Records inside a batch: parsing one record's fields as byte ranges (no
//! allocation, used to validate), and the owned [`Record`] a reader gets.
//!
//! Every length is checked against the bytes left in the record before it is
//! used, so a hostile batch can make parsing fail but never over-read or
//! allocate beyond the batch it came in.

use std::ops::Range;

use bytes::Bytes;

use super::BatchError;
use super::varint::{self, VarintError};

/// One record of a batch, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Append time, ms since the Unix epoch.
    pub timestamp: i64,
    /// Optional key (used for partitioning).
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Ordered headers; names may repeat.
    pub headers: Vec<Header>,
}

impl Record {
    /// The value of the last header named `name`. Names may repeat, and
    /// headers added later come later (the broker appends its own
    /// `pigeon.dlq.*` and `pigeon.redrive.*` headers after the record's), so
    /// the last one is the current one.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use pigeon_protocol::batch::{Header, Record};
    /// let header = |v: &'static str| Header { name: "hop".into(), value: Bytes::from(v) };
    /// let record = Record {
    ///     offset: 0, timestamp: 0, key: None, value: Bytes::new(),
    ///     headers: vec![header("first"), header("second")],
    /// };
    /// assert_eq!(record.header("hop"), Some(&b"second"[..]));
    /// assert_eq!(record.header("other"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|h| h.name == name)
            .map(|h| h.value.as_ref())
    }
}

/// A record header: a UTF-8 name and a byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: Bytes,
}

/// Where each field of one record lies within the batch bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordSpans {
    pub timestamp_delta: u32,
    pub offset_delta: u32,
    pub key: Option<Range<usize>>,
    pub value: Range<usize>,
    /// The encoded headers (count excluded).
    pub headers: Range<usize>,
    pub header_count: u32,
    /// Bytes of the longest header name.
    pub longest_header_name: u32,
    /// Position right after this record.
    pub end: usize,
}

/// A reader over `bytes[at..limit]` that reports errors with their position.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    limit: usize,
    index: u32,
}

impl Cursor<'_> {
    fn fail(&self, what: &'static str) -> BatchError {
        BatchError::BadRecord {
            index: self.index,
            at: self.at,
            what,
        }
    }

    fn varint(&mut self, what: &'static str) -> Result<u32, BatchError> {
        let (value, used) = varint::get_u32(&self.bytes[self.at..self.limit])
            .map_err(|e| self.varint_error(e, what))?;
        self.at += used;
        Ok(value)
    }

    fn signed_varint(&mut self, what: &'static str) -> Result<i32, BatchError> {
        let (value, used) = varint::get_i32(&self.bytes[self.at..self.limit])
            .map_err(|e| self.varint_error(e, what))?;
        self.at += used;
        Ok(value)
    }

    fn varint_error(&self, error: VarintError, what: &'static str) -> BatchError {
        match error {
            VarintError::Truncated => self.fail(what),
            VarintError::Overflow => self.fail("varint longer than 5 bytes"),
        }
    }

    fn take(&mut self, len: u32, what: &'static str) -> Result<Range<usize>, BatchError> {
        let len = len as usize;
        if len > self.limit - self.at {
            return Err(self.fail(what));
        }
        let range = self.at..self.at + len;
        self.at += len;
        Ok(range)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, BatchError> {
        let byte = *self.bytes[..self.limit]
            .get(self.at)
            .ok_or_else(|| self.fail(what))?;
        self.at += 1;
        Ok(byte)
    }
}

/// Parses the record starting at `at` (which must be `<= bytes.len()`).
pub(crate) fn parse_record(bytes: &[u8], at: usize, index: u32) -> Result<RecordSpans, BatchError> {
    let mut outer = Cursor {
        bytes,
        at,
        limit: bytes.len(),
        index,
    };
    let length = outer.varint("record length truncated")?;
    let body = outer.take(length, "record length runs past the end of the batch")?;
    let mut cur = Cursor {
        bytes,
        at: body.start,
        limit: body.end,
        index,
    };
    if cur.byte("record attributes missing")? != 0 {
        return Err(BatchError::BadRecord {
            index,
            at: cur.at - 1,
            what: "record attributes must be 0",
        });
    }
    let timestamp_delta = cur.varint("timestamp delta truncated")?;
    let offset_delta = cur.varint("offset delta truncated")?;
    let key_length = cur.signed_varint("key length truncated")?;
    let key = match key_length {
        -1 => None,
        n if n < -1 => return Err(cur.fail("key length below -1")),
        n => Some(cur.take(n as u32, "key runs past the end of the record")?),
    };
    let value_length = cur.varint("value length truncated")?;
    let value = cur.take(value_length, "value runs past the end of the record")?;
    let header_count = cur.varint("header count truncated")?;
    let headers_start = cur.at;
    let mut longest_header_name = 0;
    for _ in 0..header_count {
        let name_length = cur.varint("header name length truncated")?;
        longest_header_name = longest_header_name.max(name_length);
        let name = cur.take(name_length, "header name runs past the end of the record")?;
        if std::str::from_utf8(&bytes[name]).is_err() {
            return Err(cur.fail("header name is not UTF-8"));
        }
        let value_length = cur.varint("header value length truncated")?;
        cur.take(value_length, "header value runs past the end of the record")?;
    }
    if cur.at != body.end {
        return Err(cur.fail("record has bytes after its last header"));
    }
    Ok(RecordSpans {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: headers_start..body.end,
        header_count,
        longest_header_name,
        end: body.end,
    })
}

/// Decodes headers already checked by [`parse_record`].
pub(crate) fn decode_headers(batch: &Bytes, spans: &RecordSpans) -> Vec<Header> {
    let mut headers = Vec::with_capacity(spans.header_count.min(64) as usize);
    let mut at = spans.headers.start;
    for _ in 0..spans.header_count {
        let Some((name, next)) = length_prefixed(batch, at) else {
            break;
        };
        let Some((value, next)) = length_prefixed(batch, next) else {
            break;
        };
        at = next;
        headers.push(Header {
            name: String::from_utf8_lossy(&batch[name]).into_owned(),
            value: batch.slice(value),
        });
    }
    headers
}

fn length_prefixed(bytes: &[u8], at: usize) -> Option<(Range<usize>, usize)> {
    let (len, used) = varint::get_u32(bytes.get(at..)?).ok()?;
    let start = at + used;
    let end = start.checked_add(len as usize)?;
    (end <= bytes.len()).then_some((start..end, end))
}
