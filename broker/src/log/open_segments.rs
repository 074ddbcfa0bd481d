//! The broker-wide bound on open segment files: [`OpenSegments`], a CLOCK
//! (second-chance) cache of the sealed segments whose `.log` file is open,
//! and [`SegmentFile`], one segment's `.log` file as its readers and its
//! writer reach it.
//!
//! ## What is open
//!
//! - A segment its writer holds keeps its `.log` open: the active segment,
//!   and a sealed one until its sync has completed (it may become the
//!   active one again if that sync fails, see [`super::writer::seal`]). Such
//!   a file is *pinned*: it is not in the cache and is never closed while
//!   the segment lives. One fd per partition log, two during a background
//!   seal.
//! - Once a sealed segment is synced for good (at the roll under
//!   `fsync=always`, when its background seal completed otherwise, or when
//!   the log is opened), the writer *releases* it to the cache
//!   ([`SegmentFile::release`]). From then on its file is open only while
//!   it is among the cache's `max_open_segments` entries: a read of a
//!   closed one reopens it (read-only; a released segment is never written
//!   again), which may close the coldest other one.
//! - Index files are never held open (see [`super::index`]); their memory
//!   maps are, and this cache does not bound them: two maps per segment
//!   (of the process's `vm.max_map_count`, 65,530 by default), for sealed
//!   segments too. See docs/storage.md, "Open files and maps".
//!
//! ## Policy
//!
//! CLOCK: each entry has a referenced bit, set by every read. To make room
//! the hand sweeps the entries: a set bit is cleared and the entry passed
//! over (a second chance); the first entry found with a clear bit is
//! closed. Entries of segments dropped meanwhile (retention deleted them
//! and no reader holds them) are found dead and removed without closing
//! anything: their file closed when the segment was dropped.
//!
//! ## Invariants
//!
//! - A read of an open file never takes the cache's lock: it read-locks its
//!   own segment's slot (shared with the other readers), clones the file's
//!   `Arc` and sets the referenced bit. The cache's lock is taken only to
//!   admit a reopened (or released) file and close another.
//! - An in-flight read holds an `Arc` of the file: closing it in the cache
//!   only drops the cache's reference, and the fd closes when the read is
//!   done with it.
//! - The cache never waits for a segment's slot: it passes over a slot that
//!   is busy (being reopened) as if its bit were set, and gives up after two
//!   sweeps. So for a moment the count may exceed the bound by the slots
//!   busy then; the next admission closes again.
//! - A pinned file is never closed, so the writer's file access cannot fail
//!   for being closed. A released file that cannot be reopened (retention
//!   deleted it after a reader took its snapshot, an I/O error) fails the
//!   read that needed it with the operating system's error, which the
//!   caller wraps like any failed read (`LogError::Io`, "reading …").
//! - Deleting a segment's files (retention, trim) needs nothing from the
//!   cache: an open file stays readable after its unlink and is closed
//!   when its segment is dropped or it is evicted.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock};

use crate::io::{FileSystem, OpenMode, StorageFile};

/// `max_open_segments` by default.
pub const DEFAULT_MAX_OPEN_SEGMENTS: usize = 1024;

/// The broker-wide cache of released segments' open `.log` files. Cheap to
/// clone (shared); every log opened with the same [`super::LogConfig`]
/// shares it.
#[derive(Clone)]
pub struct OpenSegments {
    inner: Arc<Inner>,
}

struct Inner {
    /// Most released files open at once.
    capacity: usize,
    ring: Mutex<Ring>,
    /// Files reopened after they were closed (or first opened on demand).
    reopened: AtomicU64,
    /// Files closed to make room.
    closed: AtomicU64,
}

/// The clock: entries in no particular order, and the hand.
#[derive(Default)]
struct Ring {
    entries: Vec<Weak<SegmentFile>>,
    hand: usize,
}

