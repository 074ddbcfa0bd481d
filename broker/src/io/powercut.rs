//! A [`FileSystem`] that can simulate a power cut, for tests of what an
//! acknowledgement really promises.
//!
//! A `kill -9` keeps the page cache, so it never proves that acknowledged
//! data was synced. [`PowerCutFs`] works on real files (through [`StdFs`])
//! and tracks, beside them, what a power cut would leave;
//! [`PowerCutFs::power_cut`] then rewrites the real files to exactly that.
//!
//! ## The model
//!
//! - **File contents.** Each file (an inode: it keeps its identity across
//!   renames and after an unlink while open) has a *durable image*: its
//!   bytes and size as of its last completed [`StorageFile::sync_data`]. A
//!   file created through this file system starts with an empty durable
//!   image; a file that already existed when first touched is taken as
//!   durable as it is (a test starts from a synced or freshly recovered
//!   state).
//! - **Directory entries.** A create, rename or delete is durable once a
//!   [`FileSystem::sync_dir`] of its parent directory completes after it.
//!   Until then a power cut undoes it: a new file vanishes, a renamed file
//!   is back under its old name (and the replaced file is back), a deleted
//!   file is back with its durable image. Directories themselves are not
//!   tracked: `create_dir_all` and `remove_dir_all` count as durable at once.
//! - **At the cut** every write, truncation or extension not covered by a
//!   completed `sync_data` of its file is dropped: the file goes back to its
//!   durable image. Except, chosen at random per file: if the last operation
//!   on a file since its last sync was a write, a prefix of that write ending
//!   on a 512-byte boundary of the file (possibly empty, possibly all of it)
//!   may survive on top of the durable image — a torn write (the whole
//!   write surviving is one of the choices).
//! - **Index files** (`.index`, `.timeindex`) are written through a memory
//!   map, which bypasses `write_at`. They are derived data (recovery checks
//!   them against the log and rebuilds them), so at the cut each surviving
//!   index file keeps its current bytes (as if the kernel had written every
//!   dirty mapped page back), except that a file whose size was changed
//!   since its last `sync_data` (the active segment's preallocated index,
//!   not a sealed one: sealing syncs after cutting the file to size) is,
//!   chosen at random, cut to a random length. Directory-entry rules apply to
//!   index files like to any other file.
//! - Failures: [`PowerCutFs::fail_after`] makes every call after the next
//!   `n` mutating calls fail with `EIO` ("the power is off"), so that a cut
//!   can land in the middle of a roll, a checkpoint or a recovery.
//!
//! The real `fdatasync` and directory `fsync` are not called: durability is
//! simulated, which also keeps the tests fast. Call
//! [`PowerCutFs::power_cut`] only once nothing uses the file system any more
//! (drop the log first); handles opened before a cut must not be used after
//! it. After a cut the model starts afresh: what is on disk is durable.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileSystem, OpenMode, StdFs, StorageFile};

/// Writes are torn at multiples of this (the traditional sector size).
pub const SECTOR: u64 = 512;

type FileId = u64;

/// What is known of one file (inode).
#[derive(Debug)]
struct Tracked {
    /// An open handle on it, to read it even after it was unlinked.
    handle: Arc<dyn StorageFile>,
    /// Its content as of its last completed `sync_data`.
    durable: Vec<u8>,
    /// A write or size change happened since the last sync.
    dirty: bool,
    /// The size changed (`set_len`) since the last sync.
    resized: bool,
    /// The last operation since the last sync, if it was a write:
    /// `(position, bytes)`.
    last_write: Option<(u64, Vec<u8>)>,
    is_index: bool,
}

#[derive(Debug, Default)]
struct State {
    next_id: FileId,
    files: HashMap<FileId, Tracked>,
    /// Path → file as the running system sees it.
    current: HashMap<PathBuf, FileId>,
    /// Path → file as a power cut would leave it.
    durable: HashMap<PathBuf, FileId>,
    /// Mutating calls still allowed before everything fails (`None`: no limit).
    budget: Option<u64>,
    /// Counts of mutating calls, for reports.
    ops: u64,
}

/// A file system over real files that can undo what was not synced. See
/// the module doc for the model.
#[derive(Debug, Clone, Default)]
pub struct PowerCutFs {
    state: Arc<Mutex<State>>,
}

