//! Steps 3 and 4 of [recovery](super): opening the active segment (the
//! last one) and, after an unclean stop, recovering its tail.
//!
//! The segment is trusted up to a `ResumePoint`: the checkpoint, if it
//! points into this segment and within the file, else the segment's start.
//! A fence checkpoint first cuts the file at the fence, unscanned. After a
//! clean stop nothing is scanned. Otherwise the bytes from the resume
//! point to the end are scanned batch by batch, index entries are rebuilt
//! for them, and the file is cut at the first torn or corrupt batch
//! (`Opener::recover_tail`). Zeros right at the resume point are the
//! zeros a writer with `preallocate` writes ahead of its appends
//! ([`crate::log::writer::commit`]), with nothing written since the
//! checkpoint: they are cut unscanned, so a log killed after its idle
//! checkpoint still opens without reading its tail.
//!
//! ## Invariants
//!
//! - Past a fence nothing is durable, however valid the page cache makes
//!   it look: it is cut, never scanned.
//! - Only proven damage (an impossible length, a torn batch, a failed CRC,
//!   an offset out of sequence) is cut. A read error proves nothing about
//!   the bytes: it fails the open and nothing is cut, since cutting would
//!   drop acknowledged batches and reuse their offsets.
//! - The index entries kept from the files are all of them after a clean
//!   stop, otherwise those that keep increasing and point before the
//!   resume point; the scan adds the rest by the rule appends use
//!   (`index_entry`), and the writer's cursor resumes from the last of
//!   them.
//!
//! ## Crash story
//!
//! What is kept is synced before the open goes on (when the checkpoint is
//! at the end of the file and nothing was cut, all of it was synced before
//! the checkpoint was written: no sync). A crash before the new
//! checkpoint of step 6 leaves the old one, and the next open recovers
//! from it again: the cuts made here are the cuts it would make.

use std::sync::Arc;

use pigeon_protocol::batch::{BatchHeader, HEADER_LEN, LOG_OVERHEAD};

use super::{Opener, scan_into};
use crate::io::{OpenMode, read_full_at};
use crate::log::checkpoint::Checkpoint;
use crate::log::config::LogConfig;
use crate::log::error::{LogError, LogResult};
use crate::log::index::{
    MappedIndex, OffsetIndex, TimeIndex, decode_offset_entry, decode_time_entry,
};
use crate::log::segment::{ScanStop, Segment};
use crate::log::writer::{Active, Cursor};

