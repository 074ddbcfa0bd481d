//! Opening a partition log, and recovering it after an unclean stop.
//!
//! 1. Remove leftovers: `*.tmp` files (an interrupted atomic write or index
//!    rebuild) and index files whose `.log` is gone (an interrupted
//!    retention delete).
//! 2. Read the checkpoint. Segments before the checkpoint's segment are
//!    sealed and were fsynced before it was written: open them with their
//!    indexes after a bounded check (the first and last entries of each
//!    index must be non-zero, increasing and inside the segment; the batches
//!    after the last offset entry, about one index interval, are read and
//!    verified, and give the segment's end offset and its largest timestamp,
//!    which therefore never comes from an index entry). Indexes that are
//!    missing, not a whole number of entries, or fail the check are rebuilt
//!    by scanning that one segment, into `*.tmp` files that are synced and
//!    then renamed over the old ones, so a rebuild cut short never leaves a
//!    partial index under the real name.
//! 3. Clean shutdown (checkpoint says clean and matches the last segment's
//!    size): open the active segment as it is. Nothing is scanned.
//!    A fence checkpoint (an fsync of the active segment failed, see
//!    [`super::checkpoint`]) first cuts that segment at the fence, unscanned:
//!    the page cache may hold bytes there that never reached the disk.
//! 4. Otherwise scan from the checkpoint's position to the end of the last
//!    segment (and through any segment sealed after the checkpoint): every
//!    batch's length, CRC and offset continuity is checked. The active
//!    segment is cut at the first bad batch (logged with its byte position);
//!    a bad batch inside a sealed segment is left in place, logged, and
//!    reported by reads that reach it. Index entries written after the
//!    checkpoint are dropped and rebuilt from the scan. Only proven damage
//!    (an impossible length, a torn batch, a failed CRC, an offset out of
//!    sequence) is cut: a read error fails the open of the partition with
//!    an error naming the file and position, and nothing is cut. Producer
//!    state remembered past the recovered end (the snapshot may be newer
//!    than what survived) is forgotten.
//! 5. Check that each segment ends where the next begins (the end offsets
//!    come from the checks and scans above, so this costs nothing more). An
//!    overlap, two copies of the same offsets, fails the open
//!    ([`LogError::Overlap`]): neither copy is served. A gap is logged, and
//!    reads of the missing offsets fail with an error naming them.
//! 6. Sync what was recovered and write a new (unclean) checkpoint, so a
//!    crash right after start does not scan the same bytes again.
//!
//! Before step 1 the partition directory (and any missing parent) is
//! created if it is missing, durably (each new name is synced in its parent
//! before anything is written into it); a directory that holds no segment
//! yet has its parent synced again, as its creator may have died before
//! doing so.
//!
//! The work is proportional to the bytes written since the last checkpoint
//! (plus about one index interval per sealed segment), never to the size of
//! the log. The exceptions are damage: an index that fails its check is
//! rebuilt from its segment, and a missing or damaged producer snapshot is
//! rebuilt by walking every segment whose newest batch is within the
//! producer expiry (so that no live producer is forgotten and a retry is
//! never appended twice).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pigeon_protocol::batch::{BatchHeader, HEADER_LEN};

