//! The commit journal: one broker-wide write-ahead file that makes the
//! segment files' `fdatasync`s cheap when there are many of them
//! (`commit_journal = true`, for `fsync = always`).
//!
//! [`JournaledFs`] wraps the broker's [`FileSystem`]. For the files it
//! journals (segment files: names ending in `.log`), every write and every
//! `set_len` goes to the file as before **and** is appended, tagged with
//! the file's path and position, to the journal; the file's
//! [`StorageFile::sync_data`] then waits until the journal is synced up to
//! that file's last record, instead of syncing the file. One `fdatasync`
//! of the journal covers every partition that wrote meanwhile (group
//! commit across files: a *leader* syncs, the others wait for its sync),
//! so a commit costs a sequential append instead of a sync of its own file
//! and its metadata. Every other file (indexes, checkpoints, snapshots, the
//! registry) is passed through untouched, real syncs included.
//!
//! ## Files
//!
//! `<data-dir>/journal/<number, 20 digits>.journal`, written one after
//! another; a new one is started when the current one passes
//! [`ROTATE_BYTES`]. Each holds records back to back:
//!
//! | field | bytes | meaning |
//! | --- | --- | --- |
//! | `len` | 4 | bytes after this field (u32, little-endian) |
//! | `crc` | 4 | CRC-32 of the bytes after this field |
//! | `kind` | 1 | 1 write, 2 set length, 3 forget |
//! | `path_len` | 2 | bytes of `path` (u16) |
//! | `path` | `path_len` | the file (or, for forget, the file or directory) |
//! | `pos` | 8 | write: where the bytes go; set length: the new length; forget: 0 |
//! | `data` | the rest | write: the bytes written; otherwise empty |
//!
//! ## Invariants
//!
//! - A record is appended only after its change was made to the file (in
//!   the page cache), so a real sync of the file made after the record was
//!   appended covers it.
//! - A journaled file's `sync_data` returns `Ok` only once a journal
//!   `fdatasync` that began after the file's last record was appended has
//!   completed; the first `sync_data` through each handle also syncs the
//!   file itself, for what it may hold that no record covers (written
//!   before this journal began, such as the unsynced tail recovery finds
//!   after a `kill -9` and syncs before it trusts it).
//! - A journal file is deleted only after every journaled file written in
//!   it was synced for real (by the *checkpointer* thread, once the next
//!   journal file has begun; it takes every journal file retired since
//!   its last pass together, syncs each file they cover once, on up to 8
//!   threads), oldest journal file first.
//! - At most [`RETIRING`] journal files wait for the checkpointer: beyond,
//!   appends wait for it, so the journal on disk (what a start replays)
//!   stays under about `(RETIRING + 1) × ROTATE_BYTES` (96 MiB).
//! - Renaming or removing a journaled file, or a directory (which may hold
//!   some), first syncs the file (each journaled file under the directory)
//!   for real, then appends a *forget* record for the path(s) and syncs
//!   the journal: a replay never writes records from before it into a file
//!   created later under the same name (a topic deleted and created
//!   again), and if the power goes before the rename or delete is durable,
//!   the file that comes back holds all it held.
//! - A failed journal write or sync (or a failed real sync of the
//!   checkpointer) stops the journal: that sync and every later one fails,
//!   so every partition fences itself as after a failed `fdatasync` of its
//!   own file, until a restart replays the journal.
//!
//! ## Crash story
//!
//! At start, before any log is opened ([`JournaledFs::open`]), the journal
//! files are read in order, each up to its first record that is torn or
//! fails its CRC (the end of what its last sync covered). Records followed
//! by a forget of their path are dropped; the others are applied in order
//! (write at the position, set the length) to the files that exist (a
//! missing file was deleted, or its creation never became durable, which
//! comes before any acknowledged append into it), those files are synced,
//! and only then are the journal files removed (and the directory synced).
//! A crash during the replay replays again. After a power cut, then, every
//! segment holds at least what the journal's last completed sync covered,
//! and recovery (the log's own, unchanged) runs on that: what the journal
//! restores is exactly what the acknowledgements promised.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use super::{
    Advice, FileSystem, OpenMode, StorageFile, create_dir_durably, existing_ancestor, write_all_at,
};

