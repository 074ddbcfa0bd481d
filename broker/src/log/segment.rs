//! One segment: a `.log` file of record batches back to back, with its
//! offset and time indexes, named by its base offset zero-padded to 20 digits.
//!
//! A segment is shared between the log's one writer and any number of
//! readers. What readers may see is published through atomics: `size` (bytes
//! readable from the start of the file) and `next_offset`/`max_timestamp`
//! (of the last readable batch). The writer stores `size` before
//! `next_offset`, so a reader that loads `next_offset` first and `size` second
//! always finds the batches below that offset inside `size`.
//!
//! Reads ([`Segment::read_range`]) go straight into a buffer's spare
//! capacity; a read of a sealed segment that was not in the page cache
//! leaves it out of the cache again, so catch-up reads of old segments do
//! not evict the active segment's pages.
//!
//! ## Open files
//!
//! The `.log` file is reached through [`Segment::file`], never held as a
//! field: while the writer holds the segment (active, or sealed with its
//! sync not completed) it is pinned open; once the writer releases it
//! ([`Segment::release`]) the broker-wide cache of
//! [`super::open_segments`] keeps it open only while it is among the
//! `max_open_segments` most recently read, and a read reopens it when it
//! was closed. A read keeps the `Arc` it got for as long as it reads, so
//! a file closed meanwhile stays usable to it. The index files are not
//! held open at all: their maps are, bounded the same way once released
//! (see [`super::index`]); sealing them reopens them
//! ([`Segment::open_indexes_to_seal`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use pigeon_protocol::batch::{
    BatchHeader, HEADER_LEN, LOG_OVERHEAD, MIN_BATCH_LENGTH, verify_stored,
};

use super::config::BATCH_BYTES_BOUND;
use super::error::{LogError, LogResult};
use super::index::{MappedIndex, OffsetIndex, TimeIndex};
use super::open_segments::{OpenSegments, SegmentFile};
use crate::io::{Advice, FileSystem, OpenMode, StorageFile, read_full_at, read_full_into};

/// File name of a segment's `kind` file (`log`, `index`, `timeindex`).
pub(crate) fn file_name(base_offset: u64, kind: &str) -> String {
    format!("{base_offset:020}.{kind}")
}

/// Parses `00000000000000000042.log` into `(42, "log")`.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, kind) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

/// A segment of the log.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first record this segment holds (or will hold).
    pub base_offset: u64,
    /// Path of the `.log` file, for error messages and deletion.
    pub log_path: PathBuf,
    /// The `.log` file, pinned open or in the cache of open files (see the
    /// module doc); reached through [`Segment::file`].
    log: Arc<SegmentFile>,
    /// Sparse offset → position index.
    pub index: OffsetIndex,
    /// Sparse timestamp → offset index.
    pub time_index: TimeIndex,
    /// Bytes readers may read.
    pub size: AtomicU64,
    /// Offset after the last readable batch.
    pub next_offset: AtomicU64,
    /// Largest timestamp of the readable batches (`i64::MIN` when empty).
    pub max_timestamp: AtomicI64,
    /// Whether the segment is sealed (immutable).
    pub sealed: AtomicBool,
}

/// The index files of a segment reopened to seal them
/// ([`Segment::open_indexes_to_seal`]); `None` for one sealed already.
pub(crate) struct IndexFiles {
    index: Option<Arc<dyn StorageFile>>,
    time_index: Option<Arc<dyn StorageFile>>,
}

impl Segment {
    /// Paths of this segment's three files.
    pub fn paths(dir: &Path, base_offset: u64) -> [PathBuf; 3] {
        ["log", "index", "timeindex"].map(|kind| dir.join(file_name(base_offset, kind)))
    }

