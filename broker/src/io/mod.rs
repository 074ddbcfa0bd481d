//! File I/O behind a small trait, so that tests can inject the failures real
//! disks produce (short writes, `ENOSPC`, failed `fsync`, read errors)
//! without touching the code under test.
//!
//! - [`FileSystem`] opens files and does directory operations.
//! - [`StorageFile`] is one open file: positioned reads and writes
//!   (`pread`/`pwrite`; reads also into a buffer's uninitialised spare
//!   capacity, [`read_full_into`], and from the page cache only,
//!   `RWF_NOWAIT`), page-cache advice (`posix_fadvise`, [`Advice`]),
//!   `fdatasync`, `set_len`, and `allocate` (disk space
//!   reserved up front, for files written through a memory map: on a full
//!   disk a store into an unallocated mapped page is a `SIGBUS` that kills
//!   the process, while a failed `allocate` is an `ENOSPC` answer).
//! - [`StdFs`] is the real thing. For tests (and, outside this crate, with
//!   the `test-util` feature, as tokio does): `FaultyFs` wraps it and fails
//!   the calls a `FaultPlan` says to fail; `PowerCutFs` keeps what a power
//!   cut would leave (only what a completed fsync covered, the last write
//!   torn, pages written through a memory map kept or lost one by one).
//!   Neither is compiled into a release build.
//!
//! - [`write_atomically`], [`create_dir_durably`] and [`sync_parent`]: a
//!   file replaced whole, and directory entries (new directories, renames,
//!   deletes) made durable by syncing the directory that holds them.
//! - [`seal`], [`unseal`] and [`LeCursor`]: the CRC-32 trailer and the
//!   bounds-checked little-endian reading of the small binary state files
//!   (the delivery journal's events are read with [`LeCursor`] too).
//!
//! Invariants: every write is positioned (no shared file cursor), so readers
//! and the single writer of a file never disturb each other. A short write is
//! not an error: [`write_all_at`] continues it, and a write of zero bytes is
//! reported as [`io::ErrorKind::WriteZero`]. A directory is durable only
//! once its parent was synced after its creation: the broker creates
//! directories with [`create_dir_durably`], never with a bare
//! [`FileSystem::create_dir_all`].

#[cfg(any(test, feature = "test-util"))]
mod fault;
#[cfg(any(test, feature = "test-util"))]
mod powercut;
mod state_bytes;
mod std_fs;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(any(test, feature = "test-util"))]
pub use fault::{Fault, FaultPlan, FaultyFs, Op};
#[cfg(any(test, feature = "test-util"))]
pub use powercut::{CutReport, PowerCutFs};
pub use state_bytes::{LeCursor, seal, unseal};
pub use std_fs::StdFs;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; created empty if missing.
    Create,
}

/// Directory-level operations and opening files.
pub trait FileSystem: Send + Sync + Debug + 'static {
    /// Opens `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates `path` and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Entries of a directory (full paths), in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `fsync` of a directory, making creates, renames and deletes in it durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
}

/// One open file.
pub trait StorageFile: Send + Sync + Debug {
    /// Reads at `pos`; may return fewer bytes than asked (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes at `pos`; may write fewer bytes than given.
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize>;
    /// `fdatasync`: the data written so far (and the size) is durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current size in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reserves disk space for the first `len` bytes (growing the file to
    /// `len` if it is shorter) and keeps the bytes already there, so that
    /// writing them later cannot fail for lack of space, also through a
    /// memory map (where it would be a `SIGBUS`, not an error). Call it
    /// before the file is mapped or shared. `ENOSPC` when the disk is full.
    fn allocate(&self, len: u64) -> io::Result<()> {
        std_fs::allocate(self.std_file(), len)
    }
    /// The underlying OS file, for memory maps.
    fn std_file(&self) -> &std::fs::File;
    /// Reads up to `len` bytes at `pos` into the spare capacity of `buf`
    /// (appended; never zero-filled first); returns how many were read (0
    /// at end of file, fewer than asked when the read was short).
    fn read_into(&self, buf: &mut Vec<u8>, len: usize, pos: u64) -> io::Result<usize> {
        let start = buf.len();
        buf.resize(start + len, 0);
        let read = self.read_at(&mut buf[start..], pos);
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }
    /// [`read_into`](Self::read_into), but only what the page cache holds
    /// (`preadv2` with `RWF_NOWAIT`): the bytes read (possibly 0) from
    /// `pos` on; `None` when the file cannot tell.
    fn read_cached_into(
        &self,
        _buf: &mut Vec<u8>,
        _len: usize,
        _pos: u64,
    ) -> io::Result<Option<usize>> {
        Ok(None)
    }
    /// Advice to the page cache about `len` bytes at `pos`
    /// (`posix_fadvise`); a file that cannot take it ignores it.
    fn advise(&self, _pos: u64, _len: u64, _advice: Advice) -> io::Result<()> {
        Ok(())
    }
    /// The first range `start..end` at or after `pos` that may hold bytes
    /// other than zeros, `None` when none does (`lseek` with `SEEK_DATA`
    /// and `SEEK_HOLE`). What is outside every such range reads as zeros:
    /// a hole, or space reserved by [`allocate`](Self::allocate) and never
    /// written. A file that cannot tell answers `pos..len`: everything
    /// may be data.
    fn data_after(&self, pos: u64) -> io::Result<Option<(u64, u64)>> {
        all_data_after(self, pos)
    }
}

