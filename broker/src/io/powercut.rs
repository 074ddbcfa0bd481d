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
//! - **Directory entries.** Each directory is an inode too (it keeps its
//!   identity across renames) with two sets of entries: as the running
//!   system sees them, and as a power cut would leave them — as of the last
//!   completed [`FileSystem::sync_dir`] of that directory. A create (of a
//!   file or a directory), rename or delete is durable once a `sync_dir` of
//!   the directory it changed completes after it. Until then a power cut
//!   undoes it: a new file or directory vanishes (a directory with
//!   everything in it, however synced), a renamed one is back under its old
//!   name (and what it replaced is back), a deleted file or directory tree
//!   is back with its durable content. Syncing a directory makes its own
//!   entries durable, not its name in its parent: a file synced into a new
//!   directory is lost with that directory unless the parent was synced
//!   too. A file or directory that already existed when this file system
//!   first met it is taken as durable where it is; a directory renamed or
//!   removed is first read in full (every file under it becomes tracked) so
//!   that it can come back. Paths are taken as spelled: no symlink is
//!   resolved, and `..` is applied lexically.
//! - **At the cut** every write, truncation or extension of a file (not
//!   written through a memory map: see below) that is not covered by a
//!   completed `sync_data` of the file is dropped: the file goes back to its
//!   durable image. Except, chosen at random per file: if the last operation
//!   on a file since its last sync was a write, a prefix of that write ending
//!   on a 512-byte boundary of the file (possibly empty, possibly all of it)
//!   may survive on top of the durable image — a torn write (the whole
//!   write surviving is one of the choices).
//! - **Files written through a memory map** (any file whose OS handle was
//!   taken with [`StorageFile::std_file`] since the model started; in the
//!   broker, the index files `.index` and `.timeindex` and their `.tmp`
//!   rebuilds) are written behind this file system's back, so what changed
//!   is found by comparing. Their durable image is read from the real file
//!   at each completed `sync_data`, which sees the mapped stores (they
//!   share the page cache; `fdatasync` writes such pages back too). At the
//!   cut the file keeps its current size or, if its size changed since its
//!   last sync (`set_len`, or an `allocate` that grew it: the active
//!   segment's preallocated index, not a sealed one, which is synced after
//!   being cut to size), is cut to a random length one time in two. Then
//!   each 4 KiB page ([`PAGE`]) whose bytes differ from the durable image's
//!   page (zeros past the durable size) independently either survives (the
//!   kernel had written it back) or reverts to the durable image's page,
//!   whole: only the length cut ends a page early. Not modelled: an `msync`
//!   (the indexes' `flush`) acts on the map, not through this file system,
//!   so a page only msynced still counts as unsynced (stricter than a
//!   kernel); and a page is either as of the last sync or as of the cut,
//!   never as written back at some moment in between. Directory-entry rules
//!   apply to these files like to any other.
//! - Failures: [`PowerCutFs::fail_after`] makes every call after the next
//!   `n` mutating calls fail with `EIO` ("the power is off"), so that a cut
//!   can land in the middle of a roll, a checkpoint or a recovery.
//!
//! The real `fdatasync` and directory `fsync` are not called: durability is
//! simulated, which also keeps the tests fast. Call
//! [`PowerCutFs::power_cut`] only once nothing uses the file system any more
//! (drop the log first); handles opened before a cut must not be used after
//! it. After a cut the model starts afresh: what is on disk is durable. A
//! cut only changes what was created, written, renamed or removed through
//! this file system: entries it never touched stay as they are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileSystem, OpenMode, StdFs, StorageFile};

/// Writes are torn at multiples of this (the traditional sector size).
pub const SECTOR: u64 = 512;

/// Pages written through a memory map survive or revert in units of this
/// (the page size of the machines the broker runs on).
pub const PAGE: u64 = 4096;

type FileId = u64;
type DirId = u64;

/// What a directory entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(FileId),
    Dir(DirId),
}

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
    /// Its OS file was handed out ([`StorageFile::std_file`], for a memory
    /// map) since the model started: it may have been written behind this
    /// file system's back, page by page.
    mapped: bool,
}

