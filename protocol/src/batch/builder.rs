//! Encoding records into a record batch, as a producer does.

use bytes::Bytes;

use super::header::{
    ATTRIBUTES_AT, BASE_OFFSET_AT, CRC_AT, CRC_COVERS_FROM, FIRST_TIMESTAMP_AT, HEADER_LEN,
    LENGTH_AT, LOG_OVERHEAD, MAGIC, MAGIC_AT, MAX_TIMESTAMP_AT, ProducerStamp, RECORD_COUNT_AT,
    write_producer,
};
use super::varint;

/// Builds one record batch. Records get offset deltas 0, 1, 2, … and a
/// timestamp delta of 0: the broker assigns the append time to the whole
/// batch (an event time chosen by the producer travels as a header).
///
/// ```
/// use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch};
///
/// let mut builder = BatchBuilder::new();
/// builder.push(Some(b"order-7"), b"created", &[("trace", b"abc")]);
/// let bytes = builder.build(ProducerStamp::NONE, 1_700_000_000_000);
/// let batch = RecordBatch::validate(bytes, 1 << 20).unwrap();
/// assert_eq!(batch.header().record_count, 1);
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch.
    pub fn new() -> BatchBuilder {
        Self::with_capacity(4096)
    }

    /// An empty batch with room for `bytes` of encoded records.
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder { buf, count: 0 }
    }

    /// Number of records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if built now.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes one more record with these fields would add.
    pub fn record_size(key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> usize {
        let body = Self::body_len(key, value, headers, u32::MAX);
        varint::len_u32(body as u32) + body
    }

    fn body_len(key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])], index: u32) -> usize {
        let key_len = key.map_or(1, |k| varint::len_i32(k.len() as i32) + k.len());
        let headers_len: usize = headers
            .iter()
            .map(|(n, v)| {
                varint::len_u32(n.len() as u32)
                    + n.len()
                    + varint::len_u32(v.len() as u32)
                    + v.len()
            })
            .sum();
        1 + 1 // attributes, timestamp delta 0
            + varint::len_u32(index)
            + key_len
            + varint::len_u32(value.len() as u32)
            + value.len()
            + varint::len_u32(headers.len() as u32)
            + headers_len
    }

    /// Appends one record. Lengths above `u32::MAX` cannot be represented;
    /// callers enforce far smaller limits (the broker's max batch size).
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) {
        let body = Self::body_len(key, value, headers, self.count);
        let out = &mut self.buf;
        out.reserve(body + varint::MAX_U32_LEN);
        varint::put_u32(out, body as u32);
        out.push(0); // attributes
        varint::put_u32(out, 0); // timestamp delta: the broker assigns time
        varint::put_u32(out, self.count);
        match key {
            None => varint::put_i32(out, -1),
            Some(k) => {
                varint::put_i32(out, k.len() as i32);
                out.extend_from_slice(k);
            }
        }
        varint::put_u32(out, value.len() as u32);
        out.extend_from_slice(value);
        varint::put_u32(out, headers.len() as u32);
        for (name, value) in headers {
            varint::put_u32(out, name.len() as u32);
            out.extend_from_slice(name.as_bytes());
            varint::put_u32(out, value.len() as u32);
            out.extend_from_slice(value);
        }
        self.count += 1;
    }

    /// Finishes the batch: fills the header and the CRC. `base_offset` is 0
    /// (the broker assigns it); `timestamp` is the producer's clock, which
    /// the broker replaces with its append time.
    pub fn build(mut self, producer: ProducerStamp, timestamp: i64) -> Bytes {
        let buf = &mut self.buf;
        let batch_length = (buf.len() - LOG_OVERHEAD) as u32;
        buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&0u64.to_le_bytes());
        buf[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&batch_length.to_le_bytes());
        buf[MAGIC_AT] = MAGIC;
        buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&0u16.to_le_bytes());
        buf[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&self.count.to_le_bytes());
        buf[FIRST_TIMESTAMP_AT..FIRST_TIMESTAMP_AT + 8].copy_from_slice(&timestamp.to_le_bytes());
        buf[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp.to_le_bytes());
        write_producer(buf, producer);
        let crc = crc32fast::hash(&buf[CRC_COVERS_FROM..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(self.buf)
    }
}