/// The journal's directory, in the data directory.
pub const JOURNAL_DIR: &str = "journal";

/// A journal file is followed by a new one once it holds this much.
pub const ROTATE_BYTES: u64 = 32 * 1024 * 1024;

/// Journal files handed to the checkpointer and not yet deleted, at most:
/// beyond, appends wait for it. This bounds the journal on disk (and so
/// what a start replays) to about `(RETIRING + 1) × ROTATE_BYTES`.
pub const RETIRING: u64 = 2;

/// Threads the checkpointer syncs segment files on.
const CHECKPOINT_THREADS: usize = 8;

const KIND_WRITE: u8 = 1;
const KIND_SET_LEN: u8 = 2;
const KIND_FORGET: u8 = 3;
/// `len` and `crc`.
const FRAME: usize = 8;
/// `kind`, `path_len`, `pos`.
const FIXED: usize = 1 + 2 + 8;

/// Whether `path` is a file the journal covers: a segment (`*.log`).
pub fn is_journaled(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "log")
}

/// One record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Write {
        path: PathBuf,
        pos: u64,
        data: Vec<u8>,
    },
    SetLen {
        path: PathBuf,
        len: u64,
    },
    Forget {
        path: PathBuf,
    },
}

impl Record {
    fn path(&self) -> &Path {
        match self {
            Record::Write { path, .. } | Record::SetLen { path, .. } | Record::Forget { path } => {
                path
            }
        }
    }
}

/// Appends the encoding of a record to `out`.
fn encode(out: &mut Vec<u8>, kind: u8, path: &Path, pos: u64, data: &[u8]) -> io::Result<()> {
    let path = path.as_os_str().as_bytes();
    let path_len = u16::try_from(path.len())
        .map_err(|_| io::Error::other("a journaled path is longer than 65,535 bytes"))?;
    let len = u32::try_from(FIXED + path.len() + data.len())
        .map_err(|_| io::Error::other("a journaled write is larger than 4 GiB"))?;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&path_len.to_le_bytes());
    out.extend_from_slice(path);
    out.extend_from_slice(&pos.to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start + FRAME..]);
    out[start + 4..start + FRAME].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes the records of one journal file, up to the first that is torn,
/// fails its CRC or does not parse (the end of what was synced).
pub(crate) fn decode_all(bytes: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + FRAME) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = bytes.get(at + FRAME..at + FRAME + len) else {
            break;
        };
        if len < FIXED || crc32fast::hash(body) != crc {
            break;
        }
        let Some(record) = decode_body(body) else {
            break;
        };
        records.push(record);
        at += FRAME + len;
    }
    records
}

fn decode_body(body: &[u8]) -> Option<Record> {
    let kind = body[0];
    let path_len = u16::from_le_bytes([body[1], body[2]]) as usize;
    let path = body.get(3..3 + path_len)?;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(path));
    let pos = body.get(3 + path_len..3 + path_len + 8)?;
    let pos = u64::from_le_bytes(pos.try_into().ok()?);
    let data = &body[3 + path_len + 8..];
    match kind {
        KIND_WRITE => Some(Record::Write {
            path,
            pos,
            data: data.to_vec(),
        }),
        KIND_SET_LEN if data.is_empty() => Some(Record::SetLen { path, len: pos }),
        KIND_FORGET if data.is_empty() => Some(Record::Forget { path }),
        _ => None,
    }
}

/// File name of journal file number `n`.
fn journal_name(n: u64) -> String {
    format!("{n:020}.journal")
}