impl OpenSegments {
    /// A cache keeping at most `capacity` released files open (at least one).
    pub fn new(capacity: usize) -> OpenSegments {
        OpenSegments {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                ring: Mutex::new(Ring::default()),
                reopened: AtomicU64::new(0),
                closed: AtomicU64::new(0),
            }),
        }
    }

    /// Most released files open at once.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Released files in the cache now: open, or (a few) of segments
    /// dropped since, not yet swept. At most the capacity but for a moment
    /// (see the module doc).
    pub fn len(&self) -> usize {
        self.inner.ring.lock().entries.len()
    }

    /// Whether no released file is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files opened again on demand since the cache was made.
    pub fn reopened(&self) -> u64 {
        self.inner.reopened.load(Ordering::Relaxed)
    }

    /// Files closed to make room since the cache was made.
    pub fn closed(&self) -> u64 {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Adds an open released file, closing others while over capacity.
    /// The files closed are dropped after the lock is released.
    fn admit(&self, file: &Arc<SegmentFile>) {
        let mut closed = Vec::new();
        {
            let mut ring = self.inner.ring.lock();
            ring.entries.push(Arc::downgrade(file));
            while ring.entries.len() > self.inner.capacity {
                match ring.evict_one() {
                    Some(file) => closed.extend(file),
                    None => break,
                }
            }
        }
        self.inner
            .closed
            .fetch_add(closed.len() as u64, Ordering::Relaxed);
    }
}

impl Default for OpenSegments {
    fn default() -> Self {
        OpenSegments::new(DEFAULT_MAX_OPEN_SEGMENTS)
    }
}

/// Two caches are equal settings when their capacities are.
impl PartialEq for OpenSegments {
    fn eq(&self, other: &Self) -> bool {
        self.capacity() == other.capacity()
    }
}

impl fmt::Debug for OpenSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenSegments")
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Makes room for one: closes the first entry whose referenced bit is
    /// clear (clearing the bits it passes over), or removes a dead entry.
    /// `Some(Some(file))`: `file` was closed in the cache (drop it);
    /// `Some(None)`: a dead entry was removed; `None`: every entry was busy
    /// or referenced over two sweeps.
    fn evict_one(&mut self) -> Option<Option<Arc<dyn StorageFile>>> {
        let mut steps = 2 * self.entries.len() + 1;
        while steps > 0 && !self.entries.is_empty() {
            steps -= 1;
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let Some(segment) = self.entries[self.hand].upgrade() else {
                self.entries.swap_remove(self.hand);
                return Some(None);
            };
            if segment.referenced.swap(false, Ordering::Relaxed) {
                self.hand += 1;
                continue;
            }
            let Some(mut slot) = segment.file.try_write() else {
                self.hand += 1;
                continue;
            };
            let file = slot.take();
            segment.advised.store(false, Ordering::Relaxed);
            drop(slot);
            self.entries.swap_remove(self.hand);
            return Some(file);
        }
        None
    }
}

/// One segment's `.log` file: open while pinned by the writer; once
/// released, opened on demand and closed by the cache when cold.
pub(crate) struct SegmentFile {
    path: PathBuf,
    /// The open file, `None` while closed (only once released).
    file: RwLock<Option<Arc<dyn StorageFile>>>,
    /// Read since the clock's hand last passed (CLOCK's second chance).
    referenced: AtomicBool,
    /// The open file was advised sequential (a cold read): advice given to
    /// one open file is lost when it closes.
    advised: AtomicBool,
    /// Set when the writer releases the file: how to reopen it and the
    /// cache that bounds it.
    released: OnceLock<Released>,
}

struct Released {
    fs: Arc<dyn FileSystem>,
    cache: OpenSegments,
}

impl SegmentFile {
    /// `file`, open at `path`, pinned: never closed until released.
    pub fn pinned(path: PathBuf, file: Arc<dyn StorageFile>) -> Arc<SegmentFile> {
        Arc::new(SegmentFile {
            path,
            file: RwLock::new(Some(file)),
            referenced: AtomicBool::new(true),
            advised: AtomicBool::new(false),
            released: OnceLock::new(),
        })
    }

