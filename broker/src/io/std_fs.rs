//! The real file system: `std::fs` with positioned I/O (reads straight
//! into a buffer's uninitialised capacity, and page-cache-only reads with
//! `preadv2(RWF_NOWAIT)`), page-cache advice (`posix_fadvise`), disk
//! space reserved up front with `fallocate` ([`allocate`]), and where a
//! file holds data (`lseek` with `SEEK_DATA`/`SEEK_HOLE`). All through
//! `libc`, which the crate already uses for `fallocate`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::os::fd::AsRawFd;

use super::{Advice, FileSystem, OpenMode, StorageFile};

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

/// A file of [`StdFs`].
#[derive(Debug)]
pub struct StdFile(File);

impl FileSystem for StdFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                options.write(true);
            }
            OpenMode::Create => {
                options.write(true).create(true);
            }
        }
        Ok(Arc::new(StdFile(options.open(path)?)))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// [`StorageFile::allocate`] for an OS file: `fallocate` (mode 0: allocate,
/// keep the data, extend the size). Where the file system does not support
/// it, each block is rewritten with its own bytes (zeros past the end),
/// which allocates it as well.
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let end = libc::off_t::try_from(len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot allocate {len} bytes: too large for off_t"),
            )
        })?;
        loop {
            // SAFETY: fallocate takes a descriptor that `file` keeps open
            // for the call, and no pointers.
            if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, end) } == 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EOPNOTSUPP) => break,
                _ => return Err(error),
            }
        }
    }
    rewrite_blocks(file, len)
}

/// Allocates the first `len` bytes of a file by writing every block back
/// with the bytes it holds (zeros past the end of the file).
fn rewrite_blocks(file: &File, len: u64) -> io::Result<()> {
    const BLOCK: u64 = 4096;
    let mut buf = [0u8; BLOCK as usize];
    let mut pos = 0;
    while pos < len {
        let chunk = &mut buf[..(len - pos).min(BLOCK) as usize];
        chunk.fill(0);
        let mut filled = 0;
        while filled < chunk.len() {
            match file.read_at(&mut chunk[filled..], pos + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        file.write_all_at(chunk, pos)?;
        pos += chunk.len() as u64;
    }
    Ok(())
}

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        self.0.write_at(buf, pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn std_file(&self) -> &File {
        &self.0
    }

    fn read_into(&self, buf: &mut Vec<u8>, len: usize, pos: u64) -> io::Result<usize> {
        let offset = offset_of(pos)?;
        buf.reserve(len);
        let spare = &mut buf.spare_capacity_mut()[..len];
        // SAFETY: pread writes at most `len` bytes into the `len` bytes of
        // spare capacity the pointer addresses, which `buf` owns and
        // nothing else references during the call.
        let read = unsafe {
            libc::pread(
                self.0.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                len,
                offset,
            )
        };
        let read = usize::try_from(read).map_err(|_| io::Error::last_os_error())?;
        // SAFETY: the kernel initialised the first `read` (≤ `len`) bytes
        // of the spare capacity.
        unsafe { buf.set_len(buf.len() + read) };
        Ok(read)
    }

    #[cfg(target_os = "linux")]
    fn read_cached_into(
        &self,
        buf: &mut Vec<u8>,
        len: usize,
        pos: u64,
    ) -> io::Result<Option<usize>> {
        let offset = offset_of(pos)?;
        buf.reserve(len);
        let spare = &mut buf.spare_capacity_mut()[..len];
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast::<libc::c_void>(),
            iov_len: len,
        };
        loop {
            // SAFETY: one iovec addressing `len` bytes of spare capacity
            // that `buf` owns; the kernel writes at most that many.
            let read =
                unsafe { libc::preadv2(self.0.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
            if let Ok(read) = usize::try_from(read) {
                // SAFETY: the kernel initialised the first `read` bytes.
                unsafe { buf.set_len(buf.len() + read) };
                return Ok(Some(read));
            }
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not (all) in the page cache.
                Some(libc::EAGAIN) => Ok(Some(0)),
                // The kernel or file system cannot tell.
                Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(None),
                _ => Err(error),
            };
        }
    }

    #[cfg(target_os = "linux")]
    fn data_after(&self, pos: u64) -> io::Result<Option<(u64, u64)>> {
        let found = seek(&self.0, pos, libc::SEEK_DATA).and_then(|start| match start {
            // Every file ends in a hole (its end), so `None` here means it
            // was cut since: no data after `start` either.
            Some(start) => Ok(seek(&self.0, start, libc::SEEK_HOLE)?.map(|end| (start, end))),
            None => Ok(None),
        });
        match found {
            // A file system that cannot tell: everything may be data.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => super::all_data_after(self, pos),
            found => found,
        }
    }

    #[cfg(target_os = "linux")]
    fn advise(&self, pos: u64, len: u64, advice: Advice) -> io::Result<()> {
        let advice = match advice {
            Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
            Advice::DontNeed => libc::POSIX_FADV_DONTNEED,
            Advice::Random => libc::POSIX_FADV_RANDOM,
        };
        let (offset, len) = (offset_of(pos)?, offset_of(len)?);
        // SAFETY: posix_fadvise takes a descriptor `self` keeps open and
        // no pointers.
        match unsafe { libc::posix_fadvise(self.0.as_raw_fd(), offset, len, advice) } {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// `lseek(fd, pos, whence)`: the position it answers, or `None` for
/// `ENXIO` (no data, or no hole, at or after `pos`).
#[cfg(target_os = "linux")]
fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek takes a descriptor `file` keeps open and no pointers.
    // The descriptor's own position, which it moves, is not used: every
    // read and write names its position.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset_of(pos)?, whence) };
    match u64::try_from(at) {
        Ok(at) => Ok(Some(at)),
        Err(_) => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            e => Err(e),
        },
    }
}

/// A file position as `off_t`.
fn offset_of(pos: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(pos).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("position {pos} is too large for off_t"),
        )
    })
}