/// The numbers of the journal files in `dir`, in order.
fn journal_files(fs: &dyn FileSystem, dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers: Vec<u64> = fs
        .read_dir(dir)?
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let stem = name.strip_suffix(".journal")?;
            (stem.len() == 20).then(|| stem.parse().ok())?
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// What a replay at start did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Journal files read.
    pub files: usize,
    /// Records applied to files that exist.
    pub applied: usize,
    /// Records dropped: forgotten later, or for a file that does not exist.
    pub skipped: usize,
    /// Files written and synced.
    pub synced_files: usize,
}

/// Applies the journal in `dir` to the files it names, syncs them, and
/// removes the journal files (see the module doc's crash story).
pub fn replay(fs: &dyn FileSystem, dir: &Path) -> io::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let numbers = journal_files(fs, dir)?;
    let mut records = Vec::new();
    for &n in &numbers {
        let path = dir.join(journal_name(n));
        let file = fs.open(&path, OpenMode::Read)?;
        let len = usize::try_from(file.len()?)
            .map_err(|_| io::Error::other("a journal file is too large to read"))?;
        let mut bytes = Vec::new();
        super::read_full_into(file.as_ref(), &mut bytes, len, 0)?;
        records.extend(decode_all(&bytes));
        report.files += 1;
    }
    // The last forget of each path, by position: a record before it is
    // not applied.
    let forgets: Vec<(usize, &Path)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Record::Forget { .. }))
        .map(|(i, r)| (i, r.path()))
        .collect();
    let forgotten = |i: usize, path: &Path| {
        forgets
            .iter()
            .any(|&(at, prefix)| at > i && path.starts_with(prefix))
    };
    let mut open: HashMap<PathBuf, Option<Arc<dyn StorageFile>>> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        if matches!(record, Record::Forget { .. }) {
            continue;
        }
        let path = record.path();
        if forgotten(i, path) {
            report.skipped += 1;
            continue;
        }
        let file = match open.get(path) {
            Some(file) => file.clone(),
            None => {
                let file = match fs.open(path, OpenMode::ReadWrite) {
                    Ok(file) => Some(file),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                open.insert(path.to_owned(), file.clone());
                file
            }
        };
        let Some(file) = file else {
            report.skipped += 1;
            continue;
        };
        match record {
            Record::Write { pos, data, .. } => write_all_at(file.as_ref(), data, *pos)?,
            Record::SetLen { len, .. } => file.set_len(*len)?,
            Record::Forget { .. } => {}
        }
        report.applied += 1;
    }
    for file in open.values().flatten() {
        file.sync_data()?;
        report.synced_files += 1;
    }
    for &n in &numbers {
        fs.remove_file(&dir.join(journal_name(n)))?;
    }
    if !numbers.is_empty() {
        fs.sync_dir(dir)?;
    }
    Ok(report)
}

/// The journal's state, behind one lock.
struct State {
    /// Encoded records not yet written to the journal file.
    buffer: Vec<u8>,
    /// Records appended so far (the last one's number).
    appended: u64,
    /// Records covered by a completed journal sync.
    synced: u64,
    /// A leader is writing and syncing.
    syncing: bool,
    /// Why the journal stopped, if it did.
    failed: Option<String>,
    /// The journal file being written, its number and its length.
    file: Arc<dyn StorageFile>,
    number: u64,
    len: u64,
    /// Journaled files written in the current journal file.
    dirty: BTreeSet<PathBuf>,
    /// Journaled files written in the records of `buffer` (they join
    /// `dirty` of the journal file the buffer is written to).
    buffer_dirty: BTreeSet<PathBuf>,
    /// Journal files handed to the checkpointer, not yet deleted.
    retiring: u64,
}

