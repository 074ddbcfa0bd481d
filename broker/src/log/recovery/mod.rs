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
//!    partial index under the real name. Sealed segments the checkpoint
//!    does not cover are scanned whole the same way. The one just before
//!    the last segment may have been sealed without its background sync
//!    completing ([`super::writer::seal`]): if it is torn, corrupt, or ends
//!    before the last segment begins, it lost its unsynced tail, so the
//!    last segment is removed (durably, first) and it is recovered as the
//!    active segment in step 4; if it checks out, it is synced before it is
//!    trusted. (At most one seal runs at a time, so every earlier sealed
//!    segment was synced; damage in one is bit rot, kept and reported.)
//!    Each sealed segment, once opened, goes to the caches of open
//!    segments ([`super::open_segments`]) at once, so an open holds no more
//!    files and maps than serving the partition does.
//! 3. Clean shutdown (checkpoint says clean and matches the last segment's
//!    size): open the active segment as it is. Nothing is scanned.
//!    A fence checkpoint (an fsync failed, see [`super::checkpoint`])
//!    first removes every segment after the fenced one (a sealed segment's
//!    background sync failed), durably, then cuts the fenced segment at the
//!    fence, unscanned: the page cache may hold bytes there that never
//!    reached the disk.
//! 4. Otherwise scan from the checkpoint's position to the end of the last
//!    segment (and through any segment sealed after the checkpoint): every
//!    batch's length, CRC and offset continuity is checked. The active
//!    segment is cut at the first bad batch (logged with its byte position),
//!    or at the first zeros after its batches (the zeros a writer with
//!    `preallocate` writes ahead of its appends; zeros right at the
//!    checkpoint are cut unread, see [`active`]);
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
//! 6. Sync what was recovered (the scan's cut and the scanned tail). Then
//!    the checkpoint:
//!    - The one on disk already says exactly where the log ends (the same
//!      segment, position, next offset and largest timestamp, no fence,
//!      with a readable producer snapshot): after a clean stop, and after
//!      a kill of a log whose idle checkpoint
//!      ([`super::writer::commit`]) was written. It is kept: nothing is
//!      written. A clean one is replaced by an unclean one before the
//!      first append (left in place, a later start would keep the index
//!      entries of appends that never reached the disk).
//!    - It is an ordinary checkpoint in the active segment, behind the
//!      recovered end (with a readable snapshot): it stays true (what was
//!      cut was cut durably), so it is kept too, and the new one is left
//!      to the log's idle checkpoint, due one to two idle periods after
//!      the open (spread, so that the logs opened together do not all
//!      write theirs at once), or to the next checkpoint appends bring. A
//!      crash before then scans the same tail again: still bounded by the
//!      bytes written since that checkpoint. (With the idle checkpoint
//!      off, it is written now, as below.)
//!    - Otherwise (no checkpoint, a fence, a checkpoint in an earlier
//!      segment, no readable snapshot) a new unclean checkpoint is written
//!      now; a fence that cannot be replaced here is replaced before the
//!      first append (see [`super::writer::StaleCheckpoint`]).
//!
//!    So the open of a log writes no checkpoint or snapshot unless the log
//!    is new, or it found a fence, a missing or damaged snapshot, or a
//!    checkpoint in an earlier segment.
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
//!
//! ## Modules
//!
//! | module | job |
//! | --- | --- |
//! | this one | [`Log::open`]: the steps in order; leftovers (1), continuity (5), the new checkpoint (6); the scan that sealed and active segments share; [`RecoveryReport`] |
//! | [`sealed`] | step 2: sealed segments, the bounded check of trusted ones, index rebuilds |
//! | [`active`] | steps 3 and 4: the active segment: where it resumes, the cut at a fence, the scan and cut of its tail |
//! | [`producer_state`] | the producer snapshot, and the walk that rebuilds producer state when it is missing or damaged |
//! | [`many`] | opening many logs at once (broker start, topic create), a bounded number at a time |

