//! Sparse, memory-mapped indexes of one segment, with fixed-size entries.
//!
//! | file | entry | size | meaning |
//! | --- | --- | --- | --- |
//! | `.index` | `relative_offset` u32, `position` u32 | 8 | the batch whose base offset is `base + relative_offset` starts at byte `position` of the `.log` |
//! | `.timeindex` | `timestamp` i64, `relative_offset` u32 | 12 | batches before `base + relative_offset` have timestamps ≤ `timestamp`, and the batch there has it |
//!
//! Integers are little-endian. One entry is added every
//! `index_interval_bytes` of log (never at position 0: the segment start is
//! implicit), so both are sorted and strictly increasing in every field; a
//! time entry is only added when the timestamp grew. When a segment is sealed
//! its time index gets a last entry holding the segment's largest timestamp.
//!
//! ## Files and maps
//!
//! The active segment's index files are preallocated to their capacity and
//! mapped once; entries are written through the map by the one writer and
//! published with a release store of the entry count, so readers never see
//! a half-written entry and never lock. A sealed index is truncated to
//! exactly its entries; the map stays valid because readers only touch
//! entries below the count, which lie inside the file.
//!
//! No index file is held open: a map stays valid once its file descriptor
//! is closed, so [`MappedIndex`] keeps the map and the file's path, and the
//! only step that needs the file, the seal (cut to the entries, then
//! synced), reopens it through the [`FileSystem`]. The seal opens first
//! and changes nothing before both files of a segment are open
//! ([`MappedIndex::open_to_seal`], then [`MappedIndex::seal_with`]): a
//! failed reopen (`EMFILE`, a full disk in tests) leaves the index as it
//! was, and the roll is retried. An index rebuilt under a temporary name
//! (see [`super::recovery::sealed`]) is sealed there, then renamed, and
//! told its new name ([`MappedIndex::renamed_to`]). So a segment costs no
//! index fd, only its two maps.
//!
//! A sealed index's map, once its segment is released (synced for good,
//! see [`super::open_segments`]), is in the broker-wide cache of open
//! segments: unmapped when cold, mapped again (read-only, exactly its
//! entries; the file is opened for the mapping only) by the next lookup.
//! A lookup takes one reference to the map ([`View`]) and reads through
//! it, so an unmapping meanwhile does not touch it. If the map cannot be
//! made again (the file deleted behind the broker's back, `ENOMEM`), the
//! lookup does without the index: a read scans from the segment start,
//! which is slower and still exact. The active index's map is pinned:
//! the writer stores entries through it and it is never unmapped.
//!
//! ## Full disk
//!
//! A store through a shared map into a page the file system cannot
//! allocate is a `SIGBUS`, which kills the process (every partition), not
//! an error. So an index file's disk space is allocated up front
//! ([`StorageFile::allocate`], `fallocate`) before it is mapped: a full
//! disk shows as `ENOSPC` when a segment is created (the roll fails with
//! `DiskFull`, the append is refused, service resumes once space is back),
//! never at an entry's store. Opening the active index after a restart
//! reads its entries with `pread` (on tmpfs even a read fault of a hole
//! allocates), only where the file may hold data (`SEEK_DATA`: the
//! reserved, never written tail reads as zeros unread), zeroes through
//! the map only the dropped entries up to the last non-zero one (the
//! pages after it are neither read nor dirtied; maps are advised random
//! access, so a fault does not read the reserved tail around it either),
//! and grows it to capacity the same way; on a full disk it is cut to its
//! kept entries instead, and the first append needing an entry
//! rolls (and fails with `DiskFull` until there is space). The space costs
//! `capacity × 20` bytes per partition's active segment (about 640 KiB
//! with the defaults); sealing gives back what the entries do not use.
//!
//! Index files are derived data: recovery rebuilds them from the log when
//! they are missing, the wrong size, or written after the last checkpoint.
//! A zero entry never occurs among valid entries, so a preallocated tail is
//! recognisable.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::open_segments::{IndexMap, OpenSegments};
use crate::io::{Advice, FileSystem, OpenMode, StorageFile, read_full_at};