/// The broker-wide journal (see the module doc).
pub struct Journal {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    state: Mutex<State>,
    synced: Condvar,
    /// A journal file is followed by a new one once it holds this much.
    rotate_bytes: u64,
    /// Journal syncs done; journal files started after the first; journal
    /// files retired (their segments synced, the file deleted).
    syncs: AtomicU64,
    rotations: AtomicU64,
    retired: AtomicU64,
    /// The checkpointer's queue: a journal file to delete once the
    /// journaled files written in it are synced.
    retire: flume::Sender<(u64, BTreeSet<PathBuf>)>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Appends one record; returns its number.
    fn append(&self, kind: u8, path: &Path, pos: u64, data: &[u8]) -> io::Result<u64> {
        let mut state = self.state.lock();
        // Back-pressure: the checkpointer is behind.
        while state.retiring >= RETIRING && state.failed.is_none() {
            self.synced.wait(&mut state);
        }
        if let Some(why) = &state.failed {
            return Err(stopped(why));
        }
        encode(&mut state.buffer, kind, path, pos, data)?;
        if kind != KIND_FORGET && !state.buffer_dirty.contains(path) {
            state.buffer_dirty.insert(path.to_owned());
        }
        state.appended += 1;
        Ok(state.appended)
    }

    /// Waits until record `number` is durable: syncs the journal as the
    /// leader, or waits for the leader's sync that covers it.
    fn sync_through(&self, number: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        loop {
            if let Some(why) = &state.failed {
                return Err(stopped(why));
            }
            if state.synced >= number {
                return Ok(());
            }
            if state.syncing {
                self.synced.wait(&mut state);
                continue;
            }
            state.syncing = true;
            let bytes = std::mem::take(&mut state.buffer);
            let written_to = std::mem::take(&mut state.buffer_dirty);
            state.dirty.extend(written_to);
            let upto = state.appended;
            let (file, at) = (state.file.clone(), state.len);
            state.len += bytes.len() as u64;
            drop(state);
            let written = write_all_at(file.as_ref(), &bytes, at).and_then(|()| file.sync_data());
            state = self.state.lock();
            state.syncing = false;
            match written {
                Ok(()) => {
                    state.synced = upto;
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    if state.len >= self.rotate_bytes
                        && let Err(e) = self.rotate(&mut state)
                    {
                        state.failed = Some(format!("starting a new journal file failed: {e}"));
                    }
                }
                Err(e) => {
                    state.failed = Some(format!("writing or syncing the journal failed: {e}"));
                }
            }
            self.synced.notify_all();
            if let Some(why) = &state.failed {
                tracing::error!(dir = %self.dir.display(), error = %why, "the commit journal stopped; every partition refuses writes until a restart");
            }
        }
    }

    /// Starts the next journal file and hands the current one to the
    /// checkpointer. Under the lock, with nothing buffered unsynced
    /// written to the old file after this.
    fn rotate(&self, state: &mut State) -> io::Result<()> {
        let next = state.number + 1;
        let file = self
            .fs
            .open(&self.dir.join(journal_name(next)), OpenMode::Create)?;
        file.set_len(0)?;
        self.fs.sync_dir(&self.dir)?;
        let old = state.number;
        state.file = file;
        state.number = next;
        state.len = 0;
        // The buffer (records appended since the leader took its bytes)
        // goes to the new file, with its `buffer_dirty`.
        let dirty = std::mem::take(&mut state.dirty);
        self.rotations.fetch_add(1, Ordering::Relaxed);
        state.retiring += 1;
        let _ = self.retire.send((old, dirty));
        Ok(())
    }

    /// Journal syncs done so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Journal files started after the first, and journal files retired
    /// (their segments synced for real, the file deleted) so far.
    pub fn rotations_and_retired(&self) -> (u64, u64) {
        (
            self.rotations.load(Ordering::Relaxed),
            self.retired.load(Ordering::Relaxed),
        )
    }

