//! The broker-wide bound on what sealed segments hold open:
//! [`OpenSegments`], two CLOCK (second-chance) caches, one of `.log` files
//! and one of index maps, and [`Cached`], one thing a segment holds open as
//! its readers and its writer reach it: its `.log` file ([`SegmentFile`])
//! or one of its two index maps ([`IndexMap`]).
//!
//! ## What is open
//!
//! - A segment its writer holds keeps its `.log` open and its index maps
//!   mapped: the active segment, and a sealed one until its sync has
//!   completed (it may become the active one again if that sync fails, see
//!   [`super::writer::seal`]). Such a file or map is *pinned*: it is not in
//!   a cache and is never closed while the segment lives. One fd and two
//!   maps per partition log, twice that during a background seal.
//! - Once a sealed segment is synced for good (at the roll under
//!   `fsync=always`, when its background seal completed otherwise, or when
//!   the log is opened), the writer *releases* it to the caches
//!   ([`Cached::release_to`], through `SegmentFile::release` and
//!   `IndexMap::release`). From then on its file is open only while it is
//!   among the `max_open_segments` entries of the file cache, and each
//!   index map is mapped only while it is among the `2 × max_open_segments`
//!   entries of the map cache: a read of a closed one reopens it
//!   (read-only; a released segment is never written again), which may
//!   close the coldest other one of its cache.
//! - Index files are never held open (see [`super::index`]): a map is
//!   made from a file opened for the mapping only. So what a broker holds
//!   is bounded, against `ulimit -n` and the kernel's `vm.max_map_count`
//!   (65,530 by default), by one fd and two maps per partition log plus
//!   `max_open_segments` fds and `2 × max_open_segments` maps. See
//!   docs/storage.md, "Open files and maps".
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
//! - A read of an open file (or a lookup in a mapped index) never takes
//!   the cache's lock: it read-locks its own slot (shared with the other
//!   readers), clones the file's (map's) `Arc` and sets the referenced bit.
//!   The cache's lock is taken only to admit a reopened (or released) entry
//!   and close another.
//! - An in-flight read holds an `Arc` of the file or map: closing it in the
//!   cache only drops the cache's reference, and the fd closes (the map is
//!   unmapped) when the read is done with it.
//! - The cache never waits for a segment's slot: it passes over a slot that
//!   is busy (being reopened) as if its bit were set, and gives up after two
//!   sweeps. So for a moment the count may exceed the bound by the slots
//!   busy then; the next admission closes again.
//! - A pinned file is never closed, so the writer's file access cannot fail
//!   for being closed. A released file that cannot be reopened (retention
//!   deleted it after a reader took its snapshot, an I/O error) fails the
//!   read that needed it with the operating system's error, which the
//!   caller wraps like any failed read (`LogError::Io`, "reading …"). A
//!   released index map that cannot be made again makes the lookup do
//!   without the index (the read scans from the segment start, see
//!   [`super::index`]): the index is derived data.
//! - The active index's map is pinned and writable; a released (sealed)
//!   one is never written, and is mapped again read-only.
//! - Deleting a segment's files (retention, trim) needs nothing from the
//!   cache: an open file stays readable after its unlink and is closed
//!   when its segment is dropped or it is evicted.

use std::any::Any;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::{Mutex, RwLock};

use crate::io::{FileSystem, OpenMode, StorageFile};

/// `max_open_segments` by default.
pub const DEFAULT_MAX_OPEN_SEGMENTS: usize = 1024;

/// The broker-wide caches of released segments' open `.log` files and
/// index maps. Cheap to clone (shared); every log opened with the same
/// [`super::LogConfig`] shares them.
#[derive(Clone)]
pub struct OpenSegments {
    inner: Arc<Caches>,
}

struct Caches {
    /// `.log` files: at most `max_open_segments`.
    files: Clock,
    /// Index maps (two per segment): at most twice `max_open_segments`.
    maps: Clock,
}

/// One CLOCK cache: at most `capacity` released entries open.
struct Clock {
    /// Most released entries open at once.
    capacity: usize,
    ring: Mutex<Ring>,
    /// Entries reopened after they were closed (or first opened on demand).
    reopened: AtomicU64,
    /// Entries closed to make room.
    closed: AtomicU64,
}

/// The clock: entries in no particular order, and the hand.
#[derive(Default)]
struct Ring {
    entries: Vec<Weak<dyn Closable>>,
    hand: usize,
}

/// What the clock needs of an entry, whatever it holds open.
trait Closable: Send + Sync {
    /// CLOCK's second chance: whether it was used since the hand last
    /// passed (clearing the bit).
    fn take_referenced(&self) -> bool;
    /// Takes the open value out of its slot, to be dropped (closed) after
    /// the cache's lock is released; `Err(Busy)` when the slot is busy
    /// (being reopened).
    fn close(&self) -> Result<Option<Box<dyn Any + Send>>, Busy>;
}