/// A file of fixed-size `N`-byte entries, memory-mapped. The file is not
/// held open (see the module doc).
#[derive(Debug)]
pub(crate) struct MappedIndex<const N: usize> {
    /// The file, reopened to seal it (and, once released, to map it again).
    path: PathBuf,
    /// The map: pinned (writable) until the sealed index is released to
    /// the cache of open segments, then mapped read-only while cached.
    map: Option<Arc<IndexMap>>,
    /// Cut to its entries and synced: never written again.
    sealed: AtomicBool,
    /// Entries the map has room for.
    capacity: usize,
    /// Entries written and visible to readers.
    len: AtomicUsize,
}

impl<const N: usize> MappedIndex<N> {
    /// Creates an empty index file with room for `capacity` entries, its
    /// disk space allocated (`ENOSPC` on a full disk).
    pub fn create(fs: &dyn FileSystem, path: &Path, capacity: usize) -> io::Result<Self> {
        let file = fs.open(path, OpenMode::Create)?;
        file.set_len(0)?;
        let len = (capacity * N) as u64;
        file.set_len(len)?;
        file.allocate(len)?;
        Self::map(path, file.as_ref(), capacity, 0, false)
    }

    /// Opens a sealed index: every entry in the file counts. Fails when the
    /// size is not a whole number of entries (the caller rebuilds it).
    pub fn open_sealed(fs: &dyn FileSystem, path: &Path) -> io::Result<Self> {
        let file = fs.open(path, OpenMode::ReadWrite)?;
        let size = file.len()?;
        if size % N as u64 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("index size {size} is not a multiple of the entry size {N}"),
            ));
        }
        let count = (size / N as u64) as usize;
        Self::map(path, file.as_ref(), count, count, true)
    }

    /// Opens the active segment's index, keeping the leading entries that
    /// `keep` accepts (given the entry and the previous kept one), zeroing
    /// the rest, and growing the file to `capacity` entries, allocated. On
    /// a full disk the file is cut to the kept entries instead (see the
    /// module doc).
    pub fn open_active(
        fs: &dyn FileSystem,
        path: &Path,
        capacity: usize,
        keep: impl Fn(&[u8; N], Option<&[u8; N]>) -> bool,
    ) -> io::Result<Self> {
        let file = fs.open(path, OpenMode::Create)?;
        let size = file.len()?;
        let present = (size / N as u64) as usize;
        let (first, used) = read_entries::<N>(file.as_ref(), present)?;
        let entry = |i: usize| {
            let mut entry = [0u8; N];
            entry.copy_from_slice(&first[i * N..(i + 1) * N]);
            entry
        };
        let mut kept = 0;
        while kept < first.len() / N {
            let previous = kept.checked_sub(1).map(entry);
            let current = entry(kept);
            if current == [0; N] || !keep(&current, previous.as_ref()) {
                break;
            }
            kept += 1;
        }
        let capacity = capacity.max(present);
        let len = (capacity * N) as u64;
        // Not `set_len` to the size the file has: ext4 then truncates
        // (dirtying the inode) all the same.
        let resized = if size == len {
            Ok(())
        } else {
            file.set_len(len)
        };
        let grown = resized.and_then(|()| file.allocate(len));
        match grown {
            Ok(()) => {
                // Only the entries up to the last non-zero one are zeroed:
                // the rest are zeros already.
                let index = Self::map(path, file.as_ref(), capacity, used, false)?;
                index.truncate(kept);
                Ok(index)
            }
            Err(e) if is_no_space(&e) => {
                tracing::warn!(path = %path.display(), error = %e, "no space to grow the active index; it is cut to its entries and the segment rolls at its next index entry");
                file.set_len((kept * N) as u64)?;
                Self::map(path, file.as_ref(), kept, kept, false)
            }
            Err(e) => Err(e),
        }
    }

    /// Maps `capacity` entries of `file` (at `path`), `len` of them
    /// visible. The caller closes the file: the map outlives it.
    fn map(
        path: &Path,
        file: &dyn StorageFile,
        capacity: usize,
        len: usize,
        sealed: bool,
    ) -> io::Result<Self> {
        let map = if capacity == 0 {
            None
        } else {
            let map = MmapOptions::new()
                .len(capacity * N)
                .map_raw(file.std_file())?;
            // A fault reads its own page only. The kernel's read-around
            // (up to the disk's read-ahead: the whole preallocated file)
            // would fill the page cache with the reserved tail's zeros,
            // which `SEEK_DATA` then counts as data at the next open.
            // Advice only: without it, more is read, nothing else.
            let _ = map.advise(memmap2::Advice::Random);
            Some(IndexMap::pinned(path.to_owned(), Arc::new(map)))
        };
        Ok(MappedIndex {
            path: path.to_owned(),
            map,
            sealed: AtomicBool::new(sealed),
            capacity,
            len: AtomicUsize::new(len),
        })
    }

    /// Entries visible to readers.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Entries the index has room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The entries visible now, through one reference to the map (mapped
    /// again if the cache unmapped it). `None` when there are none, or
    /// when a released index cannot be mapped again (logged): callers then
    /// do without the index (a lookup falls back to the segment start).
    pub fn view(&self) -> Option<View<N>> {
        let len = self.len();
        if len == 0 {
            return None;
        }
        match self.map.as_ref()?.get() {
            Ok(map) => Some(View { map, len }),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot map the sealed index again; reads of its segment scan from the segment start");
                None
            }
        }
    }

    /// Entry `i`, which must be below [`len`](Self::len) (zeroes
    /// otherwise, or when the index cannot be mapped).
    pub fn get(&self, i: usize) -> [u8; N] {
        self.view().map_or([0; N], |view| view.get(i))
    }

    /// The pinned, writable map of an index not sealed yet. Writer only.
    fn writable(&self) -> Option<Arc<MmapRaw>> {
        if self.sealed.load(Ordering::Acquire) {
            return None;
        }
        self.map.as_ref()?.get().ok()
    }

    /// Hands a sealed index's map to `cache` (see
    /// [`super::open_segments`]): from now on it is unmapped when cold and
    /// mapped again (read-only) by the next lookup. Does nothing for an
    /// index not sealed (its map stays pinned).
    pub fn release(&self, fs: Arc<dyn FileSystem>, cache: &OpenSegments) {
        if let Some(map) = &self.map
            && self.sealed.load(Ordering::Acquire)
        {
            map.release(fs, cache, self.path.clone(), self.len() * N);
        }
    }

    /// The file was renamed to `path` (a rebuilt index, sealed under a
    /// temp name): mapping it again uses the new name.
    pub fn renamed_to(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// Whether the map is there now (not unmapped by the cache).
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        self.map.as_ref().is_some_and(|map| map.is_open())
    }

    /// Appends an entry; `false` when the index is full (or sealed).
    /// Writer only.
    pub fn push(&self, entry: [u8; N]) -> bool {
        let len = self.len.load(Ordering::Relaxed);
        let Some(map) = self.writable() else {
            return false;
        };
        if len >= self.capacity || (len + 1) * N > map.len() {
            return false;
        }
        // SAFETY: `(len + 1) * N <= map.len()`: inside the map. Only the single writer
        // writes, and readers do not read slot `len` until the release
        // store below publishes it.
        unsafe {
            std::ptr::copy_nonoverlapping(entry.as_ptr(), map.as_mut_ptr().add(len * N), N);
        }
        self.len.store(len + 1, Ordering::Release);
        true
    }

    /// Drops entries from `keep` on, zeroing them so that a later recovery
    /// never mistakes them for valid ones. Writer only, with no readers of
    /// the dropped entries (recovery, or a failed append's rollback).
    pub fn truncate(&self, keep: usize) {
        let Some(map) = self.writable() else { return };
        let len = self.len.load(Ordering::Relaxed);
        if keep >= len {
            return;
        }
        let end = (map.len() / N).min(len.max(keep));
        self.len.store(keep.min(len), Ordering::Release);
        if end > keep {
            // SAFETY: `keep..end` is inside the map (`end * N <= map.len()`), and the
            // count no longer covers it, so no reader looks at these bytes.
            unsafe {
                std::ptr::write_bytes(map.as_mut_ptr().add(keep * N), 0, (end - keep) * N);
            }
        }
    }

    /// Writes the mapped entries to disk (nothing to do once sealed: the
    /// seal flushed and synced them).
    pub fn flush(&self) -> io::Result<()> {
        match self.writable() {
            Some(map) => map.flush(),
            None => Ok(()),
        }
    }

    /// Seals: flushes, reopens the file, cuts it to exactly its entries,
    /// syncs. Does nothing once sealed.
    #[cfg(test)]
    pub fn seal(&self, fs: &dyn FileSystem) -> io::Result<()> {
        match self.open_to_seal(fs)? {
            Some(file) => self.seal_with(file.as_ref()),
            None => Ok(()),
        }
    }

    /// The first step of a seal: reopens the file (nothing is changed);
    /// `None` when the index is sealed already.
    pub fn open_to_seal(&self, fs: &dyn FileSystem) -> io::Result<Option<Arc<dyn StorageFile>>> {
        if self.sealed.load(Ordering::Acquire) {
            return Ok(None);
        }
        fs.open(&self.path, OpenMode::ReadWrite).map(Some)
    }

    /// The rest of the seal, through `file` (from
    /// [`open_to_seal`](Self::open_to_seal)): flushes the map, cuts the
    /// file to exactly its entries, syncs it. Writer only.
    pub fn seal_with(&self, file: &dyn StorageFile) -> io::Result<()> {
        self.flush()?;
        file.set_len((self.len() * N) as u64)?;
        file.sync_data()?;
        self.sealed.store(true, Ordering::Release);
        Ok(())
    }
}