/// The entries of one directory (inode).
#[derive(Debug, Default, Clone)]
struct Dir {
    /// As the running system sees them.
    current: BTreeMap<OsString, Node>,
    /// As a power cut would leave them: as of the last completed
    /// `sync_dir` of this directory.
    durable: BTreeMap<OsString, Node>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    files: HashMap<FileId, Tracked>,
    dirs: HashMap<DirId, Dir>,
    /// Where resolving a path starts: `/` for absolute paths, the empty
    /// path (the current directory) for relative ones. Paths are taken as
    /// spelled (no symlink is resolved).
    roots: BTreeMap<PathBuf, DirId>,
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
    /// Files not written through a map whose unsynced changes were dropped
    /// (reverted to their durable image).
    pub reverted: usize,
    /// Files where a prefix of the last unsynced write survived.
    pub torn: usize,
    /// Files that vanished (created or renamed in since the last dir sync,
    /// or inside a directory that vanished).
    pub vanished: usize,
    /// Files that came back (deleted or renamed away since the last dir sync).
    pub restored: usize,
    /// Directories that vanished (created or renamed in since their
    /// parent's last sync), counted with every directory under them.
    pub dirs_vanished: usize,
    /// Directories that came back (removed or renamed away since their
    /// parent's last sync).
    pub dirs_restored: usize,
    /// Mapped files (the indexes) cut to a random length.
    pub index_truncated: usize,
    /// Pages of mapped files that differed from their durable image and
    /// reverted to it (the kernel had not written them back).
    pub pages_reverted: usize,
    /// Pages of mapped files that differed from their durable image and
    /// survived (the kernel had written them back).
    pub pages_kept: usize,
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut: the power is off")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: a directory on the path does not exist", path.display()),
    )
}

/// `path` as a root and the names below it, `.` dropped and `..` applied
/// lexically.
fn split(path: &Path) -> (PathBuf, Vec<OsString>) {
    let mut root = PathBuf::new();
    let mut names: Vec<OsString> = Vec::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => root.push(component),
            Component::CurDir => {}
            Component::ParentDir => {
                if names.last().is_none_or(|n| n == "..") {
                    names.push("..".into());
                } else {
                    names.pop();
                }
            }
            Component::Normal(name) => names.push(name.to_owned()),
        }
    }
    (root, names)
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

/// Which view of the directory entries.
#[derive(Debug, Clone, Copy)]
enum View {
    Current,
    Durable,
}

/// One view of the whole tree, flattened to paths.
#[derive(Debug, Default)]
struct Flat {
    dirs: BTreeMap<PathBuf, DirId>,
    files: BTreeMap<PathBuf, FileId>,
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

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn new_dir(&mut self) -> DirId {
        let id = self.new_id();
        self.dirs.insert(id, Dir::default());
        id
    }

    fn new_file(&mut self, handle: Arc<dyn StorageFile>, durable: Vec<u8>) -> FileId {
        let id = self.new_id();
        self.files.insert(
            id,
            Tracked {
                handle,
                durable,
                dirty: false,
                resized: false,
                last_write: None,
                mapped: false,
            },
        );
        id
    }

    fn file(&mut self, id: FileId) -> &mut Tracked {
        self.files.get_mut(&id).expect("tracked file")
    }

    fn dir(&mut self, id: DirId) -> &mut Dir {
        self.dirs.get_mut(&id).expect("tracked directory")
    }

    /// The directory `root` (`/` or the current directory), existing
    /// before anything ran and durable by definition.
    fn root(&mut self, root: &Path) -> DirId {
        if let Some(&id) = self.roots.get(root) {
            return id;
        }
        let id = self.new_dir();
        self.roots.insert(root.to_owned(), id);
        id
    }