/// What a power cut did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose unsynced changes were dropped (reverted to their durable image).
    pub reverted: usize,
    /// Files where a prefix of the last unsynced write survived.
    pub torn: usize,
    /// Files that vanished (created or renamed in since the last dir sync).
    pub vanished: usize,
    /// Files that came back (deleted or renamed away since the last dir sync).
    pub restored: usize,
    /// Index files cut to a random length.
    pub index_truncated: usize,
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut: the power is off")
}

fn is_index(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("index" | "timeindex")
    )
}

/// splitmix64: a small seeded generator, so that a cut replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            self.next()
        } else {
            self.next() % (max + 1)
        }
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn read_whole(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = file.len()? as usize;
    let mut buf = vec![0u8; len];
    let read = super::read_full_at(file, &mut buf, 0)?;
    buf.truncate(read);
    Ok(buf)
}

impl State {
    /// Counts a mutating call; fails once the budget is spent.
    fn spend(&mut self) -> io::Result<()> {
        self.ops += 1;
        match &mut self.budget {
            Some(0) => Err(power_off()),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn check_power(&self) -> io::Result<()> {
        match self.budget {
            Some(0) => Err(power_off()),
            _ => Ok(()),
        }
    }

    /// The file at `path`, registering a file that existed before this file
    /// system touched it as durable as it is.
    fn track_existing(&mut self, path: &Path) -> io::Result<Option<FileId>> {
        if let Some(&id) = self.current.get(path) {
            return Ok(Some(id));
        }
        if !path.is_file() {
            return Ok(None);
        }
        let handle = StdFs.open(path, OpenMode::Read)?;
        let durable = read_whole(handle.as_ref())?;
        let id = self.insert(handle, durable, path);
        self.durable.insert(path.to_owned(), id);
        Ok(Some(id))
    }

    fn insert(&mut self, handle: Arc<dyn StorageFile>, durable: Vec<u8>, path: &Path) -> FileId {
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(
            id,
            Tracked {
                handle,
                durable,
                dirty: false,
                resized: false,
                last_write: None,
                is_index: is_index(path),
            },
        );
        self.current.insert(path.to_owned(), id);
        id
    }

    fn file(&mut self, id: FileId) -> &mut Tracked {
        self.files.get_mut(&id).expect("tracked file")
    }
}

impl PowerCutFs {
    /// A file system with nothing tracked yet.
    pub fn new() -> PowerCutFs {
        PowerCutFs::default()
    }

    /// After `n` more mutating calls (open for writing, write, sync,
    /// set_len, rename, remove, dir sync) every call fails with `EIO`, as if
    /// the machine had lost power at that point.
    pub fn fail_after(&self, n: u64) {
        self.state.lock().budget = Some(n);
    }

    /// Whether the simulated power is off (a [`fail_after`](Self::fail_after)
    /// budget ran out).
    pub fn is_off(&self) -> bool {
        self.state.lock().budget == Some(0)
    }

    /// Mutating calls made so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Rewrites the real files to what a power cut would leave (see the
    /// module doc), choosing torn writes and index lengths from `rng_seed`,
    /// and starts the model afresh. Nothing may use the file system during
    /// the call, and handles opened before it must not be used after it.
    pub fn power_cut(&self, rng_seed: u64) -> io::Result<CutReport> {
        let mut state = self.state.lock();
        let mut rng = Rng(rng_seed);
        let mut report = CutReport::default();
        // What each surviving path will hold, computed before touching disk.
        let mut survivors: Vec<(&PathBuf, FileId)> =
            state.durable.iter().map(|(p, &id)| (p, id)).collect();
        survivors.sort();
        let mut images: Vec<(PathBuf, Vec<u8>)> = Vec::with_capacity(survivors.len());
        for (path, id) in survivors {
            let file = &state.files[&id];
            let image = if file.is_index {
                let mut bytes = read_whole(file.handle.as_ref())?;
                if file.resized && rng.coin() {
                    bytes.truncate(rng.upto(bytes.len() as u64) as usize);
                    report.index_truncated += 1;
                }
                bytes
            } else {
                let mut bytes = file.durable.clone();
                if file.dirty {
                    report.reverted += 1;
                }
                if let Some((pos, data)) = &file.last_write
                    && rng.coin()
                {
                    let end = pos + data.len() as u64;
                    // Sector boundaries inside the write, plus its start.
                    let first = pos.div_ceil(SECTOR);
                    let last = end / SECTOR;
                    let mut cuts: Vec<u64> = (first..=last).map(|s| s * SECTOR).collect();
                    if cuts.first() != Some(pos) {
                        cuts.insert(0, *pos);
                    }
                    if cuts.last() != Some(&end) {
                        cuts.push(end);
                    }
                    let keep_to = cuts[rng.upto(cuts.len() as u64 - 1) as usize];
                    let kept = (keep_to - pos) as usize;
                    if kept > 0 {
                        let start = *pos as usize;
                        if bytes.len() < start + kept {
                            bytes.resize(start + kept, 0);
                        }
                        bytes[start..start + kept].copy_from_slice(&data[..kept]);
                        report.torn += 1;
                    }
                }
                bytes
            };
            images.push((path.clone(), image));
        }
        // Every path the running system knew of goes; survivors come back.
        let mut current: Vec<&PathBuf> = state.current.keys().collect();
        current.sort();
        for path in current {
            match state.durable.get(path) {
                None => report.vanished += 1,
                Some(id) if state.current.get(path) != Some(id) => report.restored += 1,
                Some(_) => {}
            }
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        for path in state.durable.keys() {
            if !state.current.contains_key(path) {
                report.restored += 1;
            }
        }
        for (path, image) in images {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, image)?;
        }
        *state = State::default();
        Ok(report)
    }
}

/// A file of [`PowerCutFs`].
#[derive(Debug)]
struct PowerCutFile {
    inner: Arc<dyn StorageFile>,
    id: FileId,
    state: Arc<Mutex<State>>,
}

impl FileSystem for PowerCutFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state.lock();
        if mode == OpenMode::Read {
            state.check_power()?;
        } else {
            state.spend()?;
        }
        let existing = state.track_existing(path)?;
        let inner = StdFs.open(path, mode)?;
        let id = match existing {
            Some(id) => id,
            // Created now: empty durable image, entry not durable yet.
            None => state.insert(StdFs.open(path, OpenMode::Read)?, Vec::new(), path),
        };
        Ok(Arc::new(PowerCutFile {
            inner,
            id,
            state: self.state.clone(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.state.lock().spend()?;
        StdFs.create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.state.lock().check_power()?;
        StdFs.read_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        state.track_existing(path)?;
        StdFs.remove_file(path)?;
        state.current.remove(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        StdFs.remove_dir_all(path)?;
        state.current.retain(|p, _| !p.starts_with(path));
        state.durable.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        state.track_existing(from)?;
        state.track_existing(to)?;
        StdFs.rename(from, to)?;
        if let Some(id) = state.current.remove(from) {
            state.current.insert(to.to_owned(), id);
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        let State {
            current, durable, ..
        } = &mut *state;
        durable.retain(|p, _| p.parent() != Some(path) || current.contains_key(p));
        for (p, &id) in current.iter() {
            if p.parent() == Some(path) {
                durable.insert(p.clone(), id);
            }
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
    }
}

impl StorageFile for PowerCutFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.state.lock().check_power()?;
        self.inner.read_at(buf, pos)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let mut state = self.state.lock();
        state.spend()?;
        let written = self.inner.write_at(buf, pos)?;
        let file = state.file(self.id);
        file.dirty = true;
        file.last_write = Some((pos, buf[..written].to_vec()));
        Ok(written)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        let image = read_whole(self.inner.as_ref())?;
        let file = state.file(self.id);
        file.durable = image;
        file.dirty = false;
        file.resized = false;
        file.last_write = None;
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        self.inner.set_len(len)?;
        let file = state.file(self.id);
        file.dirty = true;
        file.resized = true;
        file.last_write = None;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.state.lock().check_power()?;
        self.inner.len()
    }

    fn std_file(&self) -> &File {
        self.inner.std_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{write_all_at, write_atomically};

    fn setup() -> (tempfile::TempDir, PathBuf, PowerCutFs) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        std::fs::create_dir_all(&dir).expect("mkdir");
        (tmp, dir, PowerCutFs::new())
    }

    /// A seed whose cut does not tear (the first coin of the generator).
    fn seed_without_tear() -> u64 {
        (0..).find(|&s| !Rng(s).coin()).expect("seed")
    }

    #[test]
    fn unsynced_writes_are_dropped_and_synced_ones_kept() {
        let (_tmp, dir, fs) = setup();
        let path = dir.join("f");
        let file = fs.open(&path, OpenMode::Create).expect("open");
        fs.sync_dir(&dir).expect("sync dir");
        write_all_at(file.as_ref(), b"synced", 0).expect("write");
        file.sync_data().expect("sync");
        write_all_at(file.as_ref(), b" and not synced", 6).expect("write");
        drop(file);
        let report = fs.power_cut(seed_without_tear()).expect("cut");
        assert_eq!(report.reverted, 1);
        assert_eq!(std::fs::read(&path).expect("read"), b"synced");
    }

    #[test]
    fn files_created_since_the_last_dir_sync_vanish() {
        let (_tmp, dir, fs) = setup();
        let file = fs.open(&dir.join("new"), OpenMode::Create).expect("open");
        write_all_at(file.as_ref(), b"data", 0).expect("write");
        file.sync_data().expect("sync");
        drop(file);
        let report = fs.power_cut(1).expect("cut");
        assert_eq!(report.vanished, 1);
        assert!(!dir.join("new").exists());
    }

    #[test]
    fn renames_and_deletes_since_the_last_dir_sync_are_undone() {
        let (_tmp, dir, fs) = setup();
        std::fs::write(dir.join("old"), b"old content").expect("write");
        std::fs::write(dir.join("gone"), b"deleted").expect("write");
        let tmp = dir.join("old.tmp");
        let file = fs.open(&tmp, OpenMode::Create).expect("open");
        write_all_at(file.as_ref(), b"new content", 0).expect("write");
        file.sync_data().expect("sync");
        drop(file);
        fs.rename(&tmp, &dir.join("old")).expect("rename");
        fs.remove_file(&dir.join("gone")).expect("remove");
        fs.power_cut(2).expect("cut");
        assert_eq!(
            std::fs::read(dir.join("old")).expect("read"),
            b"old content"
        );
        assert_eq!(std::fs::read(dir.join("gone")).expect("read"), b"deleted");
        assert!(!tmp.exists());
    }

    #[test]
    fn an_atomic_write_survives_once_the_directory_is_synced() {
        let (_tmp, dir, fs) = setup();
        std::fs::write(dir.join("meta"), b"one").expect("write");
        write_atomically(&fs, &dir.join("meta"), b"two").expect("atomic write");
        fs.power_cut(3).expect("cut");
        assert_eq!(std::fs::read(dir.join("meta")).expect("read"), b"two");
    }

    #[test]
    fn a_torn_write_keeps_a_sector_aligned_prefix() {
        let (_tmp, dir, fs) = setup();
        let path = dir.join("f");
        std::fs::write(&path, vec![1u8; 100]).expect("write");
        let data = vec![2u8; 2000];
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let file = fs.open(&path, OpenMode::ReadWrite).expect("open");
            write_all_at(file.as_ref(), &data, 100).expect("write");
            drop(file);
            fs.power_cut(seed).expect("cut");
            let after = std::fs::read(&path).expect("read");
            assert!(after[..100].iter().all(|&b| b == 1), "synced bytes kept");
            let kept = after.len() - 100;
            assert!(after[100..].iter().all(|&b| b == 2));
            assert!(
                kept == 0 || kept == data.len() || (100 + kept) % SECTOR as usize == 0,
                "kept {kept} bytes"
            );
            seen.insert(kept);
            std::fs::write(&path, vec![1u8; 100]).expect("reset");
        }
        assert!(seen.len() >= 3, "several tear points: {seen:?}");
    }

    #[test]
    fn calls_fail_once_the_budget_is_spent() {
        let (_tmp, dir, fs) = setup();
        let file = fs.open(&dir.join("f"), OpenMode::Create).expect("open");
        fs.fail_after(1);
        write_all_at(file.as_ref(), b"a", 0).expect("first write");
        assert!(write_all_at(file.as_ref(), b"b", 1).is_err());
        assert!(file.sync_data().is_err());
        assert!(fs.is_off());
        drop(file);
        fs.power_cut(0).expect("cut");
        assert!(!dir.join("f").exists(), "its entry was never synced");
        assert!(!fs.is_off(), "power is back after the cut");
    }
}