impl Opener<'_> {
    /// Opens and, unless the stop was clean, recovers the active segment.
    pub(super) fn active(
        &mut self,
        base: u64,
        checkpoint: Option<Checkpoint>,
        now_ms: i64,
    ) -> LogResult<Active> {
        let [log_path, _, _] = Segment::paths(self.dir, base);
        let io = |what: &str| {
            let what = format!("{what} {}", log_path.display());
            move |e| LogError::io(what, e)
        };
        let log = self
            .fs
            .open(&log_path, OpenMode::ReadWrite)
            .map_err(io("opening"))?;
        let mut file_len = log.len().map_err(io("reading the size of"))?;
        // Past a fence (an fsync failed there) nothing is durable, however
        // valid the page cache makes it look: cut it unscanned.
        let fenced = checkpoint.and_then(|c| c.fenced_end(base, file_len));
        if let Some(end) = fenced {
            tracing::warn!(segment = %log_path.display(), position = end, cut = file_len - end, "cutting the tail written after a failed fsync");
            log.set_len(end)
                .map_err(io("cutting the tail after a failed fsync of"))?;
        }
        let fenced_bytes = fenced.map_or(0, |end| std::mem::replace(&mut file_len, end) - end);
        let resume = self.resume_point(base, checkpoint, file_len);
        let (index, time_index) = self.open_active_indexes(base, resume)?;
        let segment = Segment::assemble(
            base,
            log_path.clone(),
            log,
            index,
            time_index,
            resume.position,
            resume.next_offset,
            resume.max_timestamp,
        );
        let mut cursor = resume_cursor(
            &segment,
            self.config,
            resume.position,
            resume.next_offset,
            resume.max_timestamp,
        );
        if resume.next_offset > self.producers_from && resume.position > 0 {
            self.walk_producers(&segment, 0, resume.position)?;
        }
        self.report.clean = resume.clean;
        let end = if resume.clean {
            resume.position
        } else {
            let cut_at_fence = fenced.is_some();
            self.recover_tail(
                &segment,
                &mut cursor,
                resume.position,
                file_len,
                cut_at_fence,
            )?
        };
        self.report.truncated_bytes += fenced_bytes;
        let segment_max = if end == 0 {
            i64::MIN
        } else {
            cursor.max_timestamp
        };
        segment.publish(end, cursor.next_offset, segment_max);
        let created_ms = if end == 0 {
            now_ms
        } else {
            first_timestamp(&segment)?.unwrap_or(now_ms)
        };
        Ok(Active {
            segment: Arc::new(segment),
            created_ms,
            write_pos: end,
            file_len: end,
            synced_pos: end,
            checkpoint_pos: resume.position,
            cursor,
        })
    }

    /// Where the active segment at `base`, `file_len` bytes long, is
    /// trusted up to: the checkpoint, if it points into this segment and
    /// within the file; else the segment's start.
    fn resume_point(
        &self,
        base: u64,
        checkpoint: Option<Checkpoint>,
        file_len: u64,
    ) -> ResumePoint {
        let at_checkpoint = checkpoint.filter(|c| c.segment_base == base && c.position <= file_len);
        let clean = at_checkpoint.is_some_and(|c| c.clean && c.position == file_len);
        match at_checkpoint {
            Some(c) => ResumePoint {
                position: c.position,
                next_offset: c.next_offset,
                max_timestamp: c.max_timestamp.max(self.max_timestamp),
                clean,
            },
            None => ResumePoint {
                position: 0,
                next_offset: base,
                max_timestamp: self.max_timestamp,
                clean,
            },
        }
    }

    /// Opens the active segment's indexes, keeping every entry after a
    /// clean stop; otherwise only the entries that keep increasing and
    /// point before the resume point (the rest are rebuilt by the scan).
    fn open_active_indexes(
        &self,
        base: u64,
        resume: ResumePoint,
    ) -> LogResult<(OffsetIndex, TimeIndex)> {
        let [log_path, index_path, time_path] = Segment::paths(self.dir, base);
        let io = |what: &str| {
            let what = format!("{what} {}", log_path.display());
            move |e| LogError::io(what, e)
        };
        let capacity = self.config.index_capacity();
        let start_relative = (resume.next_offset - base) as u32;
        let keep_offset = |e: &[u8; 8], prev: Option<&[u8; 8]>| {
            let (rel, pos) = decode_offset_entry(e);
            let increasing = prev.is_none_or(|p| {
                let (prel, ppos) = decode_offset_entry(p);
                rel > prel && pos > ppos
            });
            resume.clean || (increasing && u64::from(pos) < resume.position && rel < start_relative)
        };
        let keep_time = |e: &[u8; 12], prev: Option<&[u8; 12]>| {
            let (ts, rel) = decode_time_entry(e);
            let increasing = prev.is_none_or(|p| {
                let (pts, prel) = decode_time_entry(p);
                ts > pts && rel > prel
            });
            resume.clean || (increasing && rel < start_relative && ts <= resume.max_timestamp)
        };
        let index = OffsetIndex(
            MappedIndex::open_active(self.fs, &index_path, capacity, keep_offset)
                .map_err(io("opening the index of"))?,
        );
        let time_index = TimeIndex(
            MappedIndex::open_active(self.fs, &time_path, capacity, keep_time)
                .map_err(io("opening the time index of"))?,
        );
        Ok((index, time_index))
    }

    /// Scans the active segment from `from` to `file_len` after an unclean
    /// stop, cuts the file at the first torn or corrupt batch, and syncs
    /// what is kept, and the cut (also the one at a fence, `cut_at_fence`).
    /// With nothing after `from` (the checkpoint, whose bytes were synced
    /// before it was written) and no cut, there is nothing to sync, and
    /// nothing is. Returns the end of the last good batch.
    fn recover_tail(
        &mut self,
        segment: &Segment,
        cursor: &mut Cursor,
        from: u64,
        file_len: u64,
        cut_at_fence: bool,
    ) -> LogResult<u64> {
        let log_path = &segment.log_path;
        let io = |what: &str| {
            let what = format!("{what} {}", log_path.display());
            move |e| LogError::io(what, e)
        };
        // Zeros right at the resume point: the zeros written ahead of the
        // appends (see `writer::commit`), and nothing written into them
        // since the checkpoint (or only writes the stop lost). They are cut
        // unread, and the cut is not synced: a stop before the next sync
        // brings them back, and this open's cut with them; the next sync
        // (of the writes that go there) makes the file's new size durable.
        let zeros_at_resume = from < file_len
            && zero_length_field(segment, from).map_err(|error| {
                ScanStop::Io {
                    position: from,
                    error,
                }
                .into_error(log_path, "recovering its tail")
            })?;
        // Where the file is cut, what the cut is called if it fails, and
        // whether what is kept and the cut are synced.
        let (end, cutting, sync) = if zeros_at_resume {
            tracing::info!(segment = %log_path.display(), position = from, cut = file_len - from, "cutting the zeros written ahead of the appends");
            self.report.zero_bytes_cut = file_len - from;
            (
                from,
                "cutting the zeros written ahead of the appends off",
                cut_at_fence,
            )
        } else {
            let end = self.scan_tail(segment, cursor, from, file_len)?;
            (
                end,
                "truncating the torn tail of",
                from < file_len || cut_at_fence,
            )
        };
        if end < file_len {
            segment
                .file()
                .and_then(|file| file.set_len(end))
                .map_err(io(cutting))?;
        }
        if sync {
            segment
                .file()
                .and_then(|file| file.sync_data())
                .map_err(io("syncing the recovered tail of"))?;
        }
        Ok(end)
    }

    /// Scans the active segment's tail from `from` to `file_len`; returns
    /// where its batches end: the end of the file, the first torn or
    /// corrupt batch, or the first zeros after them (counted apart, and
    /// not scanned past their length field).
    fn scan_tail(
        &mut self,
        segment: &Segment,
        cursor: &mut Cursor,
        from: u64,
        file_len: u64,
    ) -> LogResult<u64> {
        let log_path = &segment.log_path;
        tracing::info!(segment = %log_path.display(), from = from, to = file_len, "recovering the log tail after an unclean stop");
        let scanned = scan_into(
            segment,
            self.config,
            cursor,
            from,
            file_len,
            &mut self.producers,
            self.producers_from,
        );
        let zeros_from = match &scanned {
            Err(ScanStop::Damaged { position, .. })
                if zero_length_field(segment, *position).unwrap_or(false) =>
            {
                Some(*position)
            }
            _ => None,
        };
        self.report.scanned_bytes += zeros_from.unwrap_or(file_len) - from;
        match scanned {
            Ok(end) => Ok(end),
            Err(ScanStop::Damaged { position, reason }) => {
                if zeros_from.is_some() {
                    tracing::info!(
                        segment = %log_path.display(), position, cut = file_len - position,
                        "cutting the zeros after the last batch (written ahead of the appends, or a write the stop lost)"
                    );
                    self.report.zero_bytes_cut = file_len - position;
                } else {
                    tracing::warn!(
                        segment = %log_path.display(), position, reason = %reason,
                        cut = file_len - position, "truncating a torn or corrupt tail"
                    );
                    self.report.truncated_bytes = file_len - position;
                }
                Ok(position)
            }
            // A read error proves nothing about the bytes: cutting them
            // would drop acknowledged batches and reuse their offsets.
            Err(stop) => Err(stop.into_error(log_path, "recovering its tail")),
        }
    }
}

