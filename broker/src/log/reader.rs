//! [`LogReader`]: reads of a partition log by offset and by time, from any
//! thread, concurrently with the writer.
//!
//! A read takes a snapshot of the segment list (a reference-counted vector,
//! swapped whole by roll and retention), then works on files with positioned
//! reads: it never waits for the writer, which only holds the list's lock to
//! swap a pointer. Every batch served is checked (length, CRC, offset
//! continuity) first: a damaged batch is never served; the read fails with
//! an error naming the segment file and byte position, and every other
//! range of the log keeps working. Batch lengths are held to the format's
//! bound ([`BATCH_BYTES_BOUND`]), not to the current `max_batch_bytes`,
//! which limits new appends only.
//!
//! A read by offset is one pass in the common case: one read from the
//! index entry at or before the offset to the last batch boundary the
//! index knows within `max_bytes` (or the segment's end), into a buffer's
//! uninitialised capacity; the headers in it lead to the batch holding the
//! offset, and the checked batches from there are served out of the same
//! buffer. Each byte is read once, and no byte of a batch that does not
//! fit is read. When those bytes do not lead to the batch (a damaged
//! entry, a bad header), the careful path below searches and reports. A
//! read of a cold sealed segment leaves it out of the page cache (see
//! [`Segment::read_range`]).
//!
//! Index entries only say where to start looking, and a damaged one must
//! not make a read skip records: the batch a read by offset serves first
//! must hold the offset asked for (start at or before it), and the batch a
//! time lookup starts from must be older than the time asked for (then,
//! as timestamps never go back, so is everything before it). When not, the
//! segment is searched from its start.

use std::sync::Arc;

use bytes::Bytes;
use pigeon_protocol::batch::{BatchHeader, HEADER_LEN, records_of, verify_stored};

use super::config::BATCH_BYTES_BOUND;
use super::error::{LogError, LogResult};
use super::segment::Segment;
use super::writer::Shared;
use crate::io::read_full_at;

/// Raw batches read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole record batches, back to back, exactly as stored. The first one
    /// contains the offset asked for (it may start before it).
    pub bytes: Bytes,
    /// The log start offset (earliest readable).
    pub log_start_offset: u64,
    /// Offset after the last readable record (the high watermark).
    pub high_watermark: u64,
}