    /// The checkpointer's work for the journal files retired so far (in
    /// order): syncs every file any of them covered for real, each once,
    /// on a few threads, then deletes them, oldest first.
    fn checkpoint(&self, retired: &[(u64, BTreeSet<PathBuf>)]) -> io::Result<()> {
        let dirty: Vec<&PathBuf> = retired
            .iter()
            .flat_map(|(_, dirty)| dirty)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let threads = CHECKPOINT_THREADS.min(dirty.len()).max(1);
        let chunk = dirty.len().div_ceil(threads).max(1);
        let synced: io::Result<()> = std::thread::scope(|scope| {
            let workers: Vec<_> = dirty
                .chunks(chunk)
                .map(|paths| scope.spawn(move || self.sync_files(paths)))
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a sync thread panicked")))
            })
        });
        synced?;
        for (number, _) in retired {
            self.fs.remove_file(&self.dir.join(journal_name(*number)))?;
        }
        self.fs.sync_dir(&self.dir)?;
        self.retired
            .fetch_add(retired.len() as u64, Ordering::Relaxed);
        let mut state = self.state.lock();
        state.retiring -= retired.len() as u64;
        self.synced.notify_all();
        Ok(())
    }

    /// Syncs each of `paths` for real; a file deleted since was forgotten
    /// (see `forget`).
    fn sync_files(&self, paths: &[&PathBuf]) -> io::Result<()> {
        for path in paths {
            match self.fs.open(path, OpenMode::Read) {
                Ok(file) => file.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Records that whatever was written under `path` must not be replayed,
    /// and makes that durable (before a rename or delete of it).
    fn forget(&self, path: &Path) -> io::Result<()> {
        let number = self.append(KIND_FORGET, path, 0, &[])?;
        self.sync_through(number)
    }

    fn stop(&self, why: String) {
        let mut state = self.state.lock();
        if state.failed.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %why, "the commit journal stopped; every partition refuses writes until a restart");
            state.failed = Some(why);
        }
        self.synced.notify_all();
    }
}

fn stopped(why: &str) -> io::Error {
    io::Error::other(format!(
        "the commit journal stopped ({why}); restart the broker to replay it"
    ))
}

/// The broker's file system with the commit journal (see the module doc).
#[derive(Debug, Clone)]
pub struct JournaledFs {
    inner: Arc<dyn FileSystem>,
    journal: Arc<Journal>,
}

impl JournaledFs {
    /// Replays the journal in `dir` (see the crash story), then starts a
    /// new one there. Call before anything opens a journaled file.
    pub fn open(inner: Arc<dyn FileSystem>, dir: &Path) -> io::Result<(JournaledFs, ReplayReport)> {
        Self::open_rotating_at(inner, dir, ROTATE_BYTES)
    }