/// Where recovery of the active segment starts (see
/// [`Opener::resume_point`]).
#[derive(Debug, Clone, Copy)]
struct ResumePoint {
    /// Byte position: the bytes before it are trusted.
    position: u64,
    /// Offset of the next batch at `position`.
    next_offset: u64,
    /// Largest timestamp before `position` (this segment and the earlier
    /// ones).
    max_timestamp: i64,
    /// The stop was clean: the checkpoint is at the end of the file, and
    /// nothing is scanned.
    clean: bool,
}

/// The writer's cursor at `position` of a segment whose kept index entries
/// are already loaded.
fn resume_cursor(
    segment: &Segment,
    config: &LogConfig,
    position: u64,
    next_offset: u64,
    max_ts: i64,
) -> Cursor {
    let last_entry_pos = segment
        .index
        .0
        .len()
        .checked_sub(1)
        .map_or(0, |i| u64::from(segment.index.entry(i).1));
    Cursor {
        next_offset,
        max_timestamp: max_ts,
        bytes_since_index: position
            .saturating_sub(last_entry_pos)
            .min(u64::from(config.index_interval_bytes)),
        last_indexed_timestamp: segment.time_index.last().map_or(i64::MIN, |(ts, _)| ts),
        last_batch_relative: (next_offset > segment.base_offset)
            .then(|| (next_offset - 1 - segment.base_offset) as u32),
    }
}

/// Whether the batch length field at `position` (the first
/// [`LOG_OVERHEAD`] bytes there) is all zeros: no batch starts there, and
/// an active segment's tail from there is zeros written ahead of the
/// appends or a write that never reached the disk.
fn zero_length_field(segment: &Segment, position: u64) -> std::io::Result<bool> {
    let mut buf = [0u8; LOG_OVERHEAD];
    let read = segment
        .file()
        .and_then(|file| read_full_at(file.as_ref(), &mut buf, position))?;
    Ok(read == LOG_OVERHEAD && buf.iter().all(|&b| b == 0))
}

/// Timestamp of a segment's first batch (`None` if it has no whole
/// header); a read error is an error.
fn first_timestamp(segment: &Segment) -> LogResult<Option<i64>> {
    let mut buf = [0u8; HEADER_LEN];
    let read = segment
        .file()
        .and_then(|file| read_full_at(file.as_ref(), &mut buf, 0))
        .map_err(|e| {
            LogError::io(
                format!("reading the first batch of {}", segment.log_path.display()),
                e,
            )
        })?;
    Ok((read == HEADER_LEN)
        .then(|| BatchHeader::parse(&buf).ok().map(|h| h.first_timestamp))
        .flatten())
}
