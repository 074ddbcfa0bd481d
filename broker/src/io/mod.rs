//! File I/O behind a small trait, so that tests can inject the failures real
//! disks produce (short writes, `ENOSPC`, failed `fsync`, read errors)
//! without touching the code under test.
//!
//! - [`FileSystem`] opens files and does directory operations.
//! - [`StorageFile`] is one open file: positioned reads and writes
//!   (`pread`/`pwrite`), `fdatasync`, `set_len`.
//! - [`StdFs`] is the real thing. For tests (and, outside this crate, with
//!   the `test-util` feature, as tokio does): `FaultyFs` wraps it and fails
//!   the calls a `FaultPlan` says to fail; `PowerCutFs` keeps what a power
//!   cut would leave (only what a completed fsync covered, the last write
//!   torn). Neither is compiled into a release build.
//!
//! - [`seal`], [`unseal`] and [`LeCursor`]: the CRC-32 trailer and the
//!   bounds-checked little-endian reading of the small binary state files
//!   (the delivery journal's events are read with [`LeCursor`] too).
//!
//! Invariants: every write is positioned (no shared file cursor), so readers
//! and the single writer of a file never disturb each other. A short write is
//! not an error: [`write_all_at`] continues it, and a write of zero bytes is
//! reported as [`io::ErrorKind::WriteZero`].

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
    /// The underlying OS file, for memory maps.
    fn std_file(&self) -> &std::fs::File;
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
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir)
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
    fn write_atomically_replaces_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta");
        write_atomically(&StdFs, &path, b"one").expect("first");
        write_atomically(&StdFs, &path, b"two!").expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two!");
        assert!(!dir.path().join("meta.tmp").exists());
    }
}