    /// [`open`](Self::open), starting a new journal file every
    /// `rotate_bytes` (tests use small ones).
    pub(crate) fn open_rotating_at(
        inner: Arc<dyn FileSystem>,
        dir: &Path,
        rotate_bytes: u64,
    ) -> io::Result<(JournaledFs, ReplayReport)> {
        let existing = existing_ancestor(inner.as_ref(), dir);
        create_dir_durably(inner.as_ref(), dir, existing)?;
        let report = replay(inner.as_ref(), dir)?;
        let file = inner.open(&dir.join(journal_name(0)), OpenMode::Create)?;
        file.set_len(0)?;
        inner.sync_dir(dir)?;
        let (retire, retired) = flume::unbounded::<(u64, BTreeSet<PathBuf>)>();
        let journal = Arc::new(Journal {
            fs: inner.clone(),
            dir: dir.to_owned(),
            state: Mutex::new(State {
                buffer: Vec::new(),
                appended: 0,
                synced: 0,
                syncing: false,
                failed: None,
                file,
                number: 0,
                len: 0,
                dirty: BTreeSet::new(),
                buffer_dirty: BTreeSet::new(),
                retiring: 0,
            }),
            synced: Condvar::new(),
            rotate_bytes,
            syncs: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            retire,
        });
        let weak = Arc::downgrade(&journal);
        std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || {
                while let Ok(first) = retired.recv() {
                    // Everything retired meanwhile, in one pass.
                    let mut batch = vec![first];
                    batch.extend(retired.try_iter());
                    let Some(journal) = weak.upgrade() else {
                        return;
                    };
                    if let Err(e) = journal.checkpoint(&batch) {
                        journal.stop(format!(
                            "syncing the segments of journal file {} failed: {e}",
                            batch[0].0
                        ));
                        return;
                    }
                }
            })?;
        Ok((JournaledFs { inner, journal }, report))
    }

    /// The journal, for stats and tests.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Before a rename or delete of `path`: if it is, or may hold, a
    /// journaled file, syncs each such file for real (if the rename or
    /// delete is not durable when the power goes, the file comes back, and
    /// with what it held, which the journal will not restore), then
    /// forgets `path` in the journal.
    fn forget_if_journaled(&self, path: &Path) -> io::Result<()> {
        let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        if !is_journaled(path) && !is_dir {
            return Ok(());
        }
        self.sync_journaled_under(path)?;
        self.journal.forget(path)
    }

    /// Syncs `path` if it is a journaled file, or every journaled file
    /// under it if it is a directory; a path that does not exist is fine.
    fn sync_journaled_under(&self, path: &Path) -> io::Result<()> {
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            for entry in self.inner.read_dir(path)? {
                self.sync_journaled_under(&entry)?;
            }
            return Ok(());
        }
        if !is_journaled(path) {
            return Ok(());
        }
        match self.inner.open(path, OpenMode::Read) {
            Ok(file) => file.sync_data(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl FileSystem for JournaledFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.inner.open(path, mode)?;
        if !is_journaled(path) {
            return Ok(file);
        }
        Ok(Arc::new(JournaledFile {
            inner: file,
            path: path.to_owned(),
            journal: self.journal.clone(),
            last: AtomicU64::new(0),
            synced_once: AtomicBool::new(false),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.read_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.forget_if_journaled(path)?;
        self.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.forget_if_journaled(path)?;
        self.inner.remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.forget_if_journaled(from)?;
        self.forget_if_journaled(to)?;
        self.inner.rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

/// A journaled file: its changes are recorded, its sync is the journal's.
#[derive(Debug)]
struct JournaledFile {
    inner: Arc<dyn StorageFile>,
    path: PathBuf,
    journal: Arc<Journal>,
    /// The number of this file's last record (0: none).
    last: AtomicU64,
    /// Whether this handle synced the file for real once: its first
    /// `sync_data` does, for what the file may hold that no journal
    /// record covers (written before this journal began: a tail recovery
    /// found after a `kill -9`, which it syncs before trusting it).
    synced_once: AtomicBool,
}

impl JournaledFile {
    fn appended(&self, number: u64) {
        self.last.fetch_max(number, Ordering::AcqRel);
    }
}

impl StorageFile for JournaledFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let written = self.inner.write_at(buf, pos)?;
        let number = self
            .journal
            .append(KIND_WRITE, &self.path, pos, &buf[..written])?;
        self.appended(number);
        Ok(written)
    }

    fn sync_data(&self) -> io::Result<()> {
        if !self.synced_once.load(Ordering::Acquire) {
            self.inner.sync_data()?;
            self.synced_once.store(true, Ordering::Release);
        }
        self.journal.sync_through(self.last.load(Ordering::Acquire))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)?;
        let number = self.journal.append(KIND_SET_LEN, &self.path, len, &[])?;
        self.appended(number);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        // Space only: the length it may add is recorded as a set length.
        let before = self.inner.len()?;
        self.inner.allocate(len)?;
        if len > before {
            let number = self.journal.append(KIND_SET_LEN, &self.path, len, &[])?;
            self.appended(number);
        }
        Ok(())
    }

    fn std_file(&self) -> &std::fs::File {
        self.inner.std_file()
    }

    fn read_into(&self, buf: &mut Vec<u8>, len: usize, pos: u64) -> io::Result<usize> {
        self.inner.read_into(buf, len, pos)
    }

    fn read_cached_into(
        &self,
        buf: &mut Vec<u8>,
        len: usize,
        pos: u64,
    ) -> io::Result<Option<usize>> {
        self.inner.read_cached_into(buf, len, pos)
    }

    fn advise(&self, pos: u64, len: u64, advice: Advice) -> io::Result<()> {
        self.inner.advise(pos, len, advice)
    }

    fn data_after(&self, pos: u64) -> io::Result<Option<(u64, u64)>> {
        self.inner.data_after(pos)
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