/// An index's entries as they were when the view was taken, through one
/// reference to its map (which stays mapped while the view lives, even if
/// the cache lets go of it meanwhile).
pub(crate) struct View<const N: usize> {
    map: Arc<MmapRaw>,
    len: usize,
}

impl<const N: usize> View<N> {
    /// Entries in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Entry `i`; zeroes when `i` is not below [`len`](Self::len).
    pub fn get(&self, i: usize) -> [u8; N] {
        let mut entry = [0u8; N];
        if i < self.len && (i + 1) * N <= self.map.len() {
            // SAFETY: the N bytes at `i * N` lie inside the map (checked
            // above); entries below `len` are inside the file (whose size
            // is at least `len * N`) and are never written again once
            // published.
            unsafe {
                std::ptr::copy_nonoverlapping(self.map.as_ptr().add(i * N), entry.as_mut_ptr(), N);
            }
        }
        entry
    }
}

/// Reads the first `present` entries of an active index file with
/// `pread`, not through a map (the file may be sparse), and only where the
/// file may hold data ([`StorageFile::data_after`]): the preallocated
/// tail, never written, reads as zeros without being read (a read of it
/// would fill the page cache with zeros, 640 KiB per partition with the
/// defaults). Not a byte outside those ranges is read: an entry partly in
/// a hole has zeros there (a read past the range would fill the page
/// cache there, making it data for the next `SEEK_DATA`). Returns the
/// entries from the first on up to the first one wholly in a hole (the
/// only ones that can be kept), and how many entries there are up to the
/// last non-zero one (those after it are zeros). Read-ahead is off for
/// the same reason.
fn read_entries<const N: usize>(
    file: &dyn StorageFile,
    present: usize,
) -> io::Result<(Vec<u8>, usize)> {
    // Advice only: without it the reads cost more, and nothing else.
    let _ = file.advise(0, 0, Advice::Random);
    let end = (present * N) as u64;
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < end {
        match file.data_after(pos)? {
            Some((start, stop)) if start >= pos && start < end && stop > start => {
                ranges.push((start, stop.min(end)));
                pos = stop;
            }
            _ => break,
        }
    }
    let n = N as u64;
    let mut first = Vec::new();
    let mut used = 0;
    let mut i = 0;
    while i < ranges.len() {
        // A span of whole entries, with every range that shares an entry
        // with it.
        let from = ranges[i].0 / n * n;
        let mut to = ranges[i].1.div_ceil(n) * n;
        let mut j = i + 1;
        while j < ranges.len() && ranges[j].0 < to {
            to = ranges[j].1.div_ceil(n) * n;
            j += 1;
        }
        let mut bytes = vec![0u8; (to - from) as usize];
        for &(start, stop) in &ranges[i..j] {
            let at = (start - from) as usize..(stop - from) as usize;
            // A short read (the file is shorter than it was) leaves zeros.
            read_full_at(file, &mut bytes[at], start)?;
        }
        let last = bytes
            .chunks_exact(N)
            .rposition(|e| e.iter().any(|&b| b != 0));
        if let Some(last) = last {
            used = (from / n) as usize + last + 1;
        }
        if from == 0 {
            first = bytes;
        }
        i = j;
    }
    Ok((first, used))
}