/// Reads a partition log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// Bytes read per step while looking for a batch's header.
const LOCATE_CHUNK: usize = 64 * 1024;

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>) -> LogReader {
        LogReader { shared }
    }

    /// Why the partition refuses writes, if it does (an fsync or a seal
    /// failed; until the broker restarts).
    pub fn read_only(&self) -> Option<String> {
        self.shared.read_only.read().clone()
    }

    /// What the log's writer counts (appends, fsyncs, commits).
    pub fn stats(&self) -> &crate::log::LogStats {
        &self.shared.stats
    }

    /// Earliest readable offset.
    pub fn start_offset(&self) -> u64 {
        self.shared.snapshot().first().map_or(0, |s| s.base_offset)
    }

    /// Offset after the last readable record.
    pub fn end_offset(&self) -> u64 {
        self.shared.snapshot().last().map_or(0, |s| s.next_offset())
    }

    /// Readable bytes over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared.snapshot().iter().map(|s| s.size()).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.snapshot().len()
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes`
    /// (at least one batch, however large, so a reader always progresses).
    /// Empty at the end of the log.
    pub fn read(&self, offset: u64, max_bytes: usize) -> LogResult<ReadResult> {
        let segments = self.shared.snapshot();
        let (start, end) = bounds(&segments);
        let result = |bytes: Bytes| ReadResult {
            bytes,
            log_start_offset: start,
            high_watermark: end,
        };
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                earliest: start,
                next: end,
            });
        }
        if offset == end {
            return Ok(result(Bytes::new()));
        }
        let at = segment_for(&segments, offset);
        let segment = &segments[at];
        if offset >= segment.next_offset()
            && let Some(next) = segments.get(at + 1)
        {
            return Err(segment.corrupt(
                segment.size(),
                format!(
                    "offset {offset} is missing: this segment ends at offset {} and the next one begins at {}; read from {} on",
                    segment.next_offset(),
                    next.base_offset,
                    next.base_offset
                ),
            ));
        }
        let size = segment.size();
        if let Some(bytes) = self.read_from_entry(segment, offset, size, max_bytes)? {
            return Ok(result(bytes));
        }
        let (position, first) = self.batch_holding(segment, offset, size)?;
        let bytes = self.read_batches(segment, position, size, &first, max_bytes)?;
        Ok(result(bytes))
    }

    /// The common read, in one pass: one read from the index entry at or
    /// before `offset` to the last batch boundary the index knows within
    /// `max_bytes` of it (or the segment's end), walking the headers in
    /// that buffer to the batch holding `offset` and serving the checked
    /// whole batches from there, out of the same buffer. Each byte is read
    /// once, into uninitialised capacity; at most the batches between the
    /// entry and `offset` (under one index interval) are read and not
    /// served. `None` when the bytes read do not lead to that batch (a
    /// damaged entry, a bad header, or the batch lies past the window):
    /// the careful path ([`Self::batch_holding`]) then searches and
    /// reports.
    fn read_from_entry(
        &self,
        segment: &Segment,
        offset: u64,
        size: u64,
        max_bytes: usize,
    ) -> LogResult<Option<Bytes>> {
        let (_, hint) = segment.index.lookup((offset - segment.base_offset) as u32);
        let start = u64::from(hint);
        let limit = start.saturating_add(max_bytes as u64);
        let end = if size <= limit {
            size
        } else {
            segment
                .index
                .position_at_or_before(limit)
                .filter(|&p| p > start)
                .unwrap_or(limit)
                .min(limit)
        };
        if start >= end {
            return Ok(None);
        }
        let mut buf = Vec::new();
        segment.read_range(&mut buf, start, end)?;
        let Some((at, first)) = walk_to(&buf, offset) else {
            return Ok(None);
        };
        let first_end = at + first.total_len();
        if first_end > buf.len() {
            // At least one batch, however large.
            let first_end = start + first_end as u64;
            if first_end > size {
                return Ok(None);
            }
            let read_to = start + buf.len() as u64;
            segment.read_range(&mut buf, read_to, first_end)?;
        }
        let served = checked_batches(segment, start + at as u64, &buf[at..], first.base_offset)?;
        Ok(Some(Bytes::from(buf).slice(at..at + served)))
    }

    /// The batch of `segment` holding `offset`: its position and header.
    /// The offset index says where to start looking; the batch found must
    /// start at or before `offset`. If it starts after (or none holds it),
    /// the index entry pointed past the offset (a damaged entry), and the
    /// segment is searched from its start instead: a read never skips
    /// records.
    fn batch_holding(
        &self,
        segment: &Segment,
        offset: u64,
        size: u64,
    ) -> LogResult<(u64, BatchHeader)> {
        let (_, hint) = segment.index.lookup((offset - segment.base_offset) as u32);
        let holds = move |h: &BatchHeader| h.next_offset() > offset;
        let mut found = self.locate(segment, u64::from(hint), size, holds)?;
        if hint > 0 && found.is_none_or(|(_, h)| h.base_offset > offset) {
            tracing::warn!(
                segment = %segment.log_path.display(), offset, entry_position = hint,
                "an index entry points past the offset it was used for; searching the segment from its start"
            );
            found = self.locate(segment, 0, size, holds)?;
        }
        match found {
            Some((position, header)) if header.base_offset <= offset => Ok((position, header)),
            Some((position, header)) => Err(segment.corrupt(
                position,
                format!(
                    "offset {offset} is missing: the batch here starts at offset {}",
                    header.base_offset
                ),
            )),
            None => Err(segment.corrupt(
                size,
                format!("offset {offset} is not in the segment it belongs to"),
            )),
        }
    }

    /// The first offset whose timestamp is at or after `timestamp`; `None`
    /// when every record is older (the next record will be the first).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> LogResult<Option<u64>> {
        Ok(self
            .record_at_or_after(timestamp)?
            .map(|(offset, _)| offset))
    }

    /// The first record at or after `timestamp`: its offset and timestamp.
    pub fn record_at_or_after(&self, timestamp: i64) -> LogResult<Option<(u64, i64)>> {
        let segments = self.shared.snapshot();
        let Some(segment) = segments.iter().find(|s| s.max_timestamp() >= timestamp) else {
            return Ok(None);
        };
        let relative = segment.time_index.lookup(timestamp);
        let (_, hint) = segment.index.lookup(relative);
        let size = segment.size();
        let reached = move |h: &BatchHeader| h.max_timestamp >= timestamp;
        let mut found = self.locate(segment, u64::from(hint), size, reached)?;
        // The entries say that the batch at `hint` is older than `timestamp`,
        // and timestamps never go back, so every batch before it is older
        // too. If that very batch is not older (or no batch is new enough,
        // although the segment's largest timestamp is), an entry is damaged:
        // search the segment from its start rather than skip records.
        if hint > 0 && found.is_none_or(|(at, _)| at == u64::from(hint)) {
            tracing::warn!(
                segment = %segment.log_path.display(), timestamp, entry_position = hint,
                "a time index entry points past the records it was used for; searching the segment from its start"
            );
            found = self.locate(segment, 0, size, reached)?;
        }
        let Some((position, header)) = found else {
            return Ok(None);
        };
        let bytes = Bytes::from(segment.read_exact(position, header.total_len())?);
        verify_stored(&bytes, BATCH_BYTES_BOUND as usize)
            .map_err(|e| segment.corrupt(position, e.to_string()))?;
        let records = records_of(bytes).map_err(|e| segment.corrupt(position, e.to_string()))?;
        for record in records {
            let record = record.map_err(|e| segment.corrupt(position, e.to_string()))?;
            if record.timestamp >= timestamp {
                return Ok(Some((record.offset, record.timestamp)));
            }
        }
        Err(segment.corrupt(
            position,
            "batch's max timestamp is above every record's timestamp",
        ))
    }

    /// Walks batch headers from `position` to the first one `found` accepts.
    fn locate(
        &self,
        segment: &Segment,
        mut position: u64,
        size: u64,
        found: impl Fn(&BatchHeader) -> bool,
    ) -> LogResult<Option<(u64, BatchHeader)>> {
        let io = |e| LogError::io(format!("reading {}", segment.log_path.display()), e);
        let file = segment.file().map_err(io)?;
        let mut buf = vec![0u8; LOCATE_CHUNK];
        while position < size {
            let want = ((size - position) as usize).min(LOCATE_CHUNK);
            let read = read_full_at(file.as_ref(), &mut buf[..want], position).map_err(io)?;
            if read < HEADER_LEN {
                return Err(segment.corrupt(position, "file ends inside a batch header"));
            }
            let mut at = 0usize;
            while at + HEADER_LEN <= read {
                let header = BatchHeader::parse(&buf[at..read])
                    .map_err(|e| segment.corrupt(position + at as u64, e.to_string()))?;
                let total = header.total_len();
                if total < HEADER_LEN || total > BATCH_BYTES_BOUND as usize {
                    return Err(segment.corrupt(
                        position + at as u64,
                        format!("impossible batch length {total}"),
                    ));
                }
                if found(&header) {
                    return Ok(Some((position + at as u64, header)));
                }
                at += total;
            }
            position += at as u64;
        }
        Ok(None)
    }

    /// Reads and checks whole batches starting with `first` at `position`.
    fn read_batches(
        &self,
        segment: &Segment,
        position: u64,
        size: u64,
        first: &BatchHeader,
        max_bytes: usize,
    ) -> LogResult<Bytes> {
        let want = ((size - position) as usize).min(max_bytes.max(first.total_len()));
        let mut buf = Vec::new();
        segment.read_range(&mut buf, position, position + want as u64)?;
        let served = checked_batches(segment, position, &buf, first.base_offset)?;
        buf.truncate(served);
        Ok(Bytes::from(buf))
    }
}

/// The batch holding `offset` among the whole headers at the start of
/// `buf`: its index in `buf` and header. `None` when a header is damaged,
/// the first batch starts after `offset` (a damaged index entry), or the
/// batch is not in `buf`.
fn walk_to(buf: &[u8], offset: u64) -> Option<(usize, BatchHeader)> {
    let mut at = 0usize;
    while at + HEADER_LEN <= buf.len() {
        let header = BatchHeader::parse(&buf[at..]).ok()?;
        let total = header.total_len();
        if total < HEADER_LEN || total > BATCH_BYTES_BOUND as usize || header.base_offset > offset {
            return None;
        }
        if header.next_offset() > offset {
            return Some((at, header));
        }
        at += total;
    }
    None
}

/// Bytes of the whole, checked batches at the start of `buf` (read from
/// `position` of `segment`), the first of which has base offset
/// `expected`: each passes its length, CRC and offset-continuity check. A
/// damaged first batch is an error naming the segment and position; a
/// damaged later one ends what is served (the next read starts at it and
/// reports it). A partial batch at the end is not served.
fn checked_batches(
    segment: &Segment,
    position: u64,
    buf: &[u8],
    mut expected: u64,
) -> LogResult<usize> {
    let mut at = 0usize;
    while at + HEADER_LEN <= buf.len() {
        let Some((_, length)) = pigeon_protocol::batch::read_prefix(&buf[at..]) else {
            break;
        };
        let total = 12 + length as usize;
        if at + total > buf.len() {
            break;
        }
        let checked = verify_stored(&buf[at..at + total], BATCH_BYTES_BOUND as usize)
            .map_err(|e| e.to_string())
            .and_then(|h| match h.base_offset == expected {
                true => Ok(h),
                false => Err(format!(
                    "batch has base offset {} where {expected} was expected",
                    h.base_offset
                )),
            });
        match checked {
            Ok(header) => expected = header.next_offset(),
            Err(_) if at > 0 => break,
            Err(reason) => return Err(segment.corrupt(position + at as u64, reason)),
        }
        at += total;
    }
    Ok(at)
}

/// `(start, end)` offsets of a segment list.
fn bounds(segments: &[Arc<Segment>]) -> (u64, u64) {
    let start = segments.first().map_or(0, |s| s.base_offset);
    let end = segments.last().map_or(0, |s| s.next_offset());
    (start, end)
}

/// Index of the segment holding `offset` (which is within the bounds).
fn segment_for(segments: &[Arc<Segment>], offset: u64) -> usize {
    let after = segments.partition_point(|s| s.base_offset <= offset);
    after.saturating_sub(1)
}