    /// The entry `name` of directory `dir` (at `dir_path`). An entry this
    /// file system never saw but that exists on disk existed before it
    /// was first touched: it is registered as durable as it is (a file
    /// with its current bytes as its durable image).
    fn lookup(&mut self, dir: DirId, dir_path: &Path, name: &OsStr) -> io::Result<Option<Node>> {
        if let Some(&node) = self.dir(dir).current.get(name) {
            return Ok(Some(node));
        }
        let path = dir_path.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(None);
        };
        let node = if meta.is_dir() {
            Node::Dir(self.new_dir())
        } else {
            let handle = StdFs.open(&path, OpenMode::Read)?;
            let durable = read_whole(handle.as_ref())?;
            Node::File(self.new_file(handle, durable))
        };
        let entries = self.dir(dir);
        entries.current.insert(name.to_owned(), node);
        entries.durable.entry(name.to_owned()).or_insert(node);
        Ok(Some(node))
    }

    /// The directory at `names` under `root`; `None` if a component is
    /// missing or not a directory.
    fn resolve_dir(&mut self, root: &Path, names: &[OsString]) -> io::Result<Option<DirId>> {
        let mut dir = self.root(root);
        let mut path = root.to_path_buf();
        for name in names {
            match self.lookup(dir, &path, name)? {
                Some(Node::Dir(id)) => dir = id,
                _ => return Ok(None),
            }
            path.push(name);
        }
        Ok(Some(dir))
    }

    /// The directory holding `path`, its path, and the name of `path` in it.
    fn resolve_parent(&mut self, path: &Path) -> io::Result<(DirId, PathBuf, OsString)> {
        let (root, mut names) = split(path);
        let name = names.pop().ok_or_else(|| not_found(path))?;
        let dir = self
            .resolve_dir(&root, &names)?
            .ok_or_else(|| not_found(path))?;
        let mut parent = root;
        parent.extend(&names);
        Ok((dir, parent, name))
    }

    /// Registers everything under directory `dir` (at `path`), so that the
    /// tree can be put back after it was renamed or removed.
    fn materialize(&mut self, dir: DirId, path: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(path)? {
            let name = entry?.file_name();
            if let Some(Node::Dir(child)) = self.lookup(dir, path, &name)? {
                self.materialize(child, &path.join(&name))?;
            }
        }
        Ok(())
    }

    /// Every directory and file reachable from the roots in `view`.
    fn flatten(&self, view: View) -> Flat {
        let mut flat = Flat::default();
        let mut visiting = HashSet::new();
        for (root, &id) in &self.roots {
            self.flatten_dir(id, root, view, &mut flat, &mut visiting);
        }
        flat
    }

    fn flatten_dir(
        &self,
        dir: DirId,
        path: &Path,
        view: View,
        flat: &mut Flat,
        visiting: &mut HashSet<DirId>,
    ) {
        // A directory inside itself can only come of a mix of old and new
        // entries no real file system would produce; it is not followed.
        if !visiting.insert(dir) {
            return;
        }
        let entries = &self.dirs[&dir];
        let entries = match view {
            View::Current => &entries.current,
            View::Durable => &entries.durable,
        };
        for (name, node) in entries {
            let child = path.join(name);
            match *node {
                Node::File(id) => {
                    flat.files.insert(child, id);
                }
                Node::Dir(id) => {
                    flat.dirs.insert(child.clone(), id);
                    self.flatten_dir(id, &child, view, flat, visiting);
                }
            }
        }
        visiting.remove(&dir);
    }

    /// What file `id` holds after the cut (see the module doc).
    fn image_after_cut(
        &self,
        id: FileId,
        rng: &mut Rng,
        report: &mut CutReport,
    ) -> io::Result<Vec<u8>> {
        let file = &self.files[&id];
        if file.mapped {
            return mapped_image_after_cut(file, rng, report);
        }
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
        Ok(bytes)
    }
}