/// What [`StorageFile::data_after`] answers for a file that cannot tell
/// data from holes: everything from `pos` to its end may be data.
pub(crate) fn all_data_after<F: StorageFile + ?Sized>(
    file: &F,
    pos: u64,
) -> io::Result<Option<(u64, u64)>> {
    let len = file.len()?;
    Ok((pos < len).then_some((pos, len)))
}

/// Page-cache advice ([`StorageFile::advise`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// The file is read sequentially: read further ahead.
    Sequential,
    /// The range will not be read again soon: drop its clean pages.
    DontNeed,
    /// The file is read here and there: read only what is asked (no
    /// read-ahead).
    Random,
}

/// Appends exactly `len` bytes at `pos` to `buf` (into its spare capacity)
/// unless the file ends first; returns the bytes appended.
pub fn read_full_into(
    file: &dyn StorageFile,
    buf: &mut Vec<u8>,
    len: usize,
    pos: u64,
) -> io::Result<usize> {
    buf.reserve(len);
    let mut done = 0;
    while done < len {
        match file.read_into(buf, len - done, pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes all of `buf` at `pos`, continuing short writes.
pub fn write_all_at(file: &dyn StorageFile, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, pos) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "write returned 0 bytes",
                ));
            }
            Ok(n) => {
                buf = &buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub fn read_full_at(file: &dyn StorageFile, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads a whole file, at most `max` bytes of it (a small metadata or state
/// file: the cap keeps a damaged or hostile size from allocating much).
pub fn read_all(fs: &dyn FileSystem, path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read)?;
    let len = usize::try_from(file.len()?).unwrap_or(usize::MAX).min(max);
    let mut buf = vec![0u8; len];
    let read = read_full_at(file.as_ref(), &mut buf, 0)?;
    buf.truncate(read);
    Ok(buf)
}

/// Creates the directory `path` and every missing directory between it and
/// `up_to`, one at a time, and makes the new names durable: once anything
/// was created, every directory from the parent of the deepest new one up
/// to `up_to` itself is fsynced (an ancestor that already existed may have
/// been created by a process that died before its parent was synced, so
/// the whole chain is synced, not only the new names' parents). Nothing is
/// synced when `path` already existed. Returns whether anything was
/// created.
///
/// `up_to` must be `path` or one of its ancestors, and must exist: the
/// caller owns it (the data directory) and its own name's durability; a
/// caller that owns no such directory passes [`existing_ancestor`]. An
/// empty `up_to` means the current directory.
pub fn create_dir_durably(fs: &dyn FileSystem, path: &Path, up_to: &Path) -> io::Result<bool> {
    let below = path.strip_prefix(up_to).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not inside {}: the directory cannot be created there",
                path.display(),
                up_to.display()
            ),
        )
    })?;
    if !fs.exists(as_dir(up_to)) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} does not exist, so {} cannot be created in it",
                up_to.display(),
                path.display()
            ),
        ));
    }
    let mut current = up_to.to_path_buf();
    // The parent of the deepest directory created so far.
    let mut deepest_parent = None;
    for component in below.components() {
        let parent = current.clone();
        current.push(component);
        if !fs.exists(&current) {
            // Its parent exists: this creates exactly one directory.
            fs.create_dir_all(&current)?;
            deepest_parent = Some(parent);
        }
    }
    let Some(deepest_parent) = deepest_parent else {
        return Ok(false);
    };
    // From the deepest new name's parent up to `up_to`, inclusive.
    let depth = deepest_parent
        .strip_prefix(up_to)
        .map_or(0, |rest| rest.components().count());
    for dir in deepest_parent.ancestors().take(depth + 1) {
        fs.sync_dir(as_dir(dir))?;
    }
    Ok(true)
}