use super::checkpoint::Checkpoint;
use super::clock::Clock;
use super::config::LogConfig;
use super::error::{LogError, LogResult};
use super::index::{MappedIndex, OffsetIndex, TimeIndex, decode_offset_entry, decode_time_entry};
use super::producers::{ProducerTable, SNAPSHOT_FILE};
use super::segment::{BatchScanner, ScanStop, Segment, parse_file_name};
use super::writer::append::{index_entry, push_entry};
use super::writer::{Active, Cursor, Log};
use crate::io::{
    FileSystem, OpenMode, create_dir_durably, existing_ancestor, read_all, read_full_at,
    sync_parent, temp_path,
};

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering it if the
    /// last stop was not clean.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> LogResult<Log> {
        config.validate().map_err(|reason| {
            LogError::io("checking the log settings", std::io::Error::other(reason))
        })?;
        let io = |what: &str| {
            let what = format!("{what} in {}", dir.display());
            move |e| LogError::io(what, e)
        };
        // Durably: each new directory's name is synced in its parent before
        // any append into it is acknowledged.
        let existing = existing_ancestor(fs.as_ref(), dir);
        let created = create_dir_durably(fs.as_ref(), dir, existing)
            .map_err(io("creating the partition directory"))?;
        let bases = clean_leftovers(fs.as_ref(), dir).map_err(io("listing segments"))?;
        if bases.is_empty() && !created {
            // No segment yet: a process may have died between creating
            // the directory and syncing its parent.
            sync_parent(fs.as_ref(), dir)
                .map_err(io("syncing the parent of the partition directory"))?;
        }
        let checkpoint =
            Checkpoint::read(fs.as_ref(), dir).map_err(io("reading the checkpoint"))?;
        let (producers_from, producers) = read_producer_snapshot(fs.as_ref(), dir)
            .map_err(io("reading the producer snapshot"))?
            .unwrap_or_default();
        let mut opener = Opener {
            fs: fs.as_ref(),
            dir,
            config: &config,
            max_timestamp: i64::MIN,
            report: RecoveryReport::default(),
            producers,
            producers_from,
            producer_window_start: clock
                .now_ms()
                .saturating_sub(i64::try_from(config.producer_expiry_ms).unwrap_or(i64::MAX)),
        };
        let (segments, active) = match bases.split_last() {
            None => opener.fresh(checkpoint.map_or(0, |c| c.next_offset))?,
            Some((&last, sealed)) => {
                let mut segments = Vec::with_capacity(bases.len());
                for (i, &base) in sealed.iter().enumerate() {
                    let next_base = bases[i + 1];
                    let trusted = checkpoint.is_some_and(|c| base < c.segment_base);
                    segments.push(Arc::new(opener.sealed(base, next_base, trusted)?));
                }
                let active = opener.active(last, checkpoint, clock.now_ms())?;
                segments.push(active.segment.clone());
                (segments, active)
            }
        };
        for pair in segments.windows(2) {
            check_continuity(&pair[0], &pair[1])?;
        }
        let report = opener.report;
        let mut producers = std::mem::take(&mut opener.producers);
        // The snapshot may remember batches that recovery has just cut (or
        // that never reached the disk): a retry of one must be appended
        // again, not answered with offsets the log does not hold.
        producers.forget_from(active.cursor.next_offset);
        let mut log = Log::assemble(dir, config, fs.clone(), clock, segments, active);
        log.recovery = report;
        log.producers = producers;
        // A fence must be replaced before the log takes appends: left in
        // place, it would cut them at the next start.
        log.fence_pending = checkpoint.is_some_and(|c| c.fence);
        log.write_checkpoint(false);
        Ok(log)
    }
}

/// Removes leftovers and returns the base offsets of the `.log` files, sorted.
fn clean_leftovers(fs: &dyn FileSystem, dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut logs = BTreeSet::new();
    let mut indexes = Vec::new();
    for path in fs.read_dir(dir)? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            fs.remove_file(&path)?;
            continue;
        }
        match parse_file_name(name) {
            Some((base, "log")) => {
                logs.insert(base);
            }
            Some((base, "index" | "timeindex")) => indexes.push((base, path)),
            _ => {}
        }
    }
    for (base, path) in indexes {
        if !logs.contains(&base) {
            tracing::info!(path = %path.display(), "removing an index file whose segment was deleted");
            fs.remove_file(&path)?;
        }
    }
    Ok(logs.into_iter().collect())
}

/// Opens segments one by one, carrying the largest timestamp seen.
struct Opener<'a> {
    fs: &'a dyn FileSystem,
    dir: &'a Path,
    config: &'a LogConfig,
    max_timestamp: i64,
    report: RecoveryReport,
    /// Producer state being rebuilt: the snapshot, plus every batch at or
    /// after `producers_from` that recovery walks.
    producers: ProducerTable,
    producers_from: u64,
    /// Producers whose last batch is older than this have expired: a
    /// trusted sealed segment with no newer batch is not walked for them.
    producer_window_start: i64,
}

