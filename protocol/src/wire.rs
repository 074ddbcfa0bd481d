//! Primitive encoding: a bounds-checked [`Reader`] and a [`Writer`], both
//! tracking the byte offset within the frame for error reports.
//!
//! | type | encoding |
//! | --- | --- |
//! | `u8`/`u16`/`u32`/`u64`, `i16`/`i32`/`i64` | fixed width, little-endian |
//! | string | `u16` byte length, then that many bytes of UTF-8 |
//! | bytes | `u32` byte length, then that many bytes |
//! | array | `u32` element count, then the elements back to back |
//! | option | `u8` tag, 0 = absent, 1 = present and followed by the value |
//! | bool | `u8`, 0 = false, 1 = true; anything else is an error |
//! | f64 | its IEEE-754 bits as a little-endian `u64` |
//!
//! The reader never indexes out of bounds and never allocates according to a
//! declared size alone: lengths are checked against their limit and against
//! the bytes that remain before anything is copied, and array pre-allocation
//! is capped.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec_error::{CodecError, CodecErrorKind};
use super::limits::{Limits, MAX_TOPIC_NAME_LEN, TopicNameError, validate_topic_name};

/// Elements pre-allocated for an array before any is decoded; arrays longer
/// than this grow as their elements are actually read.
const MAX_PREALLOCATED_ELEMENTS: usize = 256;

/// A cursor over one frame's body. Reads are zero-copy for byte fields.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    /// Invariant: `pos <= buf.len()`.
    pos: usize,
    /// Frame offset of `buf[0]`.
    base: usize,
    limits: Limits,
}