/// The nearest ancestor of `path` (or `path` itself) that exists; the empty
/// path (the current directory) if none does. The boundary to pass to
/// [`create_dir_durably`] by a caller that owns no directory above `path`.
pub fn existing_ancestor<'a>(fs: &dyn FileSystem, path: &'a Path) -> &'a Path {
    path.ancestors()
        .find(|dir| !dir.as_os_str().is_empty() && fs.exists(dir))
        .unwrap_or(Path::new(""))
}

/// `path` as a directory to open: the empty path (the parent of a relative
/// one-component path) is the current directory.
fn as_dir(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

/// fsyncs the directory holding `path`, making a create, rename or delete
/// of `path` durable.
pub fn sync_parent(fs: &dyn FileSystem, path: &Path) -> io::Result<()> {
    fs.sync_dir(as_dir(path.parent().unwrap_or(Path::new(""))))
}

/// The temp file a replacement of `path` is built in: `path` with `.tmp`
/// appended. Whoever owns the directory removes leftover `*.tmp` files at
/// start (they are interrupted replacements).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Writes `bytes` to `path` so that after a crash the file holds either its
/// old content or all of `bytes`: write a temp file, fsync it, rename it over
/// `path`, fsync the directory.
pub fn write_atomically(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let file = fs.open(&tmp, OpenMode::Create)?;
    file.set_len(0)?;
    write_all_at(file.as_ref(), bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, path)?;
    sync_parent(fs, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_all_at_continues_short_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = FaultPlan::new();
        let fs = FaultyFs::new(plan.clone());
        let file = fs
            .open(&dir.path().join("f"), OpenMode::Create)
            .expect("open");
        plan.inject(Op::Write, "f", Fault::ShortWrite(3), 0, None);
        write_all_at(file.as_ref(), b"hello world", 0).expect("short writes are continued");
        let mut buf = [0u8; 11];
        assert_eq!(read_full_at(file.as_ref(), &mut buf, 0).expect("read"), 11);
        assert_eq!(&buf, b"hello world");
    }

    #[test]
    fn create_dir_durably_creates_each_missing_directory_and_syncs_the_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("data");
        std::fs::create_dir(&root).expect("mkdir");
        let plan = FaultPlan::new();
        let fs = FaultyFs::new(plan.clone());
        let path = root.join("topics/t/0");
        assert!(create_dir_durably(&fs, &path, &root).expect("create"));
        assert!(path.is_dir());
        assert!(
            !create_dir_durably(&fs, &path, &root).expect("again"),
            "nothing to create the second time"
        );
        // A failed sync of a parent is reported, not ignored (the first
        // directory operation, the creation, succeeds).
        plan.inject(Op::DirOp, "data", Fault::Io, 1, None);
        create_dir_durably(&fs, &root.join("topics/u"), &root).expect_err("the sync fails");
        assert!(root.join("topics/u").is_dir());
    }

    #[test]
    fn create_dir_durably_stays_inside_its_boundary() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = create_dir_durably(&StdFs, &tmp.path().join("a"), &tmp.path().join("b"))
            .expect_err("not inside");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let missing = tmp.path().join("missing");
        let err =
            create_dir_durably(&StdFs, &missing.join("a"), &missing).expect_err("no boundary");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!missing.exists(), "nothing above the boundary is created");
    }

    #[test]
    fn write_atomically_replaces_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta");
        write_atomically(&StdFs, &path, b"one").expect("first");
        write_atomically(&StdFs, &path, b"two!").expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two!");
        assert!(!dir.path().join("meta.tmp").exists());
    }
}
