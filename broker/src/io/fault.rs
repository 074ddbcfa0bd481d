//! A [`FileSystem`] that fails chosen calls, for tests of every error path.
//!
//! A [`FaultPlan`] is a list of rules shared between the test and the file
//! system: "the 3rd write to a `.log` file returns `ENOSPC`", "every
//! `fdatasync` fails from now on", "writes are cut to 100 bytes". Rules can be
//! cleared at any time to let service resume, as when a disk gets space back.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileSystem, OpenMode, StdFs, StorageFile};

/// A call that a rule can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Opening (and creating) a file.
    Open,
    /// `pwrite`.
    Write,
    /// `fdatasync` of a file.
    Sync,
    /// `pread`.
    Read,
    /// `set_len` (truncate or extend).
    SetLen,
    /// `allocate` (reserving disk space up front).
    Allocate,
    /// Rename, remove, and directory `fsync`.
    DirOp,
}

/// What a failing call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with `ENOSPC` (no space left on device).
    NoSpace,
    /// Fails with `EIO` (input/output error).
    Io,
    /// A write that stores at most this many bytes and reports so.
    ShortWrite(usize),
}

#[derive(Debug)]
struct Rule {
    op: Op,
    path_contains: String,
    fault: Fault,
    skip: u64,
    remaining: Option<u64>,
}

/// The shared list of fault rules, and a count of calls per operation.
#[derive(Debug, Default, Clone)]
pub struct FaultPlan {
    rules: Arc<Mutex<Vec<Rule>>>,
    calls: Arc<Mutex<Vec<(Op, String)>>>,
    /// Files opened through the plan's file systems and not yet closed:
    /// now, and the most at any moment so far.
    open_files: Arc<Mutex<(usize, usize)>>,
}

impl FaultPlan {
    /// A plan with no rules: everything succeeds.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Fails calls of `op` on paths containing `path_contains`, after letting
    /// `skip` matching calls succeed, `times` times (`None`: until cleared).
    pub fn inject(&self, op: Op, path_contains: &str, fault: Fault, skip: u64, times: Option<u64>) {
        self.rules.lock().push(Rule {
            op,
            path_contains: path_contains.to_owned(),
            fault,
            skip,
            remaining: times,
        });
    }

    /// Removes every rule: the disk is healthy again.
    pub fn clear(&self) {
        self.rules.lock().clear();
    }

    /// How many calls of `op` were made on paths containing `path_contains`.
    pub fn calls(&self, op: Op, path_contains: &str) -> usize {
        let calls = self.calls.lock();
        calls
            .iter()
            .filter(|(o, p)| *o == op && p.contains(path_contains))
            .count()
    }

    /// Files open now, and the most open at once so far.
    pub fn open_files(&self) -> (usize, usize) {
        *self.open_files.lock()
    }

    fn opened(&self) {
        let mut open = self.open_files.lock();
        open.0 += 1;
        open.1 = open.1.max(open.0);
    }

    fn closed(&self) {
        self.open_files.lock().0 -= 1;
    }

    /// The fault to apply to this call, if any.
    fn check(&self, op: Op, path: &Path) -> Option<Fault> {
        let path = path.to_string_lossy();
        if matches!(op, Op::Sync | Op::DirOp | Op::Open) {
            self.calls.lock().push((op, path.to_string()));
        }
        let mut rules = self.rules.lock();
        for rule in rules.iter_mut() {
            if rule.op != op || !path.contains(rule.path_contains.as_str()) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            match &mut rule.remaining {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            return Some(rule.fault);
        }
        None
    }

    fn fail(&self, op: Op, path: &Path) -> io::Result<()> {
        match self.check(op, path) {
            Some(fault) => Err(fault_error(fault)),
            None => Ok(()),
        }
    }
}

fn fault_error(fault: Fault) -> io::Error {
    match fault {
        Fault::NoSpace => io::Error::from_raw_os_error(28), // ENOSPC
        Fault::Io | Fault::ShortWrite(_) => io::Error::from_raw_os_error(5), // EIO
    }
}

/// A [`StdFs`] that consults a [`FaultPlan`] before every call.
#[derive(Debug, Clone)]
pub struct FaultyFs {
    plan: FaultPlan,
}

impl FaultyFs {
    /// A file system failing what `plan` says.
    pub fn new(plan: FaultPlan) -> FaultyFs {
        FaultyFs { plan }
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    path: PathBuf,
    plan: FaultPlan,
}

impl FileSystem for FaultyFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        self.plan.fail(Op::Open, path)?;
        let inner = StdFs.open(path, mode)?;
        self.plan.opened();
        Ok(Arc::new(FaultyFile {
            inner,
            path: path.to_owned(),
            plan: self.plan.clone(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.plan.fail(Op::DirOp, path)?;
        StdFs.create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        StdFs.read_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.plan.fail(Op::DirOp, path)?;
        StdFs.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.plan.fail(Op::DirOp, path)?;
        StdFs.remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.plan.fail(Op::DirOp, to)?;
        StdFs.rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.plan.fail(Op::DirOp, path)?;
        StdFs.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
    }
}

impl Drop for FaultyFile {
    fn drop(&mut self) {
        self.plan.closed();
    }
}

impl StorageFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.plan.fail(Op::Read, &self.path)?;
        self.inner.read_at(buf, pos)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        match self.plan.check(Op::Write, &self.path) {
            Some(Fault::ShortWrite(max)) => self.inner.write_at(&buf[..buf.len().min(max)], pos),
            Some(fault) => Err(fault_error(fault)),
            None => self.inner.write_at(buf, pos),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.plan.fail(Op::Sync, &self.path)?;
        self.inner.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.plan.fail(Op::SetLen, &self.path)?;
        self.inner.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.plan.fail(Op::Allocate, &self.path)?;
        self.inner.allocate(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn data_after(&self, pos: u64) -> io::Result<Option<(u64, u64)>> {
        self.inner.data_after(pos)
    }

    fn std_file(&self) -> &File {
        self.inner.std_file()
    }
}