impl Reader {
    /// A reader over `buf`, whose first byte is at frame offset `base`.
    pub fn new(buf: Bytes, base: usize, limits: Limits) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            limits,
        }
    }

    /// Frame offset of the next byte to read.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// An error of `kind` at the current offset.
    pub fn error(&self, kind: CodecErrorKind) -> CodecError {
        CodecError::new(self.offset(), kind)
    }

    /// Consumes `n` bytes as a zero-copy slice of the frame.
    fn take(&mut self, field: &'static str, n: usize) -> Result<Bytes, CodecError> {
        if n > self.remaining() {
            return Err(self.error(CodecErrorKind::Truncated {
                field,
                needed: n,
                available: self.remaining(),
            }));
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        let bytes = self.take(field, N)?;
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(u8::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `i64`.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// Reads a string: `u16` length (at most `max_len`), then UTF-8.
    pub fn string(&mut self, field: &'static str, max_len: usize) -> Result<String, CodecError> {
        let start = self.offset();
        let len = self.u16(field)?;
        if usize::from(len) > max_len {
            return Err(CodecError::new(
                start,
                CodecErrorKind::LengthTooLarge {
                    field,
                    len: u64::from(len),
                    max: max_len as u64,
                },
            ));
        }
        let bytes = self.take(field, usize::from(len))?;
        match std::str::from_utf8(&bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(CodecError::new(
                start,
                CodecErrorKind::InvalidUtf8 { field },
            )),
        }
    }

    /// Reads a topic name: a string of at most 200 bytes that passes
    /// [`validate_topic_name`]. Every failure, a too-long length prefix
    /// included, is `InvalidTopicName` at the offset of the length prefix.
    pub fn topic_name(&mut self, field: &'static str) -> Result<String, CodecError> {
        self.checked_name(field, CodecErrorKind::InvalidTopicName)
    }

    /// Reads a consumer group name, which follows the topic naming rules
    /// ([`validate_topic_name`]). Every failure, a too-long length prefix
    /// included, is `InvalidGroupName` at the offset of the length prefix.
    pub fn group_name(&mut self, field: &'static str) -> Result<String, CodecError> {
        self.checked_name(field, CodecErrorKind::InvalidGroupName)
    }

    /// A string of at most [`MAX_TOPIC_NAME_LEN`] bytes that passes
    /// [`validate_topic_name`]; failures are `invalid(reason)` at the offset
    /// of the length prefix (invalid UTF-8 is `InvalidUtf8` there).
    fn checked_name(
        &mut self,
        field: &'static str,
        invalid: fn(TopicNameError) -> CodecErrorKind,
    ) -> Result<String, CodecError> {
        let start = self.offset();
        let len = usize::from(self.u16(field)?);
        if len > MAX_TOPIC_NAME_LEN {
            return Err(CodecError::new(
                start,
                invalid(TopicNameError::TooLong { len }),
            ));
        }
        let bytes = self.take(field, len)?;
        let name = std::str::from_utf8(&bytes)
            .map_err(|_| CodecError::new(start, CodecErrorKind::InvalidUtf8 { field }))?;
        validate_topic_name(name).map_err(|e| CodecError::new(start, invalid(e)))?;
        Ok(name.to_owned())
    }

    /// Reads bytes: `u32` length (at most `max_len`), then the bytes, as a
    /// zero-copy slice of the frame.
    pub fn bytes(&mut self, field: &'static str, max_len: u64) -> Result<Bytes, CodecError> {
        let start = self.offset();
        let len = self.u32(field)?;
        if u64::from(len) > max_len {
            return Err(CodecError::new(
                start,
                CodecErrorKind::LengthTooLarge {
                    field,
                    len: u64::from(len),
                    max: max_len,
                },
            ));
        }
        self.take(field, len as usize)
    }

    /// Reads one record batch: `u32` length (at most the reader's
    /// `max_batch_size`), then the opaque batch bytes, zero-copy.
    pub fn record_batch(&mut self, field: &'static str) -> Result<Bytes, CodecError> {
        let start = self.offset();
        let len = self.u32(field)?;
        if len > self.limits.max_batch_size {
            return Err(CodecError::new(
                start,
                CodecErrorKind::BatchTooLarge {
                    len: u64::from(len),
                    max: self.limits.max_batch_size,
                },
            ));
        }
        self.take(field, len as usize)
    }

    /// Reads an array's `u32` element count, rejecting counts whose elements
    /// (each at least `min_element_size` bytes) cannot fit in what remains.
    pub fn array_len(
        &mut self,
        field: &'static str,
        min_element_size: usize,
    ) -> Result<usize, CodecError> {
        let start = self.offset();
        let count = self.u32(field)?;
        let fits = (count as usize)
            .checked_mul(min_element_size.max(1))
            .is_some_and(|need| need <= self.remaining());
        if !fits {
            return Err(CodecError::new(
                start,
                CodecErrorKind::TooManyElements {
                    field,
                    count: u64::from(count),
                    remaining: self.remaining(),
                    min_element_size,
                },
            ));
        }
        Ok(count as usize)
    }

    /// Reads an array: count (see [`Reader::array_len`]), then each element
    /// with `element`. With `non_empty`, a zero count is an error.
    pub fn vec<T>(
        &mut self,
        field: &'static str,
        min_element_size: usize,
        non_empty: bool,
        mut element: impl FnMut(&mut Reader) -> Result<T, CodecError>,
    ) -> Result<Vec<T>, CodecError> {
        let start = self.offset();
        let count = self.array_len(field, min_element_size)?;
        if non_empty && count == 0 {
            return Err(CodecError::new(start, CodecErrorKind::EmptyArray { field }));
        }
        let mut out = Vec::with_capacity(count.min(MAX_PREALLOCATED_ELEMENTS));
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(out)
    }

    /// Reads an option tag: `0` absent, `1` present, anything else an error.
    pub fn option_tag(&mut self, field: &'static str) -> Result<bool, CodecError> {
        self.bool(field)
    }

    /// Reads an optional `u64`.
    pub fn option_u64(&mut self, field: &'static str) -> Result<Option<u64>, CodecError> {
        if self.option_tag(field)? {
            Ok(Some(self.u64(field)?))
        } else {
            Ok(None)
        }
    }

    /// Reads an optional `i64`.
    pub fn option_i64(&mut self, field: &'static str) -> Result<Option<i64>, CodecError> {
        if self.option_tag(field)? {
            Ok(Some(self.i64(field)?))
        } else {
            Ok(None)
        }
    }

    /// Reads an optional `u32`.
    pub fn option_u32(&mut self, field: &'static str) -> Result<Option<u32>, CodecError> {
        if self.option_tag(field)? {
            Ok(Some(self.u32(field)?))
        } else {
            Ok(None)
        }
    }

    /// Reads optional bytes (see [`Reader::bytes`]).
    pub fn option_bytes(
        &mut self,
        field: &'static str,
        max_len: u64,
    ) -> Result<Option<Bytes>, CodecError> {
        if self.option_tag(field)? {
            Ok(Some(self.bytes(field, max_len)?))
        } else {
            Ok(None)
        }
    }

    /// Reads a bool: `0` false, `1` true, anything else an error.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, CodecError> {
        let start = self.offset();
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(CodecError::new(
                start,
                CodecErrorKind::InvalidValue {
                    field,
                    value: u64::from(other),
                },
            )),
        }
    }

    /// Reads an `f64` from its IEEE-754 bits (a little-endian `u64`). Any
    /// bit pattern is accepted here; callers check the value's domain.
    pub fn f64(&mut self, field: &'static str) -> Result<f64, CodecError> {
        Ok(f64::from_bits(self.u64(field)?))
    }

    /// Succeeds only if every byte has been read.
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.error(CodecErrorKind::TrailingBytes(n))),
        }
    }
}

/// Appends primitives to a frame being built, tracking the frame offset.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut BytesMut,
    /// Index in `buf` of the frame's first byte.
    frame_start: usize,
    limits: Limits,
}