pub mod active;
pub mod many;
pub mod producer_state;
pub mod sealed;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::Checkpoint;
use super::clock::Clock;
use super::config::LogConfig;
use super::error::{LogError, LogResult};
use super::producers::ProducerTable;
use super::segment::{BatchScanner, ScanStop, Segment, parse_file_name};
use super::writer::append::{index_entry, push_entry};
use super::writer::{Active, Cursor, Log, StaleCheckpoint};
use crate::io::{FileSystem, create_dir_durably, existing_ancestor, sync_parent};
use producer_state::read_producer_snapshot;

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering it if the
    /// last stop was not clean.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> LogResult<Log> {
        let started = std::time::Instant::now();
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
        let snapshot = read_producer_snapshot(fs.as_ref(), dir)
            .map_err(io("reading the producer snapshot"))?;
        let had_snapshot = snapshot.is_some();
        let (producers_from, producers) = snapshot.unwrap_or_default();
        let mut opener = Opener {
            fs: fs.as_ref(),
            fs_handle: &fs,
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
        let bases = drop_after_fence(fs.as_ref(), dir, bases, checkpoint)?;
        let (segments, active) = match bases.split_last() {
            None => opener.fresh(checkpoint.map_or(0, |c| c.next_offset))?,
            Some((_, sealed)) => {
                opener.segments(&bases, sealed.len(), checkpoint, clock.now_ms())?
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
        let checkpoint_written = new_checkpoint(&mut log, checkpoint, had_snapshot);
        tracing::debug!(
            dir = %dir.display(), clean = report.clean, scanned_bytes = report.scanned_bytes,
            truncated_bytes = report.truncated_bytes, checkpoint_written,
            took_us = started.elapsed().as_micros() as u64, "opened a partition log"
        );
        Ok(log)
    }
}

/// Step 6: the checkpoint after recovery (see the module doc). Kept when
/// the one on disk already says where the log ends; left behind, for the
/// idle checkpoint to catch up, when it is an ordinary one in the active
/// segment; written now otherwise. Returns whether a checkpoint was
/// written (or its write tried: a failure only costs a longer scan after
/// a crash).
fn new_checkpoint(log: &mut Log, on_disk: Option<Checkpoint>, had_snapshot: bool) -> bool {
    let here = log.checkpoint_here(false);
    if let Some(c) = on_disk
        && had_snapshot
        && !c.fence
        && c.segment_base == here.segment_base
        && (log.config.idle_checkpoint_ms > 0 || (Checkpoint { clean: false, ..c }) == here)
    {
        if (Checkpoint { clean: false, ..c }) == here {
            // The checkpoint says where the log ends. A clean one must be
            // replaced before the first append (see `StaleCheckpoint`).
            log.stale_checkpoint = c.clean.then_some(StaleCheckpoint::Clean);
        } else {
            // Recovered past an ordinary checkpoint of this segment: it
            // stays true (what was cut is cut durably), so the new one is
            // left to the idle checkpoint, spread over one more idle
            // period so that many logs recovered together do not all write
            // theirs at once.
            let idle = Duration::from_millis(log.config.idle_checkpoint_ms);
            log.idle_since = Some(Instant::now() + idle.mul_f64(spread(&log.dir)));
        }
        return false;
    }
    // A fence must be replaced before the log takes appends: left in
    // place, it would cut them at the next start.
    log.stale_checkpoint = on_disk.filter(|c| c.fence).map(|_| StaleCheckpoint::Fence);
    log.write_checkpoint(false);
    true
}

/// A fraction in `0..1` that depends only on `dir`.
fn spread(dir: &Path) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    (hasher.finish() % 1024) as f64 / 1024.0
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

/// A fence in a segment before the last (a sealed segment's background
/// sync failed, see [`super::writer::seal`]): the log ends in it, so every
/// later segment is removed, durably, before it is cut at the fence.
fn drop_after_fence(
    fs: &dyn FileSystem,
    dir: &Path,
    mut bases: Vec<u64>,
    checkpoint: Option<Checkpoint>,
) -> LogResult<Vec<u64>> {
    let fenced = checkpoint
        .filter(|c| c.fence)
        .and_then(|c| bases.iter().position(|&b| b == c.segment_base));
    if let Some(at) = fenced.filter(|&at| at + 1 < bases.len()) {
        remove_segments(fs, dir, &bases[at + 1..], "written after a failed fsync")?;
        bases.truncate(at + 1);
    }
    Ok(bases)
}

/// Removes the segments at `bases` (their three files), then syncs the
/// directory, so that the removal is durable before anything else changes.
fn remove_segments(fs: &dyn FileSystem, dir: &Path, bases: &[u64], why: &str) -> LogResult<()> {
    for &base in bases {
        let [log_path, ..] = Segment::paths(dir, base);
        let bytes = fs
            .open(&log_path, crate::io::OpenMode::Read)
            .and_then(|f| f.len())
            .unwrap_or(0);
        tracing::warn!(segment = %log_path.display(), bytes, why, "removing a segment that follows the end of the log");
        for path in Segment::paths(dir, base) {
            match fs.remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LogError::io(format!("removing {}", path.display()), e));
                }
                _ => {}
            }
        }
    }
    fs.sync_dir(dir).map_err(|e| {
        LogError::io(
            format!("syncing {} after removing segments", dir.display()),
            e,
        )
    })
}