    /// Creates a new empty segment (files truncated if they exist).
    pub fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        base_offset: u64,
        capacity: usize,
    ) -> io::Result<Segment> {
        let [log_path, index_path, time_path] = Self::paths(dir, base_offset);
        let log = fs.open(&log_path, OpenMode::Create)?;
        log.set_len(0)?;
        let index = OffsetIndex(MappedIndex::create(fs, &index_path, capacity)?);
        let time_index = TimeIndex(MappedIndex::create(fs, &time_path, capacity)?);
        Ok(Self::assemble(
            base_offset,
            log_path,
            log,
            index,
            time_index,
            0,
            base_offset,
            i64::MIN,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        base_offset: u64,
        log_path: PathBuf,
        log: Arc<dyn StorageFile>,
        index: OffsetIndex,
        time_index: TimeIndex,
        size: u64,
        next_offset: u64,
        max_timestamp: i64,
    ) -> Segment {
        Segment {
            base_offset,
            log: SegmentFile::pinned(log_path.clone(), log),
            log_path,
            index,
            time_index,
            size: AtomicU64::new(size),
            next_offset: AtomicU64::new(next_offset),
            max_timestamp: AtomicI64::new(max_timestamp),
            sealed: AtomicBool::new(false),
        }
    }

    /// The `.log` file, reopened (read-only) if the cache of open files
    /// closed it. The error is the operating system's; callers wrap it as
    /// they wrap a failed read. Never fails for a segment the writer holds
    /// (its file is pinned open).
    pub fn file(&self) -> io::Result<Arc<dyn StorageFile>> {
        self.log.get()
    }

    /// Hands the `.log` file and the two index maps to the cache of open
    /// segments: from now on each is closed (unmapped) when cold and
    /// reopened by the next read that needs it. For a sealed segment whose
    /// sync has completed (it is never written again); an index not sealed
    /// yet keeps its map pinned. Once only; later calls do nothing.
    pub fn release(&self, fs: Arc<dyn FileSystem>, cache: &OpenSegments) {
        self.index.0.release(fs.clone(), cache);
        self.time_index.0.release(fs.clone(), cache);
        self.log.release(fs, cache);
    }

    /// Whether the `.log` file is open now.
    #[cfg(test)]
    pub fn file_is_open(&self) -> bool {
        self.log.is_open()
    }

    /// Makes bytes up to `size` and offsets below `next_offset` readable.
    pub fn publish(&self, size: u64, next_offset: u64, max_timestamp: i64) {
        self.max_timestamp.store(max_timestamp, Ordering::Release);
        self.size.store(size, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
    }

    /// Offset after the last readable batch.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Readable bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Largest readable timestamp.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Adds the time index's final entry, the segment's largest timestamp at
    /// its last batch, unless the last entry already holds it.
    pub fn push_final_time_entry(&self, max_timestamp: i64, last_relative: Option<u32>) {
        let last = self.time_index.last().map_or(i64::MIN, |(ts, _)| ts);
        if let Some(relative) = last_relative
            && max_timestamp > last
        {
            self.time_index.push(max_timestamp, relative);
        }
    }

    /// Flushes both indexes, cuts them to exactly their entries, syncs them
    /// (each reopened for it, see the module doc of [`super::index`]). Does
    /// nothing for an index sealed already.
    pub fn seal_indexes(&self, fs: &dyn FileSystem) -> LogResult<()> {
        let files = self.open_indexes_to_seal(fs)?;
        self.seal_indexes_with(files)
    }

    /// The first step of [`seal_indexes`](Self::seal_indexes): reopens both
    /// index files. Nothing on disk is changed yet, so a failure here can be
    /// retried.
    pub fn open_indexes_to_seal(&self, fs: &dyn FileSystem) -> LogResult<IndexFiles> {
        let opened = self.index.0.open_to_seal(fs).and_then(|index| {
            let time_index = self.time_index.0.open_to_seal(fs)?;
            Ok(IndexFiles { index, time_index })
        });
        opened.map_err(|e| {
            LogError::io(
                format!(
                    "reopening the indexes of {} to seal them",
                    self.log_path.display()
                ),
                e,
            )
        })
    }

    /// The rest of [`seal_indexes`](Self::seal_indexes), through the files
    /// [`open_indexes_to_seal`](Self::open_indexes_to_seal) opened: flush,
    /// cut, sync. A failure leaves the files in an unknown state.
    pub fn seal_indexes_with(&self, files: IndexFiles) -> LogResult<()> {
        let sealed = match files.index {
            Some(file) => self.index.0.seal_with(file.as_ref()),
            None => Ok(()),
        }
        .and_then(|()| match files.time_index {
            Some(file) => self.time_index.0.seal_with(file.as_ref()),
            None => Ok(()),
        });
        sealed.map_err(|e| {
            LogError::io(
                format!("sealing the indexes of {}", self.log_path.display()),
                e,
            )
        })
    }

    /// A [`LogError::Corrupt`] naming this segment.
    pub fn corrupt(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            segment: self.log_path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// Reads `len` bytes at `position`, failing if the file is shorter.
    pub fn read_exact(&self, position: u64, len: usize) -> LogResult<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_range(&mut buf, position, position + len as u64)?;
        Ok(buf)
    }

    /// Appends bytes `from..to` of the `.log` to `buf`, failing if the file
    /// is shorter. The bytes go straight into `buf`'s spare capacity (no
    /// zero-filling). For a sealed segment, a read that finds part of the
    /// range outside the page cache (a catch-up read of a cold segment)
    /// drops the range from the cache afterwards (`POSIX_FADV_DONTNEED`)
    /// and marks the file sequential (more readahead), so that it does not
    /// evict the hot tail that live readers use; a range found whole in
    /// the cache is left as it was.
    pub fn read_range(&self, buf: &mut Vec<u8>, from: u64, to: u64) -> LogResult<()> {
        let len = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
        let io = |e| LogError::io(format!("reading {}", self.log_path.display()), e);
        let file = self.file().map_err(io)?;
        let mut done = 0;
        let mut cold = false;
        if self.sealed.load(Ordering::Acquire)
            && let Some(cached) = file.read_cached_into(buf, len, from).map_err(io)?
        {
            done = cached;
            cold = done < len;
        }
        if cold && self.log.first_cold_read() {
            self.advise(file.as_ref(), 0, 0, Advice::Sequential);
        }
        done += read_full_into(file.as_ref(), buf, len - done, from + done as u64).map_err(io)?;
        if cold {
            self.advise(file.as_ref(), from, len as u64, Advice::DontNeed);
        }
        if done < len {
            return Err(self.corrupt(
                from + done as u64,
                format!("file ends {} bytes early", len - done),
            ));
        }
        Ok(())
    }

    /// Page-cache advice about the `.log` (`len` 0: to the end); advice is
    /// only that, so a failure is logged, not raised.
    fn advise(&self, file: &dyn StorageFile, from: u64, len: u64, advice: Advice) {
        if let Err(e) = file.advise(from, len, advice) {
            tracing::debug!(segment = %self.log_path.display(), error = %e, ?advice, "page-cache advice refused");
        }
    }
}

/// Why a scan stopped before the end it was given.
#[derive(Debug)]
pub(crate) enum ScanStop {
    /// Proven damage: the bytes at `position` were read and are not the
    /// next batch (impossible length, a batch torn by the end of the file,
    /// a failed CRC or format check, an offset out of sequence). Recovery
    /// may cut an active segment here.
    Damaged {
        /// Byte position of the first bad batch.
        position: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The file could not be read at `position` (or returned fewer bytes
    /// than its size promised): nothing is known about the bytes there, so
    /// nothing may be cut because of it.
    Io {
        /// Byte position the failed read started at.
        position: u64,
        /// The operating system's error.
        error: io::Error,
    },
}

impl ScanStop {
    /// The stop as a [`LogError`] naming `segment`: a read error fails
    /// whatever was being done, and says that nothing was cut.
    pub fn into_error(self, segment: &Path, doing: &str) -> LogError {
        match self {
            ScanStop::Damaged { position, reason } => LogError::Corrupt {
                segment: segment.to_owned(),
                position,
                reason,
            },
            ScanStop::Io { position, error } => LogError::io(
                format!(
                    "reading {} at byte {position} while {doing} (nothing was cut; \
                     check the disk, then restart to retry)",
                    segment.display()
                ),
                error,
            ),
        }
    }
}

/// Reads a segment's batches in order from a position, checking the length,
/// CRC and offset continuity of each. Used by recovery and index rebuilds.
pub(crate) struct BatchScanner<'a> {
    file: &'a dyn StorageFile,
    end: u64,
    position: u64,
    expected_offset: u64,
    buf: Vec<u8>,
    /// `buf` holds file bytes `buf_start .. buf_start + buf.len()`.
    buf_start: u64,
}

/// A batch found by a scan.
pub(crate) struct ScannedBatch {
    pub position: u64,
    pub header: BatchHeader,
}

const SCAN_CHUNK: usize = 1 << 20;

impl<'a> BatchScanner<'a> {
    /// Scans `file` from `position` (where offset `expected_offset` starts)
    /// to `end`. Batch lengths are checked against the format's bound
    /// ([`BATCH_BYTES_BOUND`]), not the current `max_batch_bytes`.
    pub fn new(file: &'a dyn StorageFile, position: u64, end: u64, expected_offset: u64) -> Self {
        BatchScanner {
            file,
            end,
            position,
            expected_offset,
            buf: Vec::new(),
            buf_start: position,
        }
    }

    /// Position after the last good batch.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next good batch; `Ok(None)` at a clean end; `Err(stop)` at the
    /// first torn, corrupt or out-of-sequence batch
    /// ([`ScanStop::Damaged`]), or where the file could not be read
    /// ([`ScanStop::Io`], never to be taken for damage).
    pub fn next_batch(&mut self) -> Result<Option<ScannedBatch>, ScanStop> {
        if self.position >= self.end {
            return Ok(None);
        }
        let position = self.position;
        let stop = |reason: String| ScanStop::Damaged { position, reason };
        let io = |error: io::Error| ScanStop::Io { position, error };
        let remaining = self.end - self.position;
        if remaining < HEADER_LEN as u64 {
            return Err(stop(format!(
                "{remaining} trailing bytes are too few for a batch header"
            )));
        }
        let prefix = self.bytes(LOG_OVERHEAD).map_err(io)?;
        let length = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        let total = LOG_OVERHEAD as u64 + u64::from(length);
        if length < MIN_BATCH_LENGTH || total > u64::from(BATCH_BYTES_BOUND) {
            return Err(stop(format!("batch length field {length} is impossible")));
        }
        if total > remaining {
            return Err(stop(format!(
                "batch of {total} bytes is torn: only {remaining} bytes remain"
            )));
        }
        let bytes = self.bytes(total as usize).map_err(io)?;
        let header =
            verify_stored(bytes, BATCH_BYTES_BOUND as usize).map_err(|e| stop(e.to_string()))?;
        if header.base_offset != self.expected_offset || header.record_count == 0 {
            return Err(stop(format!(
                "batch has base offset {} and {} records where offset {} was expected",
                header.base_offset, header.record_count, self.expected_offset
            )));
        }
        let found = ScannedBatch {
            position: self.position,
            header,
        };
        self.position += total;
        self.expected_offset = header.next_offset();
        Ok(Some(found))
    }

    /// `len` bytes at the current position, from the buffer or the file.
    /// The caller checked that they lie before `end`, so a file that ends
    /// sooner (its size changed under the scan) is an error, not damage.
    fn bytes(&mut self, len: usize) -> io::Result<&[u8]> {
        let start = self
            .position
            .checked_sub(self.buf_start)
            .map(|s| s as usize);
        let Some(start) = start.filter(|s| s + len <= self.buf.len()) else {
            let want = (self.end - self.position).min(SCAN_CHUNK.max(len) as u64) as usize;
            self.buf.resize(want, 0);
            let read = read_full_at(self.file, &mut self.buf, self.position)?;
            self.buf.truncate(read);
            self.buf_start = self.position;
            if read < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file ended after {read} of {len} bytes, before the size it reported"
                    ),
                ));
            }
            return Ok(&self.buf[..len]);
        };
        Ok(&self.buf[start..start + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_twenty_digit_base_offsets() {
        assert_eq!(file_name(42, "log"), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.timeindex"),
            Some((42, "timeindex"))
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("checkpoint"), None);
    }
}