/// What a file written through a memory map holds after the cut (see the
/// module doc): its current bytes, possibly cut to a random length if its
/// size changed since its last sync, with each page that differs from the
/// durable image either kept or reverted to it (zeros past its size).
fn mapped_image_after_cut(
    file: &Tracked,
    rng: &mut Rng,
    report: &mut CutReport,
) -> io::Result<Vec<u8>> {
    let mut bytes = read_whole(file.handle.as_ref())?;
    if file.resized && rng.coin() {
        bytes.truncate(rng.upto(bytes.len() as u64) as usize);
        report.index_truncated += 1;
    }
    let durable = &file.durable;
    for start in (0..bytes.len()).step_by(PAGE as usize) {
        let end = bytes.len().min(start + PAGE as usize);
        let page = &mut bytes[start..end];
        // The durable page, as far as the durable image reaches; zeros after.
        let old = durable.get(start..durable.len().min(end)).unwrap_or(&[]);
        let same = page[..old.len()] == *old && page[old.len()..].iter().all(|&b| b == 0);
        if same {
            continue;
        }
        if rng.coin() {
            report.pages_kept += 1;
        } else {
            page[..old.len()].copy_from_slice(old);
            page[old.len()..].fill(0);
            report.pages_reverted += 1;
        }
    }
    Ok(bytes)
}

impl PowerCutFs {
    /// A file system with nothing tracked yet.
    pub fn new() -> PowerCutFs {
        PowerCutFs::default()
    }

    /// After `n` more mutating calls (open for writing, write, sync,
    /// set_len, allocate, create dir, rename, remove, dir sync) every call
    /// fails with `EIO`, as if the machine had lost power at that point.
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