struct Busy;

/// What an eviction step found.
enum Evicted {
    /// An entry closed in the cache: drop this (outside the lock).
    Closed(Option<Box<dyn Any + Send>>),
    /// A dead entry (its segment dropped) was removed.
    Dead,
}

impl OpenSegments {
    /// Caches keeping at most `capacity` released files, and twice as many
    /// index maps, open (at least one of each).
    pub fn new(capacity: usize) -> OpenSegments {
        let capacity = capacity.max(1);
        OpenSegments {
            inner: Arc::new(Caches {
                files: Clock::new(capacity),
                maps: Clock::new(capacity.saturating_mul(2)),
            }),
        }
    }

    /// Most released files open at once (`max_open_segments`).
    pub fn capacity(&self) -> usize {
        self.inner.files.capacity
    }

    /// Released files in the cache now: open, or (a few) of segments
    /// dropped since, not yet swept. At most the capacity but for a moment
    /// (see the module doc).
    pub fn len(&self) -> usize {
        self.inner.files.len()
    }

    /// Whether no released file is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files opened again on demand since the cache was made.
    pub fn reopened(&self) -> u64 {
        self.inner.files.reopened.load(Ordering::Relaxed)
    }

    /// Files closed to make room since the cache was made.
    pub fn closed(&self) -> u64 {
        self.inner.files.closed.load(Ordering::Relaxed)
    }

    /// Released index maps in the cache now (at most twice the capacity
    /// but for a moment).
    pub fn maps_len(&self) -> usize {
        self.inner.maps.len()
    }

    /// Index maps mapped again on demand, and unmapped to make room, since
    /// the cache was made.
    pub fn maps_reopened_and_closed(&self) -> (u64, u64) {
        let maps = &self.inner.maps;
        (
            maps.reopened.load(Ordering::Relaxed),
            maps.closed.load(Ordering::Relaxed),
        )
    }
}

impl Clock {
    fn new(capacity: usize) -> Clock {
        Clock {
            capacity,
            ring: Mutex::new(Ring::default()),
            reopened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    fn len(&self) -> usize {
        self.ring.lock().entries.len()
    }

    /// Adds an open released entry, closing others while over capacity.
    /// What is closed is dropped after the lock is released.
    fn admit(&self, entry: Weak<dyn Closable>) {
        let mut closed = Vec::new();
        {
            let mut ring = self.ring.lock();
            ring.entries.push(entry);
            while ring.entries.len() > self.capacity {
                match ring.evict_one() {
                    Some(Evicted::Closed(value)) => closed.push(value),
                    Some(Evicted::Dead) => {}
                    None => break,
                }
            }
        }
        self.closed
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
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Makes room for one: closes the first entry whose referenced bit is
    /// clear (clearing the bits it passes over), or removes a dead entry.
    /// `None`: every entry was busy or referenced over two sweeps.
    fn evict_one(&mut self) -> Option<Evicted> {
        let mut steps = 2 * self.entries.len() + 1;
        while steps > 0 && !self.entries.is_empty() {
            steps -= 1;
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let Some(entry) = self.entries[self.hand].upgrade() else {
                self.entries.swap_remove(self.hand);
                return Some(Evicted::Dead);
            };
            if entry.take_referenced() {
                self.hand += 1;
                continue;
            }
            let Ok(value) = entry.close() else {
                self.hand += 1;
                continue;
            };
            self.entries.swap_remove(self.hand);
            return Some(Evicted::Closed(value));
        }
        None
    }
}

/// One thing a segment holds open, `T`: its `.log` file
/// ([`SegmentFile`]) or an index's map ([`IndexMap`]). Open while pinned
/// by the writer; once released, opened on demand and closed by its cache
/// when cold.
pub(crate) struct Cached<T: ?Sized> {
    path: PathBuf,
    /// The open value, `None` while closed (only once released).
    value: RwLock<Option<Arc<T>>>,
    /// Used since the clock's hand last passed (CLOCK's second chance).
    referenced: AtomicBool,
    /// Set on first use of an open value, cleared when it closes (for the
    /// `.log` file: it was advised sequential, see
    /// [`SegmentFile::first_cold_read`]).
    advised: AtomicBool,
    /// Set when the writer releases it: how to reopen it and the cache
    /// that bounds it.
    released: OnceLock<Released<T>>,
}

/// A segment's `.log` file.
pub(crate) type SegmentFile = Cached<dyn StorageFile>;

/// A sealed index's memory map (its file is not held open, see
/// [`super::index`]).
pub(crate) type IndexMap = Cached<MmapRaw>;

type Reopen<T> = Box<dyn Fn() -> io::Result<Arc<T>> + Send + Sync>;

struct Released<T: ?Sized> {
    reopen: Reopen<T>,
    cache: OpenSegments,
    clock: fn(&Caches) -> &Clock,
}

impl<T: ?Sized + Send + Sync + 'static> Cached<T> {
    /// `value`, open (for `path`), pinned: never closed until released.
    pub fn pinned(path: PathBuf, value: Arc<T>) -> Arc<Cached<T>> {
        Arc::new(Cached {
            path,
            value: RwLock::new(Some(value)),
            referenced: AtomicBool::new(true),
            advised: AtomicBool::new(false),
            released: OnceLock::new(),
        })
    }

    /// The open value, reopened if the cache closed it. Fails only for a
    /// released value that cannot be reopened.
    pub fn get(self: &Arc<Self>) -> io::Result<Arc<T>> {
        if let Some(value) = self.value.read().as_ref() {
            self.touch();
            return Ok(value.clone());
        }
        let Some(released) = self.released.get() else {
            // A pinned value is never closed: not reached.
            return Err(io::Error::other(format!(
                "{} is closed and was never released to be reopened",
                self.path.display()
            )));
        };
        let mut slot = self.value.write();
        if let Some(value) = slot.as_ref() {
            self.touch();
            return Ok(value.clone());
        }
        let value = (released.reopen)()?;
        *slot = Some(value.clone());
        self.referenced.store(true, Ordering::Relaxed);
        drop(slot);
        let clock = (released.clock)(&released.cache.inner);
        clock.reopened.fetch_add(1, Ordering::Relaxed);
        clock.admit(Arc::downgrade(self) as Weak<dyn Closable>);
        Ok(value)
    }

    /// Hands the value to `cache`'s `clock`: from now on it may be closed
    /// when cold, and is reopened by `reopen`. Once only; later calls do
    /// nothing.
    fn release_to(
        self: &Arc<Self>,
        cache: &OpenSegments,
        clock: fn(&Caches) -> &Clock,
        reopen: Reopen<T>,
    ) {
        let released = Released {
            reopen,
            cache: cache.clone(),
            clock,
        };
        if self.released.set(released).is_ok() && self.value.read().is_some() {
            clock(&cache.inner).admit(Arc::downgrade(self) as Weak<dyn Closable>);
        }
    }

    /// Whether it is open now.
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.value.read().is_some()
    }

    fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }
}

