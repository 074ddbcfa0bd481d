//! One page of a redrive: the next DLQ records from a cursor, those of the
//! group kept (up to a count and about a byte size), the others counted as
//! skipped, and where the page ends.

use pigeon_protocol::batch::Record;

use super::super::dlq::header_text;
use super::super::source::scan;
use crate::log::LogReader;

/// Most messages moved per page (one source batch, one intent).
pub const PAGE_MESSAGES: u64 = 256;
/// About the most bytes of messages per page (at least one message).
pub const PAGE_BYTES: usize = 1 << 20;
/// Most DLQ records looked at per page, moved or skipped: bounds the time
/// between two checks of the stop in a DLQ full of other groups' records.
pub const PAGE_SCAN: u64 = 4096;

/// Which DLQ records belong to the group being redriven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveFilter {
    /// `pigeon.dlq.source-topic` must be this.
    pub source_topic: String,
    /// `pigeon.dlq.group` must be this.
    pub group: String,
}

impl RedriveFilter {
    /// Whether `record` is a copy the group parked from its source topic
    /// (any incarnation of either: a copy outlives them).
    pub fn matches(&self, record: &Record) -> bool {
        header_text(record, "pigeon.dlq.source-topic") == Some(self.source_topic.as_str())
            && header_text(record, "pigeon.dlq.group") == Some(self.group.as_str())
    }
}

/// A page read from the DLQ.
#[derive(Debug)]
pub struct Page {
    /// The group's records, in offset order.
    pub records: Vec<Record>,
    /// Records looked at and left (not the group's).
    pub skipped: u64,
    /// Offset after the last record looked at: the cursor once the page is
    /// done.
    pub to: u64,
}

/// The page of `reader` from `from` (before `end`) with at most `want` of
/// the group's records (`want` ≥ 1) and about [`PAGE_BYTES`] of them.
pub fn read(
    reader: &LogReader,
    from: u64,
    end: u64,
    want: u64,
    filter: &RedriveFilter,
) -> Result<Page, String> {
    let mut page = Page {
        records: Vec::new(),
        skipped: 0,
        to: from.max(reader.start_offset()),
    };
    let (mut bytes, mut looked) = (0usize, 0u64);
    scan(reader, from, end, PAGE_BYTES, |record| {
        page.to = record.offset + 1;
        looked += 1;
        if filter.matches(&record) {
            bytes += record.value.len() + record.key.as_ref().map_or(0, |k| k.len());
            page.records.push(record);
        } else {
            page.skipped += 1;
        }
        (page.records.len() as u64) < want && bytes < PAGE_BYTES && looked < PAGE_SCAN
    })
    .map_err(|e| format!("reading the dead-letter topic: {e}"))?;
    Ok(page)
}