impl<'a> Writer<'a> {
    /// A writer appending to `buf`, whose frame starts at index
    /// `frame_start` of `buf`.
    pub fn new(buf: &'a mut BytesMut, frame_start: usize, limits: Limits) -> Self {
        Writer {
            buf,
            frame_start,
            limits,
        }
    }

    /// Frame offset of the next byte to write.
    pub fn offset(&self) -> usize {
        self.buf.len().saturating_sub(self.frame_start)
    }

    /// The limits this writer enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// An error of `kind` at the current offset.
    pub fn error(&self, kind: CodecErrorKind) -> CodecError {
        CodecError::new(self.offset(), kind)
    }

    /// Writes a `u8`.
    pub fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    /// Writes a little-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.put_u16_le(v);
    }

    /// Writes a little-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32_le(v);
    }

    /// Writes a little-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.put_u64_le(v);
    }

    /// Writes a little-endian `i64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.put_i64_le(v);
    }

    /// Writes a string of at most `max_len` bytes.
    pub fn string(
        &mut self,
        field: &'static str,
        s: &str,
        max_len: usize,
    ) -> Result<(), CodecError> {
        let max_len = max_len.min(usize::from(u16::MAX));
        if s.len() > max_len {
            return Err(self.error(CodecErrorKind::LengthTooLarge {
                field,
                len: s.len() as u64,
                max: max_len as u64,
            }));
        }
        self.u16(s.len() as u16);
        self.buf.put_slice(s.as_bytes());
        Ok(())
    }

    /// Writes a topic name, refusing one that fails [`validate_topic_name`].
    pub fn topic_name(&mut self, field: &'static str, name: &str) -> Result<(), CodecError> {
        validate_topic_name(name).map_err(|e| self.error(CodecErrorKind::InvalidTopicName(e)))?;
        self.string(field, name, MAX_TOPIC_NAME_LEN)
    }

    /// Writes a consumer group name, refusing one that breaks the topic
    /// naming rules ([`validate_topic_name`]).
    pub fn group_name(&mut self, field: &'static str, name: &str) -> Result<(), CodecError> {
        validate_topic_name(name).map_err(|e| self.error(CodecErrorKind::InvalidGroupName(e)))?;
        self.string(field, name, MAX_TOPIC_NAME_LEN)
    }

    /// Writes bytes with a `u32` length prefix.
    pub fn bytes(&mut self, field: &'static str, b: &[u8]) -> Result<(), CodecError> {
        let len = u32::try_from(b.len()).map_err(|_| {
            self.error(CodecErrorKind::LengthTooLarge {
                field,
                len: b.len() as u64,
                max: u64::from(u32::MAX),
            })
        })?;
        self.u32(len);
        self.buf.put_slice(b);
        Ok(())
    }

    /// Writes one record batch, refusing one above `max_batch_size`.
    pub fn record_batch(&mut self, b: &[u8]) -> Result<(), CodecError> {
        if b.len() as u64 > u64::from(self.limits.max_batch_size) {
            return Err(self.error(CodecErrorKind::BatchTooLarge {
                len: b.len() as u64,
                max: self.limits.max_batch_size,
            }));
        }
        self.bytes("record_batch", b)
    }

    /// Writes an array: `u32` count, then each element with `element`.
    /// With `non_empty`, an empty slice is an error.
    pub fn vec<T>(
        &mut self,
        field: &'static str,
        items: &[T],
        non_empty: bool,
        mut element: impl FnMut(&mut Writer<'a>, &T) -> Result<(), CodecError>,
    ) -> Result<(), CodecError> {
        if non_empty && items.is_empty() {
            return Err(self.error(CodecErrorKind::EmptyArray { field }));
        }
        let count = u32::try_from(items.len()).map_err(|_| {
            self.error(CodecErrorKind::LengthTooLarge {
                field,
                len: items.len() as u64,
                max: u64::from(u32::MAX),
            })
        })?;
        self.u32(count);
        for item in items {
            element(self, item)?;
        }
        Ok(())
    }

    /// Writes an optional `u64`.
    pub fn option_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }

    /// Writes an optional `i64`.
    pub fn option_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
            None => self.u8(0),
        }
    }

    /// Writes an optional `u32`.
    pub fn option_u32(&mut self, v: Option<u32>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u32(v);
            }
            None => self.u8(0),
        }
    }

    /// Writes optional bytes with a `u32` length prefix.
    pub fn option_bytes(
        &mut self,
        field: &'static str,
        b: Option<&[u8]>,
    ) -> Result<(), CodecError> {
        match b {
            Some(b) => {
                self.u8(1);
                self.bytes(field, b)
            }
            None => {
                self.u8(0);
                Ok(())
            }
        }
    }

    /// Writes a bool as `u8` 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// Writes an `f64` as its IEEE-754 bits in a little-endian `u64`.
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
}