impl<T: ?Sized + Send + Sync + 'static> Closable for Cached<T> {
    fn take_referenced(&self) -> bool {
        self.referenced.swap(false, Ordering::Relaxed)
    }

    fn close(&self) -> Result<Option<Box<dyn Any + Send>>, Busy> {
        let mut slot = self.value.try_write().ok_or(Busy)?;
        let value = slot.take();
        self.advised.store(false, Ordering::Relaxed);
        Ok(value.map(|value| Box::new(value) as Box<dyn Any + Send>))
    }
}

impl SegmentFile {
    /// Hands the file to `cache`: from now on it may be closed when cold,
    /// and is reopened (read-only; a released segment is never written
    /// again) through `fs`. Once only; later calls do nothing.
    pub fn release(self: &Arc<Self>, fs: Arc<dyn FileSystem>, cache: &OpenSegments) {
        let path = self.path.clone();
        let reopen = Box::new(move || fs.open(&path, OpenMode::Read));
        self.release_to(cache, |caches| &caches.files, reopen);
    }

    /// Whether this is the first cold read of the open file (which then
    /// advises it sequential).
    pub fn first_cold_read(&self) -> bool {
        !self.advised.swap(true, Ordering::Relaxed)
    }
}

impl IndexMap {
    /// Hands a sealed index's map to `cache`: from now on it may be
    /// unmapped when cold, and is mapped again (read-only, `len` bytes; a
    /// sealed index is never written again) from its file at `path`
    /// (where it is now: a rebuilt index was renamed), opened through `fs`
    /// for the mapping only. Once only; later calls do nothing.
    pub fn release(
        self: &Arc<Self>,
        fs: Arc<dyn FileSystem>,
        cache: &OpenSegments,
        path: PathBuf,
        len: usize,
    ) {
        let reopen = Box::new(move || {
            let file = fs.open(&path, OpenMode::Read)?;
            let size = file.len()?;
            if size < len as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the sealed index holds {size} bytes, {len} expected"),
                ));
            }
            MmapOptions::new()
                .len(len)
                .map_raw_read_only(file.std_file())
                .map(Arc::new)
        });
        self.release_to(cache, |caches| &caches.maps, reopen);
    }
}

impl<T: ?Sized> fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("path", &self.path)
            .field("open", &self.value.read().is_some())
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