/// The offset index of a segment.
#[derive(Debug)]
pub(crate) struct OffsetIndex(pub MappedIndex<8>);

impl OffsetIndex {
    /// Records that the batch at `relative_offset` starts at `position`.
    pub fn push(&self, relative_offset: u32, position: u32) -> bool {
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&relative_offset.to_le_bytes());
        entry[4..].copy_from_slice(&position.to_le_bytes());
        self.0.push(entry)
    }

    /// Entry `i` as `(relative_offset, position)`.
    pub fn entry(&self, i: usize) -> (u32, u32) {
        decode_offset_entry(&self.0.get(i))
    }

    /// The position of the last entry at or before byte `position` of the
    /// log (a batch boundary), if any.
    pub fn position_at_or_before(&self, position: u64) -> Option<u64> {
        let view = self.0.view()?;
        let entry = |i| decode_offset_entry(&view.get(i));
        let after = partition_point(view.len(), |i| u64::from(entry(i).1) <= position);
        after.checked_sub(1).map(|i| u64::from(entry(i).1))
    }

    /// The last entry at or before `relative_offset`: where a scan for it
    /// starts. `(0, 0)` (the segment start) when there is none.
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let Some(view) = self.0.view() else {
            return (0, 0);
        };
        let entry = |i| decode_offset_entry(&view.get(i));
        let after = partition_point(view.len(), |i| entry(i).0 <= relative_offset);
        if after == 0 { (0, 0) } else { entry(after - 1) }
    }
}

