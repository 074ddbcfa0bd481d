//! Opening many partition logs at once ([`open_all`]): at broker start
//! (every partition of every topic) and when a topic is created.
//!
//! Each log is opened by [`Log::open`], exactly as alone: the steps of
//! [recovery](super), their order and their crash story are those of one
//! log. What this adds is that up to [`open_threads`] logs are opened at
//! the same time, on short-lived threads that end when the last log is
//! open. Logs share nothing on disk (each has its own directory), so
//! opening them side by side changes nothing in what each one does;
//! recovery is mostly waiting for the disk (reads of the tails, and the
//! `fsync`s of what was recovered), which the disk serves better many at a
//! time than one after another.
//!
//! ## Invariants
//!
//! - The logs are taken in the order given, so the answer is the same as
//!   opening them one after another until the first failure: either every
//!   log, in order, or the first log (in that order) that failed, with its
//!   error. Once one has failed no further log is started; those already
//!   being opened are finished and, if the open fails, dropped unused, as
//!   after a crash (their next open recovers them). Every log before the
//!   failed one in the order was started before it, so the first failure
//!   in the order is always known.
//! - At most `threads` logs are being opened at once; the calling thread
//!   takes part, so a thread that cannot be started only slows the open.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::io::FileSystem;
use crate::log::clock::Clock;
use crate::log::config::LogConfig;
use crate::log::error::{LogError, LogResult};
use crate::log::writer::Log;

/// How many logs are opened at once: sixteen per CPU, at least 32, at
/// most 64. Opening a log is mostly waiting (file opens, the `fdatasync`
/// of a recovered tail), little CPU: at 10,000 partitions on 2 CPUs, 32 at
/// once started in 1.1–1.5 s where 8 took 1.8–1.9 s.
pub fn open_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (16 * cpus).clamp(32, 64)
}

/// Opens (creating or recovering as needed) the log of each `(dir,
/// config)`, up to `threads` at once. Every log, in the order given; or
/// the index of the first one that failed, and its error.
pub fn open_all(
    fs: &Arc<dyn FileSystem>,
    clock: &Arc<dyn Clock>,
    logs: &[(PathBuf, LogConfig)],
    threads: usize,
) -> Result<Vec<Log>, (usize, LogError)> {
    let count = logs.len();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let opened: Vec<Mutex<Option<LogResult<Log>>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let work = || {
        while !failed.load(Ordering::Acquire) {
            let i = next.fetch_add(1, Ordering::AcqRel);
            let Some((dir, config)) = logs.get(i) else {
                break;
            };
            let log = Log::open(fs.clone(), dir, config.clone(), clock.clone());
            if log.is_err() {
                failed.store(true, Ordering::Release);
            }
            *opened[i].lock() = Some(log);
        }
    };
    let helpers = threads.min(count).saturating_sub(1);
    std::thread::scope(|scope| {
        for n in 0..helpers {
            let spawned = std::thread::Builder::new()
                .name(format!("log-open-{n}"))
                .spawn_scoped(scope, work);
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start a thread to open partition logs; fewer open at once");
                break;
            }
        }
        work();
    });
    let mut logs = Vec::with_capacity(count);
    for (i, slot) in opened.into_iter().enumerate() {
        match slot.into_inner() {
            Some(Ok(log)) => logs.push(log),
            Some(Err(e)) => return Err((i, e)),
            // Not started: only after a failure, which comes first in the
            // order (see the module doc).
            None => {
                let why = std::io::Error::other("the log was never opened (a bug)");
                return Err((i, LogError::io("opening partition logs", why)));
            }
        }
    }
    Ok(logs)
}