    /// The open file, reopened (read-only) if the cache closed it. Fails
    /// only for a released file that cannot be reopened.
    pub fn get(self: &Arc<Self>) -> io::Result<Arc<dyn StorageFile>> {
        if let Some(file) = self.file.read().as_ref() {
            self.touch();
            return Ok(file.clone());
        }
        let Some(released) = self.released.get() else {
            // A pinned file is never closed: not reached.
            return Err(io::Error::other(format!(
                "{} is closed and was never released to be reopened",
                self.path.display()
            )));
        };
        let mut slot = self.file.write();
        if let Some(file) = slot.as_ref() {
            self.touch();
            return Ok(file.clone());
        }
        let file = released.fs.open(&self.path, OpenMode::Read)?;
        *slot = Some(file.clone());
        self.referenced.store(true, Ordering::Relaxed);
        drop(slot);
        released
            .cache
            .inner
            .reopened
            .fetch_add(1, Ordering::Relaxed);
        released.cache.admit(self);
        Ok(file)
    }

    /// Hands the file to `cache`: from now on it may be closed when cold,
    /// and is reopened through `fs`. Once only; later calls do nothing.
    pub fn release(self: &Arc<Self>, fs: Arc<dyn FileSystem>, cache: &OpenSegments) {
        let released = Released {
            fs,
            cache: cache.clone(),
        };
        if self.released.set(released).is_ok() && self.file.read().is_some() {
            cache.admit(self);
        }
    }

    /// Whether the file is open now.
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.file.read().is_some()
    }

    /// Whether this is the first cold read of the open file (which then
    /// advises it sequential).
    pub fn first_cold_read(&self) -> bool {
        !self.advised.swap(true, Ordering::Relaxed)
    }

    fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentFile")
            .field("path", &self.path)
            .field("open", &self.file.read().is_some())
            .field("released", &self.released.get().is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdFs;

    fn pinned(dir: &std::path::Path, name: &str) -> Arc<SegmentFile> {
        let path = dir.join(name);
        let file = StdFs.open(&path, OpenMode::Create).expect("create");
        SegmentFile::pinned(path, file)
    }

    #[test]
    fn a_file_read_since_the_hand_passed_gets_a_second_chance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = OpenSegments::new(2);
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let [a, b, c] = ["a", "b", "c"].map(|name| pinned(dir.path(), name));
        for file in [&a, &b] {
            file.release(fs.clone(), &cache);
        }
        assert!(a.is_open() && b.is_open());
        assert_eq!(cache.len(), 2);
        // A third: every bit is set, so the hand clears them all and
        // closes the first it meets again.
        c.release(fs.clone(), &cache);
        assert!(!a.is_open() && b.is_open() && c.is_open());
        assert_eq!((cache.len(), cache.closed()), (2, 1));
        // `b` is read, `c` is not: reopening `a` closes `c`.
        b.get().expect("open");
        a.get().expect("reopened");
        assert!(a.is_open() && b.is_open() && !c.is_open());
        assert_eq!((cache.reopened(), cache.closed()), (1, 2));
    }

    #[test]
    fn pinned_files_are_never_closed_and_dropped_segments_leave_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = OpenSegments::new(1);
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let active = pinned(dir.path(), "active");
        let a = pinned(dir.path(), "a");
        a.release(fs.clone(), &cache);
        let b = pinned(dir.path(), "b");
        b.release(fs.clone(), &cache);
        assert!(active.is_open(), "not in the cache: never closed");
        assert_eq!(cache.len(), 1);
        // A dropped segment's entry is swept without closing anything.
        assert!(!a.is_open() && b.is_open());
        drop(b);
        let c = pinned(dir.path(), "c");
        c.release(fs, &cache);
        assert!(c.is_open(), "the dead entry made the room");
        assert_eq!((cache.len(), cache.closed()), (1, 1));
    }
}