/// The time index of a segment.
#[derive(Debug)]
pub(crate) struct TimeIndex(pub MappedIndex<12>);

impl TimeIndex {
    /// Records that batches from `relative_offset` on have timestamps ≥ `timestamp`.
    pub fn push(&self, timestamp: i64, relative_offset: u32) -> bool {
        let mut entry = [0u8; 12];
        entry[..8].copy_from_slice(&timestamp.to_le_bytes());
        entry[8..].copy_from_slice(&relative_offset.to_le_bytes());
        self.0.push(entry)
    }

    /// Entry `i` as `(timestamp, relative_offset)`.
    pub fn entry(&self, i: usize) -> (i64, u32) {
        decode_time_entry(&self.0.get(i))
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<(i64, u32)> {
        let view = self.0.view()?;
        Some(decode_time_entry(&view.get(view.len() - 1)))
    }

    /// Relative offset to start a scan for the first record at or after
    /// `timestamp`: the last entry strictly before it, else 0 (also when
    /// the index cannot be mapped).
    pub fn lookup(&self, timestamp: i64) -> u32 {
        let Some(view) = self.0.view() else {
            return 0;
        };
        let entry = |i| decode_time_entry(&view.get(i));
        let after = partition_point(view.len(), |i| entry(i).0 < timestamp);
        if after == 0 { 0 } else { entry(after - 1).1 }
    }
}

/// Whether an I/O error means the disk is full.
fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull
}

pub(crate) fn decode_offset_entry(entry: &[u8; 8]) -> (u32, u32) {
    let rel = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let pos = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
    (rel, pos)
}

pub(crate) fn decode_time_entry(entry: &[u8; 12]) -> (i64, u32) {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&entry[..8]);
    let rel = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
    (i64::from_le_bytes(ts), rel)
}

