//! [`TopicSource`]: the group engine's view of its source topic; and the
//! reads the groups make of topics: records at given offsets
//! ([`read_records`]), a paged scan ([`scan`]), and [`blocking`], which
//! keeps those file reads from stalling the runtime's other tasks.

use std::sync::Arc;

use pigeon_protocol::batch::{Record, records_of_batches};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::delivery::engine::SourceReader;
use crate::topics::Topic;

/// Reads a topic's partitions for a group.
pub struct TopicSource(pub Arc<Topic>);

impl SourceReader for TopicSource {
    fn bounds(&self, partition: usize) -> (u64, u64) {
        self.0.partitions.get(partition).map_or((0, 0), |log| {
            let reader = log.reader();
            (reader.start_offset(), reader.end_offset())
        })
    }

    fn records(&self, partition: usize, offsets: &[u64]) -> Vec<Record> {
        let Some(log) = self.0.partitions.get(partition) else {
            return Vec::new();
        };
        read_records(log.reader(), offsets)
    }

    fn end_watches(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        self.0
            .partitions
            .iter()
            .map(|log| log.watch_end())
            .collect()
    }
}

/// The records at `offsets` (sorted) of a log; offsets that cannot be read
/// (deleted, corrupt) are left out and logged.
pub fn read_records(reader: &crate::log::LogReader, offsets: &[u64]) -> Vec<Record> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut wanted = offsets.iter().copied().peekable();
    while let Some(&next) = wanted.peek() {
        // Read about what the wanted offsets need (they are mostly
        // consecutive), not a fixed megabyte.
        let left = offsets.len() - out.len();
        let budget = (left * 192).clamp(16 << 10, 1 << 20);
        let read = match reader.read(next, budget) {
            Ok(read) if !read.bytes.is_empty() => read,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(offset = next, error = %e, "cannot read a record for delivery");
                wanted.next();
                continue;
            }
        };
        // Records are zero-copy slices of the one buffer the read filled
        // (every batch of it passed its CRC check in the read).
        let mut last = next;
        for record in records_of_batches(read.bytes).map_while(Result::ok) {
            if wanted.peek().is_none() {
                break;
            }
            last = last.max(record.offset);
            while wanted.peek().is_some_and(|w| *w < record.offset) {
                wanted.next();
            }
            if wanted.peek() == Some(&record.offset) {
                wanted.next();
                out.push(record);
            }
        }
        // Skip anything the read covered but did not contain.
        while wanted.peek().is_some_and(|w| *w <= last) {
            wanted.next();
        }
    }
    out
}

/// Visits the records of `reader` from `from` (or the log start, if later)
/// up to `end` (exclusive), in offset order, reading about `page_bytes` at a
/// time (at least one batch), until `visit` returns `false`. Memory: one
/// read at a time. Fails on a read error or a damaged batch, naming the
/// offset (a scan never skips what it cannot read).
pub fn scan(
    reader: &crate::log::LogReader,
    from: u64,
    end: u64,
    page_bytes: usize,
    visit: impl FnMut(Record) -> bool,
) -> Result<(), String> {
    scan_at_most(reader, from, end, page_bytes, usize::MAX, visit).map(|_| ())
}

/// What [`scan_at_most`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes of batches read from the log.
    pub bytes: usize,
    /// `Some(offset)`: the byte bound stopped the scan before `offset`
    /// (which is below `end`); `None`: it reached `end`, the log's end, or
    /// the visitor stopped it.
    pub stopped_at: Option<u64>,
}

/// Like [`scan`], reading at most about `max_bytes` of the log: it stops
/// once that many have been read (a page is read up to what is left of the
/// bound, but at least one whole batch, so one batch may pass it).
pub fn scan_at_most(
    reader: &crate::log::LogReader,
    from: u64,
    end: u64,
    page_bytes: usize,
    max_bytes: usize,
    mut visit: impl FnMut(Record) -> bool,
) -> Result<Scanned, String> {
    let mut offset = from.max(reader.start_offset());
    let mut scanned = Scanned {
        bytes: 0,
        stopped_at: None,
    };
    while offset < end {
        if scanned.bytes >= max_bytes {
            scanned.stopped_at = Some(offset);
            return Ok(scanned);
        }
        let page = page_bytes.min(max_bytes - scanned.bytes).max(1);
        let read = reader
            .read(offset, page)
            .map_err(|e| format!("reading offset {offset}: {e}"))?;
        scanned.bytes = scanned.bytes.saturating_add(read.bytes.len());
        if read.bytes.is_empty() {
            return Ok(scanned);
        }
        let before = offset;
        for record in records_of_batches(read.bytes) {
            let record = record.map_err(|e| format!("reading offset {offset}: {e}"))?;
            if record.offset < offset {
                continue;
            }
            if record.offset >= end {
                return Ok(scanned);
            }
            offset = record.offset + 1;
            if !visit(record) {
                return Ok(scanned);
            }
        }
        if offset == before {
            return Err(format!(
                "reading offset {offset}: the read made no progress"
            ));
        }
    }
    Ok(scanned)
}

/// Runs `f` (blocking file reads or writes) on the current worker without
/// stalling the runtime's other tasks (`block_in_place`) where the runtime
/// allows it — a multi-threaded one, as the broker's — else in place.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
