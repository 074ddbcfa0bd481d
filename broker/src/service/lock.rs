//! [`DataDirLock`]: one broker per data directory.
//!
//! Two brokers on one directory would each recover the other's files (cut
//! "torn" tails the other is still writing, rebuild indexes under its
//! maps) and then append to the same segments. So before it reads anything
//! in the data directory, a broker takes an exclusive, non-blocking
//! `flock` on `<data-dir>/.lock` and holds it for as long as it runs.
//!
//! Invariants:
//!
//! - The lock belongs to the open file, not to the name: it goes when the
//!   process ends however it ends (`kill -9` included), so a leftover
//!   `.lock` file never blocks a restart, and nothing has to clean it up.
//! - A broker that does not get the lock changes nothing: the file is
//!   opened without truncation (created only if missing), and only the
//!   holder writes into it, after locking: its pid, for the loser's
//!   message. The pid is informational; the lock is the `flock`.
//! - The lock is taken on the real file system, not through
//!   [`crate::io::FileSystem`]: it is about processes, not data, and the
//!   fault-injecting file systems must not fake it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{BrokerError, ErrorKind};

/// The name of the lock file in the data directory.
pub const LOCK_FILE: &str = ".lock";

/// The exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// Holds the `flock`; closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Locks `data_dir` (which must exist) for this process. Fails with a
    /// message naming the directory and the holder's pid if another broker
    /// holds it; changes nothing in that case.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, BrokerError> {
        let path = data_dir.join(LOCK_FILE);
        let cannot = |e: io::Error| {
            BrokerError::new(
                ErrorKind::Storage,
                format!(
                    "cannot lock the data directory {} ({}: {e}); check that it is writable by this user",
                    data_dir.display(),
                    path.display()
                ),
            )
        };
        // No truncation: the file may be the holder's, with its pid.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(cannot)?;
        if let Err(e) = try_lock(&file) {
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(cannot(e));
            }
            let holder = holder_pid(&file).map_or_else(
                || "its pid is unknown".to_owned(),
                |pid| format!("pid {pid}"),
            );
            return Err(BrokerError::new(
                ErrorKind::Storage,
                format!(
                    "the data directory {} is in use by another broker ({holder}); stop it or choose another --data-dir",
                    data_dir.display()
                ),
            ));
        }
        write_pid(&file).map_err(cannot)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `WouldBlock` if another open file holds it.
fn try_lock(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps
        // open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The pid the holder wrote on the file's first line, if it wrote one yet.
fn holder_pid(file: &File) -> Option<u32> {
    let mut buf = [0u8; 64];
    let read = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..read]).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Writes this process's pid over whatever the file held. The new line is
/// written before the file is cut to its length, so a reader sees a whole
/// pid on the first line at every moment (the old one or the new one).
fn write_pid(file: &File) -> io::Result<()> {
    let line = format!("{}\n", std::process::id());
    file.write_all_at(line.as_bytes(), 0)?;
    file.set_len(line.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let held = DataDirLock::acquire(tmp.path()).expect("first lock");
        let before = std::fs::read(held.path()).expect("read the lock file");
        assert_eq!(before, format!("{}\n", std::process::id()).into_bytes());
        let err = DataDirLock::acquire(tmp.path()).expect_err("second lock");
        assert!(
            err.message.contains(&tmp.path().display().to_string())
                && err.message.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert_eq!(std::fs::read(held.path()).expect("read"), before);
        drop(held);
        DataDirLock::acquire(tmp.path()).expect("free again once dropped");
    }

    #[test]
    fn a_leftover_lock_file_with_a_longer_pid_is_taken_over() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(LOCK_FILE), "123456789012\n").expect("write");
        let held = DataDirLock::acquire(tmp.path()).expect("lock");
        assert_eq!(
            std::fs::read_to_string(held.path()).expect("read"),
            format!("{}\n", std::process::id())
        );
    }
}