/// What opening a log had to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The last stop was clean: nothing was scanned.
    pub clean: bool,
    /// Bytes of log scanned and checked.
    pub scanned_bytes: u64,
    /// Bytes cut off the end of the active segment (torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Sealed segments whose indexes were rebuilt.
    pub rebuilt_indexes: usize,
    /// Bytes read to check the end of trusted sealed segments against their
    /// indexes: about one index interval (plus the last batch) per segment.
    pub checked_tail_bytes: u64,
}

impl Opener<'_> {
    fn io_error(&self, what: String) -> impl FnOnce(std::io::Error) -> LogError {
        move |e| LogError::io(what, e)
    }

    /// A new log with one empty segment at `base`.
    fn fresh(&mut self, base: u64) -> LogResult<(Vec<Arc<Segment>>, Active)> {
        let segment = Segment::create(self.fs, self.dir, base, self.config.index_capacity())
            .and_then(|s| self.fs.sync_dir(self.dir).map(|()| s))
            .map_err(self.io_error(format!(
                "creating the first segment in {}",
                self.dir.display()
            )))?;
        let segment = Arc::new(segment);
        let active = Active {
            segment: segment.clone(),
            created_ms: 0,
            write_pos: 0,
            synced_pos: 0,
            checkpoint_pos: 0,
            cursor: empty_cursor(base, i64::MIN),
        };
        Ok((vec![segment], active))
    }

    /// Opens a sealed segment. `trusted`: it precedes the checkpoint, so its
    /// indexes are used as they are if they pass [`Opener::check_trusted`];
    /// otherwise (or if they fail) it is scanned and its indexes rebuilt.
    fn sealed(&mut self, base: u64, next_base: u64, trusted: bool) -> LogResult<Segment> {
        let [log_path, _, _] = Segment::paths(self.dir, base);
        let log = self
            .fs
            .open(&log_path, OpenMode::ReadWrite)
            .map_err(self.io_error(format!("opening {}", log_path.display())))?;
        let size = log
            .len()
            .map_err(self.io_error(format!("reading the size of {}", log_path.display())))?;
        let checked = match trusted {
            true => self.check_trusted(base, &log_path, log.as_ref(), size)?,
            false => None,
        };
        let (checked, segment) = match checked {
            Some((index, time_index, end)) => (
                true,
                Segment::assemble(
                    base,
                    log_path,
                    log,
                    index,
                    time_index,
                    size,
                    end.next_offset,
                    end.max_timestamp,
                ),
            ),
            None => {
                if trusted {
                    tracing::warn!(segment = %log_path.display(), "index files missing or damaged; rebuilding them");
                }
                // The rebuild's scan replays the producer state too.
                (
                    false,
                    self.rebuild_sealed(base, next_base, log_path, log, size)?,
                )
            }
        };
        segment.sealed.store(true, Ordering::Release);
        self.max_timestamp = self.max_timestamp.max(segment.max_timestamp());
        if checked && self.needs_producer_walk(&segment) {
            self.walk_producers(&segment, 0, size)?;
        }
        Ok(segment)
    }

    /// Whether a trusted sealed segment must be walked to rebuild producer
    /// state: it holds batches past the snapshot (only when the snapshot is
    /// missing or damaged, as a snapshot is never older than the
    /// checkpoint), and batches of producers that have not expired.
    fn needs_producer_walk(&self, segment: &Segment) -> bool {
        segment.next_offset() > self.producers_from
            && segment.max_timestamp() >= self.producer_window_start
    }

    /// The indexes of a trusted sealed segment and what its end holds, if
    /// they check out; `None` when they must be rebuilt. Bounded work: the
    /// first and last entries of each index, and the batches after the
    /// last offset entry (about one index interval), whose headers give the
    /// segment's end offset and largest timestamp (CRC-checked, so never a
    /// zero from a damaged index). Every other entry is checked where a
    /// read uses it (see [`super::reader`]).
    fn check_trusted(
        &mut self,
        base: u64,
        log_path: &Path,
        log: &dyn crate::io::StorageFile,
        size: u64,
    ) -> LogResult<Option<(OffsetIndex, TimeIndex, SegmentEnd)>> {
        let [_, index_path, time_path] = Segment::paths(self.dir, base);
        let (Ok(index), Ok(time)) = (
            MappedIndex::open_sealed(self.fs, &index_path),
            MappedIndex::open_sealed(self.fs, &time_path),
        ) else {
            return Ok(None);
        };
        let (index, time_index) = (OffsetIndex(index), TimeIndex(time));
        let Some((relative, position)) = offset_index_start(&index, size) else {
            return Ok(None);
        };
        self.report.checked_tail_bytes += size - u64::from(position);
        let mut scanner =
            BatchScanner::new(log, u64::from(position), size, base + u64::from(relative));
        let mut end = SegmentEnd {
            next_offset: base + u64::from(relative),
            max_timestamp: i64::MIN,
        };
        loop {
            match scanner.next_batch() {
                Ok(Some(batch)) => {
                    end.next_offset = batch.header.next_offset();
                    end.max_timestamp = end.max_timestamp.max(batch.header.max_timestamp);
                }
                Ok(None) => break,
                Err(ScanStop::Damaged { position, reason }) => {
                    tracing::warn!(
                        segment = %log_path.display(), position, reason = %reason,
                        "the end of a sealed segment does not match its index"
                    );
                    return Ok(None);
                }
                Err(stop) => {
                    return Err(stop.into_error(log_path, "checking the end of a sealed segment"));
                }
            }
        }
        if !time_index_fits(&time_index, base, &end) {
            return Ok(None);
        }
        Ok(Some((index, time_index, end)))
    }

    /// Scans a sealed segment and writes fresh indexes for it. They are
    /// built in `*.tmp` files, synced, and only then renamed over the old
    /// ones: a rebuild cut short leaves temp files (removed at the next
    /// open, which rebuilds again), never a partial index under the real
    /// name.
    fn rebuild_sealed(
        &mut self,
        base: u64,
        next_base: u64,
        log_path: std::path::PathBuf,
        log: Arc<dyn crate::io::StorageFile>,
        size: u64,
    ) -> LogResult<Segment> {
        let capacity = self
            .config
            .index_capacity()
            .max((size / u64::from(self.config.index_interval_bytes)) as usize + 4);
        let [_, index_path, time_path] = Segment::paths(self.dir, base);
        let (index_tmp, time_tmp) = (temp_path(&index_path), temp_path(&time_path));
        let shown = log_path.display().to_string();
        let io = |e| LogError::io(format!("rebuilding the indexes of {shown}"), e);
        let index = OffsetIndex(MappedIndex::create(self.fs, &index_tmp, capacity).map_err(io)?);
        let time_index = TimeIndex(MappedIndex::create(self.fs, &time_tmp, capacity).map_err(io)?);
        let segment = Segment::assemble(
            base,
            log_path,
            log,
            index,
            time_index,
            size,
            next_base,
            i64::MIN,
        );
        self.report.rebuilt_indexes += 1;
        self.report.scanned_bytes += size;
        let mut cursor = empty_cursor(base, i64::MIN);
        let end = scan_into(
            &segment,
            self.config,
            &mut cursor,
            0,
            size,
            &mut self.producers,
            self.producers_from,
        );
        match end {
            // The whole segment checked out: its end is known.
            Ok(_) => segment
                .next_offset
                .store(cursor.next_offset, Ordering::Release),
            Err(ScanStop::Damaged { position, reason }) => {
                tracing::error!(
                    segment = %segment.log_path.display(), position, reason = %reason,
                    "corrupt batch inside a sealed segment; it is kept and reads that reach it report the damage"
                );
            }
            Err(stop) => return Err(stop.into_error(&segment.log_path, "rebuilding its indexes")),
        }
        segment.push_final_time_entry(cursor.max_timestamp, cursor.last_batch_relative);
        segment.seal_indexes()?;
        self.fs
            .rename(&index_tmp, &index_path)
            .and_then(|()| self.fs.rename(&time_tmp, &time_path))
            .and_then(|()| self.fs.sync_dir(self.dir))
            .map_err(io)?;
        segment
            .max_timestamp
            .store(cursor.max_timestamp, Ordering::Release);
        Ok(segment)
    }

    /// Opens and, unless the stop was clean, recovers the active segment.
    fn active(
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
            self.recover_tail(&segment, &mut cursor, resume.position, file_len)?
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
    /// what is kept. Returns the end of the last good batch.
    fn recover_tail(
        &mut self,
        segment: &Segment,
        cursor: &mut Cursor,
        from: u64,
        file_len: u64,
    ) -> LogResult<u64> {
        let log_path = &segment.log_path;
        let io = |what: &str| {
            let what = format!("{what} {}", log_path.display());
            move |e| LogError::io(what, e)
        };
        self.report.scanned_bytes += file_len - from;
        tracing::info!(segment = %log_path.display(), from = from, to = file_len, "recovering the log tail after an unclean stop");
        let end = match scan_into(
            segment,
            self.config,
            cursor,
            from,
            file_len,
            &mut self.producers,
            self.producers_from,
        ) {
            Ok(end) => end,
            Err(ScanStop::Damaged { position, reason }) => {
                tracing::warn!(
                    segment = %log_path.display(), position, reason = %reason,
                    cut = file_len - position, "truncating a torn or corrupt tail"
                );
                position
            }
            // A read error proves nothing about the bytes: cutting them
            // would drop acknowledged batches and reuse their offsets.
            Err(stop) => return Err(stop.into_error(log_path, "recovering its tail")),
        };
        self.report.truncated_bytes = file_len - end;
        if end < file_len {
            segment
                .log
                .set_len(end)
                .map_err(io("truncating the torn tail of"))?;
        }
        segment
            .log
            .sync_data()
            .map_err(io("syncing the recovered tail of"))?;
        Ok(end)
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

impl Opener<'_> {
    /// Replays the batch headers of `from..to` of a segment into the producer
    /// state (only needed when the snapshot is missing or older than the
    /// checkpoint: a first start, or a damaged snapshot). A read error fails
    /// the open; damage ends the walk of this segment (reads report it).
    fn walk_producers(&mut self, segment: &Segment, from: u64, to: u64) -> LogResult<()> {
        let expected = if from == 0 {
            segment.base_offset
        } else {
            return Ok(());
        };
        let mut scanner = BatchScanner::new(segment.log.as_ref(), from, to, expected);
        self.report.scanned_bytes += to - from;
        loop {
            match scanner.next_batch() {
                Ok(Some(batch)) => {
                    if batch.header.base_offset >= self.producers_from {
                        self.producers.apply(&batch.header);
                    }
                }
                Ok(None) => return Ok(()),
                Err(ScanStop::Damaged { position, reason }) => {
                    tracing::error!(
                        segment = %segment.log_path.display(), position, reason = %reason,
                        "corrupt batch while rebuilding producer state; producers after it are not restored"
                    );
                    return Ok(());
                }
                Err(stop) => {
                    return Err(stop.into_error(&segment.log_path, "rebuilding producer state"));
                }
            }
        }
    }
}

/// The producer snapshot of a partition: the offset it was taken at and
/// the table. `None` if missing or damaged (then the state is rebuilt by
/// walking the log); a read error is returned.
fn read_producer_snapshot(
    fs: &dyn FileSystem,
    dir: &Path,
) -> std::io::Result<Option<(u64, ProducerTable)>> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match read_all(fs, &path, 256 << 20) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let decoded = ProducerTable::decode(&bytes);
    if decoded.is_none() {
        tracing::warn!(path = %path.display(), "producer snapshot is damaged; rebuilding producer state from the log");
    }
    Ok(decoded)
}