/// First `i` in `0..len` for which `pred(i)` is false (pred must be true
/// then false over the range).
fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdFs;

    #[test]
    fn lookup_finds_the_last_entry_at_or_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index =
            OffsetIndex(MappedIndex::create(&StdFs, &dir.path().join("i"), 8).expect("create"));
        assert_eq!(index.lookup(5), (0, 0));
        for (rel, pos) in [(10, 4096), (20, 8200), (35, 12300)] {
            assert!(index.push(rel, pos));
        }
        assert_eq!(index.lookup(9), (0, 0));
        assert_eq!(index.lookup(10), (10, 4096));
        assert_eq!(index.lookup(34), (20, 8200));
        assert_eq!(index.lookup(u32::MAX), (35, 12300));
    }

    #[test]
    fn sealed_index_reopens_with_exact_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        let index = TimeIndex(MappedIndex::create(&StdFs, &path, 100).expect("create"));
        index.push(1000, 3);
        index.push(2000, 9);
        index.0.seal(&StdFs).expect("seal");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 24);
        let reopened = TimeIndex(MappedIndex::open_sealed(&StdFs, &path).expect("open"));
        assert_eq!(reopened.last(), Some((2000, 9)));
        assert_eq!(reopened.lookup(1500), 3);
        assert_eq!(reopened.lookup(1000), 0);
    }

    /// This process's file descriptors open on `path`.
    fn fds_on(path: &Path) -> usize {
        let path = path.canonicalize().expect("canonical path");
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| *target == path)
            .count()
    }

    #[test]
    fn the_file_is_not_held_open_and_the_seal_reopens_it_to_cut_and_sync() {
        use crate::io::{Fault, FaultPlan, FaultyFs, Op};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.index");
        let plan = FaultPlan::new();
        let fs = FaultyFs::new(plan.clone());
        let index = OffsetIndex(MappedIndex::create(&fs, &path, 100).expect("create"));
        assert_eq!(fds_on(&path), 0, "only the map is kept");
        for (rel, pos) in [(10, 4096), (20, 8200), (35, 12300)] {
            assert!(index.push(rel, pos), "stores through the map");
        }
        let name = "00000000000000000000.index";
        // A failed reopen changes nothing, and the seal can be retried.
        plan.inject(Op::Open, name, Fault::Io, 0, Some(1));
        index.0.seal(&fs).expect_err("the reopen fails");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 800);
        let (opens, syncs) = (plan.calls(Op::Open, name), plan.calls(Op::Sync, name));
        index.0.seal(&fs).expect("seal");
        assert_eq!(plan.calls(Op::Open, name), opens + 1, "reopened to seal");
        assert_eq!(plan.calls(Op::Sync, name), syncs + 1, "synced");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 24, "cut");
        assert_eq!(fds_on(&path), 0, "closed again");
        index.0.seal(&fs).expect("sealed already");
        assert_eq!(plan.calls(Op::Open, name), opens + 1, "not reopened");
        assert_eq!(index.lookup(34), (20, 8200), "the map still serves");
        let reopened = OffsetIndex(MappedIndex::open_sealed(&StdFs, &path).expect("open sealed"));
        assert_eq!(fds_on(&path), 0);
        assert_eq!(reopened.0.len(), 3);
        assert_eq!(reopened.lookup(u32::MAX), (35, 12300));
    }

    #[test]
    fn sealed_index_of_partial_entry_size_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i");
        std::fs::write(&path, [1u8; 13]).expect("write");
        let err = MappedIndex::<8>::open_sealed(&StdFs, &path).expect_err("partial entry");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn active_index_keeps_only_accepted_prefix_and_zeroes_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i");
        let index = OffsetIndex(MappedIndex::create(&StdFs, &path, 4).expect("create"));
        let index_file_len = |p: &Path| std::fs::metadata(p).expect("meta").len();
        for (rel, pos) in [(1, 100), (2, 200), (3, 300)] {
            index.push(rel, pos);
        }
        index.0.flush().expect("flush");
        drop(index);
        let keep_below_250 = |e: &[u8; 8], _: Option<&[u8; 8]>| decode_offset_entry(e).1 < 250;
        let reopened =
            OffsetIndex(MappedIndex::open_active(&StdFs, &path, 4, keep_below_250).expect("open"));
        assert_eq!(reopened.0.len(), 2);
        assert_eq!(index_file_len(&path), 32);
        reopened.0.flush().expect("flush");
        drop(reopened);
        let again =
            OffsetIndex(MappedIndex::open_active(&StdFs, &path, 4, |_, _| true).expect("open"));
        assert_eq!(
            again.0.len(),
            2,
            "the dropped entry was zeroed, not resurrected"
        );
    }
}