impl Opener<'_> {
    /// Opens the segments at `bases` (the first `sealed` of them sealed,
    /// the last active). The sealed segment just before the last one, when
    /// the checkpoint does not cover it, may have been sealed without its
    /// sync completing ([`super::writer::seal`]): if it lost its tail, the
    /// last segment is removed and it becomes the active one, recovered
    /// like any unsynced tail.
    fn segments(
        &mut self,
        bases: &[u64],
        sealed: usize,
        checkpoint: Option<Checkpoint>,
        now_ms: i64,
    ) -> LogResult<(Vec<Arc<Segment>>, Active)> {
        let mut segments = Vec::with_capacity(bases.len());
        for (i, &base) in bases[..sealed].iter().enumerate() {
            let next_base = bases[i + 1];
            let trusted = checkpoint.is_some_and(|c| base < c.segment_base);
            if trusted || i + 1 < sealed {
                segments.push(Arc::new(self.sealed(base, next_base, trusted)?));
                continue;
            }
            let before = (self.producers.clone(), self.max_timestamp);
            match self.sealed_maybe_unsynced(base, next_base)? {
                Some(segment) => segments.push(Arc::new(segment)),
                None => {
                    // Nothing after a lost piece is served: the last
                    // segment goes (durably) before this one is cut.
                    (self.producers, self.max_timestamp) = before;
                    remove_segments(
                        self.fs,
                        self.dir,
                        &bases[sealed..],
                        "its sealed predecessor lost its unsynced tail",
                    )?;
                    let active = self.active(base, checkpoint, now_ms)?;
                    segments.push(active.segment.clone());
                    return Ok((segments, active));
                }
            }
        }
        let active = self.active(bases[sealed], checkpoint, now_ms)?;
        segments.push(active.segment.clone());
        Ok((segments, active))
    }
}

/// Opens segments one by one, carrying the largest timestamp seen.
struct Opener<'a> {
    fs: &'a dyn FileSystem,
    /// The same, to hand to the caches of open segments.
    fs_handle: &'a Arc<dyn FileSystem>,
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
    /// Zeros cut off the end of the active segment: those a writer with
    /// `preallocate` writes ahead of its appends (see
    /// [`crate::log::writer::commit`]), or writes a stop lost, which read
    /// back as zeros.
    pub zero_bytes_cut: u64,
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
            file_len: 0,
            synced_pos: 0,
            checkpoint_pos: 0,
            cursor: empty_cursor(base, i64::MIN),
        };
        Ok((vec![segment], active))
    }
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
    let file = segment.file().map_err(|error| ScanStop::Io {
        position: from,
        error,
    })?;
    let mut scanner = BatchScanner::new(file.as_ref(), from, to, cursor.next_offset);
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