fn empty_cursor(next_offset: u64, max_timestamp: i64) -> Cursor {
    Cursor {
        next_offset,
        max_timestamp,
        bytes_since_index: 0,
        last_indexed_timestamp: i64::MIN,
        last_batch_relative: None,
    }
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

/// Scans `from..to` of a segment (no readers yet), adding index entries.
/// Returns the end of the last good batch, or where and why it stopped.
fn scan_into(
    segment: &Segment,
    config: &LogConfig,
    cursor: &mut Cursor,
    from: u64,
    to: u64,
    producers: &mut ProducerTable,
    producers_from: u64,
) -> Result<u64, ScanStop> {
    let mut scanner = BatchScanner::new(segment.log.as_ref(), from, to, cursor.next_offset);
    while let Some(batch) = scanner.next_batch()? {
        let header = batch.header;
        let relative = (header.base_offset - segment.base_offset) as u32;
        if let Some(entry) = index_entry(
            cursor,
            config,
            batch.position,
            relative,
            header.max_timestamp,
            header.total_len() as u64,
        ) {
            push_entry(segment, entry);
        }
        cursor.next_offset = header.next_offset();
        cursor.max_timestamp = cursor.max_timestamp.max(header.max_timestamp);
        if header.base_offset >= producers_from {
            producers.apply(&header);
        }
    }
    Ok(scanner.position())
}

/// Timestamp of a segment's first batch (`None` if it has no whole
/// header); a read error is an error.
fn first_timestamp(segment: &Segment) -> LogResult<Option<i64>> {
    let mut buf = [0u8; HEADER_LEN];
    let read = read_full_at(segment.log.as_ref(), &mut buf, 0).map_err(|e| {
        LogError::io(
            format!("reading the first batch of {}", segment.log_path.display()),
            e,
        )
    })?;
    Ok((read == HEADER_LEN)
        .then(|| BatchHeader::parse(&buf).ok().map(|h| h.first_timestamp))
        .flatten())
}

/// Checks that `earlier` ends where `later` begins. An overlap (the
/// earlier segment holds offsets the later one begins with) fails the open:
/// there are two copies of those offsets and neither is served. A gap (the
/// earlier segment ends before the later one begins, e.g. its tail was
/// lost) is logged; reads of the missing offsets fail, naming them, and
/// everything else is served. The end of a segment whose rebuild met
/// damage is unknown (its next segment's base is assumed).
fn check_continuity(earlier: &Segment, later: &Segment) -> LogResult<()> {
    let (end, begin) = (earlier.next_offset(), later.base_offset);
    if end > begin {
        return Err(LogError::Overlap {
            earlier: earlier.log_path.clone(),
            later: later.log_path.clone(),
            from: begin,
            to: end,
        });
    }
    if end < begin {
        tracing::error!(
            segment = %earlier.log_path.display(), end, next = %later.log_path.display(),
            "offsets {end}..{begin} are missing between two segments; reads of them fail"
        );
    }
    Ok(())
}

/// The end of a sealed segment, read from its last batches' headers.
#[derive(Debug, Clone, Copy)]
struct SegmentEnd {
    /// Offset after its last batch.
    next_offset: u64,
    /// Largest timestamp of its batches (`i64::MIN` when empty).
    max_timestamp: i64,
}

/// Where the check of a sealed segment's end starts: its offset index's
/// last entry (`(0, 0)`, the segment start, when there is none), if the
/// first and last entries are non-zero (no entry is ever at position 0),
/// increase, and the last points inside the segment; `None` if not.
fn offset_index_start(index: &OffsetIndex, size: u64) -> Option<(u32, u32)> {
    let Some(last_at) = index.0.len().checked_sub(1) else {
        return Some((0, 0));
    };
    let (first, last) = (index.entry(0), index.entry(last_at));
    let non_zero = |(relative, position): (u32, u32)| relative > 0 && position > 0;
    let increasing = last_at == 0 || (first.0 < last.0 && first.1 < last.1);
    (non_zero(first) && non_zero(last) && increasing && u64::from(last.1) < size).then_some(last)
}

/// Whether a sealed segment's time index fits its end: present unless the
/// segment is empty, first and last entries non-zero and increasing, the
/// last one at most the segment's largest timestamp and at most its last
/// batch's offset.
fn time_index_fits(time: &TimeIndex, base: u64, end: &SegmentEnd) -> bool {
    let Some(last_at) = time.0.len().checked_sub(1) else {
        return end.next_offset == base;
    };
    let Some(last_relative) = end.next_offset.checked_sub(base + 1) else {
        return false;
    };
    let (first, last) = (time.entry(0), time.entry(last_at));
    let increasing = last_at == 0 || (first.0 < last.0 && first.1 < last.1);
    first != (0, 0)
        && last != (0, 0)
        && increasing
        && last.0 <= end.max_timestamp
        && u64::from(last.1) <= last_relative
}