    /// Rewrites the real files and directories to what a power cut would
    /// leave (see the module doc), choosing torn writes, the lengths of
    /// mapped files and which of their pages survive from `rng_seed`, and starts the model afresh. Nothing may use the
    /// file system during the call, and handles opened before it must not
    /// be used after it.
    pub fn power_cut(&self, rng_seed: u64) -> io::Result<CutReport> {
        let mut state = self.state.lock();
        let mut rng = Rng(rng_seed);
        let mut report = CutReport::default();
        let current = state.flatten(View::Current);
        let durable = state.flatten(View::Durable);
        // What each surviving file will hold, computed before touching
        // disk (once per file: a file may survive under two names).
        let mut images: HashMap<FileId, Vec<u8>> = HashMap::new();
        for &id in durable.files.values() {
            if let std::collections::hash_map::Entry::Vacant(slot) = images.entry(id) {
                slot.insert(state.image_after_cut(id, &mut rng, &mut report)?);
            }
        }
        for (path, id) in &current.files {
            match durable.files.get(path) {
                None => report.vanished += 1,
                Some(d) if d != id => report.restored += 1,
                Some(_) => {}
            }
        }
        report.restored += durable
            .files
            .keys()
            .filter(|p| !current.files.contains_key(*p))
            .count();
        report.dirs_vanished = current
            .dirs
            .iter()
            .filter(|&(p, id)| durable.dirs.get(p) != Some(id))
            .count();
        report.dirs_restored = durable
            .dirs
            .iter()
            .filter(|&(p, id)| current.dirs.get(p) != Some(id))
            .count();
        // Every directory the running system has that is not the same
        // directory after the cut goes, with everything in it (a directory
        // that moved or was removed was read in full first, so nothing
        // untracked is lost that should survive); then every tracked file.
        for (path, id) in &current.dirs {
            if durable.dirs.get(path) != Some(id) {
                match std::fs::remove_dir_all(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        for path in current.files.keys() {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // The durable tree comes back: directories (parents first), files.
        for path in durable.dirs.keys() {
            std::fs::create_dir_all(path)?;
        }
        for (path, id) in &durable.files {
            std::fs::write(path, &images[id])?;
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
        let (dir, parent, name) = state.resolve_parent(path)?;
        let existing = state.lookup(dir, &parent, &name)?;
        if let Some(Node::Dir(_)) = existing {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        let inner = StdFs.open(path, mode)?;
        let id = match existing {
            Some(Node::File(id)) => id,
            // Created now: empty durable image, entry not durable yet.
            _ => {
                let id = state.new_file(StdFs.open(path, OpenMode::Read)?, Vec::new());
                state.dir(dir).current.insert(name, Node::File(id));
                id
            }
        };
        Ok(Arc::new(PowerCutFile {
            inner,
            id,
            state: self.state.clone(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        let (root, names) = split(path);
        let mut dir = state.root(&root);
        let mut at = root;
        for name in names {
            let node = state.lookup(dir, &at, &name)?;
            at.push(&name);
            dir = match node {
                Some(Node::Dir(id)) => id,
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a directory", at.display()),
                    ));
                }
                // Created now: its entry is not durable yet.
                None => {
                    std::fs::create_dir(&at)?;
                    let id = state.new_dir();
                    state.dir(dir).current.insert(name, Node::Dir(id));
                    id
                }
            };
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.state.lock().check_power()?;
        StdFs.read_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        let (dir, parent, name) = state.resolve_parent(path)?;
        // Registered first, so that it can come back.
        state.lookup(dir, &parent, &name)?;
        StdFs.remove_file(path)?;
        state.dir(dir).current.remove(&name);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        let (dir, parent, name) = state.resolve_parent(path)?;
        // Read in full first, so that the tree can come back.
        if let Some(Node::Dir(id)) = state.lookup(dir, &parent, &name)? {
            state.materialize(id, path)?;
        }
        StdFs.remove_dir_all(path)?;
        state.dir(dir).current.remove(&name);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        let (from_dir, from_parent, from_name) = state.resolve_parent(from)?;
        let moved = state.lookup(from_dir, &from_parent, &from_name)?;
        let (to_dir, to_parent, to_name) = state.resolve_parent(to)?;
        let replaced = state.lookup(to_dir, &to_parent, &to_name)?;
        // Directories are read in full first, so that they can come back.
        for (node, path) in [(moved, from), (replaced, to)] {
            if let Some(Node::Dir(id)) = node {
                state.materialize(id, path)?;
            }
        }
        StdFs.rename(from, to)?;
        if let Some(node) = moved {
            state.dir(from_dir).current.remove(&from_name);
            state.dir(to_dir).current.insert(to_name, node);
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        let (root, names) = split(path);
        let id = state
            .resolve_dir(&root, &names)?
            .ok_or_else(|| not_found(path))?;
        let dir = state.dir(id);
        dir.durable = dir.current.clone();
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

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.spend()?;
        let before = self.inner.len()?;
        self.inner.allocate(len)?;
        if self.inner.len()? != before {
            let file = state.file(self.id);
            file.dirty = true;
            file.resized = true;
            file.last_write = None;
        }
        Ok(())
    }

    /// The OS file, for a memory map: from now on the file may be written
    /// behind this file system's back, so a cut treats it page by page.
    fn std_file(&self) -> &File {
        self.state.lock().file(self.id).mapped = true;
        self.inner.std_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{create_dir_durably, write_all_at, write_atomically};

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

    /// Creates `path` holding `bytes`, synced, and syncs its directory.
    fn synced_file(fs: &PowerCutFs, path: &Path, bytes: &[u8]) {
        let file = fs.open(path, OpenMode::Create).expect("open");
        write_all_at(file.as_ref(), bytes, 0).expect("write");
        file.sync_data().expect("sync");
        fs.sync_dir(path.parent().expect("parent"))
            .expect("sync dir");
    }

    #[test]
    fn a_new_directory_vanishes_with_its_synced_files_unless_its_parent_was_synced() {
        let (_tmp, dir, fs) = setup();
        std::fs::create_dir_all(dir.join("untouched")).expect("mkdir");
        std::fs::write(dir.join("untouched/f"), b"as it was").expect("write");
        fs.create_dir_all(&dir.join("a/b")).expect("mkdir");
        synced_file(&fs, &dir.join("a/b/f"), b"data");
        // `a` is synced (so `b` is durable in it), but `a` itself is not
        // durable in `dir`.
        fs.sync_dir(&dir.join("a")).expect("sync dir");
        let report = fs.power_cut(1).expect("cut");
        assert!(
            !dir.join("a").exists(),
            "a was never synced into its parent"
        );
        assert_eq!((report.dirs_vanished, report.vanished), (2, 1));
        assert_eq!(
            std::fs::read(dir.join("untouched/f")).expect("read"),
            b"as it was",
            "what the file system never touched stays"
        );

        assert!(create_dir_durably(&fs, &dir.join("a/b"), &dir).expect("create"));
        synced_file(&fs, &dir.join("a/b/f"), b"data");
        let report = fs.power_cut(2).expect("cut");
        assert_eq!(std::fs::read(dir.join("a/b/f")).expect("read"), b"data");
        assert_eq!((report.dirs_vanished, report.vanished), (0, 0));
    }

    #[test]
    fn a_removed_directory_tree_comes_back_unless_its_parent_was_synced() {
        let (_tmp, dir, fs) = setup();
        std::fs::create_dir_all(dir.join("x/y")).expect("mkdir");
        std::fs::write(dir.join("x/y/f"), b"old").expect("write");
        fs.remove_dir_all(&dir.join("x")).expect("remove");
        assert!(!dir.join("x").exists());
        let report = fs.power_cut(3).expect("cut");
        assert_eq!(std::fs::read(dir.join("x/y/f")).expect("read"), b"old");
        assert_eq!((report.dirs_restored, report.restored), (2, 1));

        fs.remove_dir_all(&dir.join("x")).expect("remove");
        fs.sync_dir(&dir).expect("sync dir");
        fs.power_cut(4).expect("cut");
        assert!(!dir.join("x").exists(), "the removal was synced");
    }

    #[test]
    fn a_renamed_directory_keeps_its_entries_and_is_back_under_its_old_name_unless_synced() {
        let (_tmp, dir, fs) = setup();
        std::fs::create_dir_all(dir.join("trash")).expect("mkdir");
        std::fs::create_dir_all(dir.join("t/0")).expect("mkdir");
        std::fs::write(dir.join("t/0/seg"), b"records").expect("write");
        let (from, to) = (dir.join("t"), dir.join("trash/t.1"));
        fs.rename(&from, &to).expect("rename");
        fs.power_cut(5).expect("cut");
        assert_eq!(std::fs::read(from.join("0/seg")).expect("read"), b"records");
        assert!(!to.exists());

        fs.rename(&from, &to).expect("rename");
        fs.sync_dir(&dir).expect("sync dir");
        fs.sync_dir(&dir.join("trash")).expect("sync dir");
        fs.power_cut(6).expect("cut");
        assert!(!from.exists());
        assert_eq!(
            std::fs::read(to.join("0/seg")).expect("read"),
            b"records",
            "a directory's entries go with it"
        );
    }

    /// Opens `path` through `fs` and maps its first `len` bytes, as the
    /// indexes do.
    fn mapped(fs: &PowerCutFs, path: &Path, len: u64) -> (Arc<dyn StorageFile>, memmap2::MmapRaw) {
        let file = fs.open(path, OpenMode::ReadWrite).expect("open");
        let map = memmap2::MmapOptions::new()
            .len(len as usize)
            .map_raw(file.std_file())
            .expect("map");
        (file, map)
    }

    /// Stores `bytes` at `pos` through the map, bypassing `write_at`.
    fn store(map: &memmap2::MmapRaw, pos: u64, bytes: &[u8]) {
        assert!(pos as usize + bytes.len() <= map.len());
        // SAFETY: the range is inside the map (checked above), and nothing
        // else reads or writes the file meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                map.as_mut_ptr().add(pos as usize),
                bytes.len(),
            );
        }
    }

    /// Each page of `bytes`, as its one repeated byte (panics on a page
    /// that mixes bytes: pages survive or revert whole).
    fn pages(bytes: &[u8]) -> Vec<u8> {
        bytes
            .chunks(PAGE as usize)
            .map(|page| {
                assert!(page.iter().all(|&b| b == page[0]), "a page was split");
                page[0]
            })
            .collect()
    }

    #[test]
    fn unsynced_mapped_writes_survive_or_revert_page_by_page() {
        let (_tmp, dir, fs) = setup();
        let path = dir.join("0.index");
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..32 {
            // Existing before the file system touched it: durable as it is.
            std::fs::write(&path, vec![1u8; 4 * PAGE as usize]).expect("write");
            let (file, map) = mapped(&fs, &path, 4 * PAGE);
            store(&map, 0, &vec![2u8; 4 * PAGE as usize]);
            drop((map, file));
            let report = fs.power_cut(seed).expect("cut");
            let after = pages(&std::fs::read(&path).expect("read"));
            assert_eq!(after.len(), 4, "the size did not change");
            let reverted = after.iter().filter(|&&b| b == 1).count();
            assert_eq!(
                (report.pages_reverted, report.pages_kept),
                (reverted, 4 - reverted)
            );
            assert_eq!((report.reverted, report.torn), (0, 0));
            outcomes.insert(after);
        }
        assert!(
            outcomes.iter().any(|o| o.contains(&1) && o.contains(&2)),
            "some cut kept some pages and reverted others: {outcomes:?}"
        );
        assert!(outcomes.len() >= 8, "many combinations: {outcomes:?}");
    }

    #[test]
    fn a_synced_mapped_write_survives_and_later_ones_revert_to_it() {
        let mut page_one = std::collections::BTreeSet::new();
        for seed in 0..16 {
            let (_tmp, dir, fs) = setup();
            let path = dir.join("0.timeindex");
            let file = fs.open(&path, OpenMode::Create).expect("create");
            file.set_len(3 * PAGE).expect("set_len");
            fs.sync_dir(&dir).expect("sync dir");
            let (_, map) = mapped(&fs, &path, 3 * PAGE);
            store(&map, 0, &vec![3u8; 3 * PAGE as usize]);
            file.sync_data().expect("sync");
            // After the sync: part of page 1 only.
            store(&map, PAGE + 8, &[4u8; 100]);
            drop((map, file));
            let report = fs.power_cut(seed).expect("cut");
            let after = std::fs::read(&path).expect("read");
            assert_eq!(after.len() as u64, 3 * PAGE, "the synced size stays");
            let (before, rest) = after.split_at(PAGE as usize);
            let (one, two) = rest.split_at(PAGE as usize);
            assert!(
                before.iter().chain(two).all(|&b| b == 3),
                "synced pages survive every cut"
            );
            let kept = one[8..108].iter().all(|&b| b == 4);
            assert!(kept || one.iter().all(|&b| b == 3), "page 1 is whole");
            assert_eq!(report.pages_kept + report.pages_reverted, 1);
            assert_eq!(report.pages_kept == 1, kept);
            page_one.insert(kept);
        }
        assert_eq!(page_one.len(), 2, "page 1 both survived and reverted");
    }

    #[test]
    fn a_grown_mapped_file_may_be_cut_and_its_new_pages_revert_to_zeros() {
        let (mut cut, mut zeros) = (0, 0);
        for seed in 0..32 {
            let (_tmp, dir, fs) = setup();
            let path = dir.join("0.index");
            synced_file(&fs, &path, &vec![1u8; PAGE as usize]);
            let file = fs.open(&path, OpenMode::ReadWrite).expect("open");
            file.set_len(3 * PAGE).expect("grow");
            let (_, map) = mapped(&fs, &path, 3 * PAGE);
            store(&map, 0, &vec![2u8; 3 * PAGE as usize]);
            drop((map, file));
            let report = fs.power_cut(seed).expect("cut");
            let after = std::fs::read(&path).expect("read");
            assert!(after.len() as u64 <= 3 * PAGE);
            if report.index_truncated == 1 {
                cut += 1;
            } else {
                assert_eq!(after.len() as u64, 3 * PAGE);
            }
            for (i, page) in after.chunks(PAGE as usize).enumerate() {
                let old = if i == 0 { 1 } else { 0 };
                assert!(
                    page.iter().all(|&b| b == 2) || page.iter().all(|&b| b == old),
                    "page {i} is its new bytes or its durable ones"
                );
                zeros += usize::from(i > 0 && page[0] == 0);
            }
        }
        assert!(
            cut > 0 && zeros > 0,
            "cuts {cut}, reverted new pages {zeros}"
        );
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
