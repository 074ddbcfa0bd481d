//! The disk's own floor: the latency of a 4 KiB append plus `fdatasync`,
//! measured by the load generator itself, so that a durable system's ack
//! latency can be read against what the disk allowed at that moment.
//!
//! Two ways to run the same probe round ([`PROBE_BYTES`] appended at the
//! end of a scratch file, then `fdatasync`, timed together, the way a log
//! commits):
//!
//! - [`FsyncProbe::start`]: during a run, on its own thread, one round
//!   every [`ProbeSettings::every`] (10 ms by default: about 100 small
//!   fsyncs per second next to the system's own, a light extra load on the
//!   disk), until [`FsyncProbe::finish`];
//! - [`probe_back_to_back`]: a number of rounds one after another, before
//!   or between runs.
//!
//! The scratch file is created in the directory given (it must be on the
//! filesystem to be measured: the system's data directory, or a directory
//! next to it) under a name of its own, kept below [`MAX_FILE_BYTES`] (it
//! is cut back to zero, untimed, when it would grow past), and removed at
//! the end, also when the probe fails. Latencies are whole µs in a
//! [`Latency`] (3 significant digits).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::latency::{Latency, Percentiles};

/// Bytes appended before each `fdatasync`.
pub const PROBE_BYTES: usize = 4096;
/// The scratch file is cut back to zero before it grows past this.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Pause between two rounds of a probe running alongside a run.
pub const DEFAULT_EVERY: Duration = Duration::from_millis(10);

/// Where and how often the probe runs during a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    /// A directory on the filesystem to measure.
    pub dir: PathBuf,
    /// Pause between rounds.
    pub every: Duration,
}

impl ProbeSettings {
    /// Rounds in `dir`, one every [`DEFAULT_EVERY`].
    pub fn in_dir(dir: impl Into<PathBuf>) -> ProbeSettings {
        ProbeSettings {
            dir: dir.into(),
            every: DEFAULT_EVERY,
        }
    }
}

/// What a probe measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Floor {
    /// The directory probed.
    pub dir: PathBuf,
    /// Rounds timed.
    pub rounds: u64,
    /// Their latency percentiles, µs.
    pub latency: Percentiles,
}

impl Floor {
    fn of(dir: &Path, latency: &Latency) -> Floor {
        Floor {
            dir: dir.to_path_buf(),
            rounds: latency.len(),
            latency: latency.percentiles(),
        }
    }

    /// As JSON: `dir`, `rounds`, `p50_us`, `p99_us`, `p999_us`, `max_us`.
    pub fn to_json(&self) -> Value {
        json!({
            "dir": self.dir.display().to_string(),
            "rounds": self.rounds,
            "p50_us": self.latency.p50,
            "p99_us": self.latency.p99,
            "p999_us": self.latency.p999,
            "max_us": self.latency.max,
        })
    }
}

/// The scratch file of one probe; removed when dropped.
struct Scratch {
    path: PathBuf,
    file: File,
    len: u64,
    block: Vec<u8>,
}

impl Scratch {
    fn create(dir: &Path) -> anyhow::Result<Scratch> {
        let path = dir.join(format!(
            ".pigeon-fsync-probe-{}-{}",
            std::process::id(),
            scratch_number()
        ));
        let file = File::options()
            .create_new(true)
            .write(true)
            .open(&path)
            .with_context(|| {
                format!(
                    "cannot create the fsync probe's scratch file {} (the directory must exist and be writable)",
                    path.display()
                )
            })?;
        Ok(Scratch {
            path,
            file,
            len: 0,
            block: vec![0x5a; PROBE_BYTES],
        })
    }

    /// One timed round: append, `fdatasync`.
    fn round(&mut self) -> anyhow::Result<Duration> {
        if self.len + PROBE_BYTES as u64 > MAX_FILE_BYTES {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
            // Appends continue at the (new) end: the file is not in append
            // mode, so move back to its start.
            std::io::Seek::rewind(&mut self.file)?;
        }
        let started = Instant::now();
        self.file
            .write_all(&self.block)
            .with_context(|| format!("fsync probe: writing {}", self.path.display()))?;
        self.file
            .sync_data()
            .with_context(|| format!("fsync probe: fdatasync of {}", self.path.display()))?;
        let took = started.elapsed();
        self.len += PROBE_BYTES as u64;
        Ok(took)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Distinguishes the probes of one process.
fn scratch_number() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `rounds` rounds one after another in `dir`.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let floor = pigeon_cli::bench::floor::probe_back_to_back(dir.path(), 5).unwrap();
/// assert_eq!(floor.rounds, 5);
/// ```
pub fn probe_back_to_back(dir: &Path, rounds: usize) -> anyhow::Result<Floor> {
    let mut scratch = Scratch::create(dir)?;
    let mut latency = Latency::new();
    for _ in 0..rounds {
        latency.record_us(micros(scratch.round()?));
    }
    Ok(Floor::of(dir, &latency))
}

fn micros(took: Duration) -> u64 {
    u64::try_from(took.as_micros()).unwrap_or(u64::MAX)
}

/// A probe running on its own thread alongside a run.
#[derive(Debug)]
pub struct FsyncProbe {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Latency>>,
}

impl FsyncProbe {
    /// Creates the scratch file (failing at once if it cannot) and starts
    /// the rounds.
    pub fn start(settings: &ProbeSettings) -> anyhow::Result<FsyncProbe> {
        let mut scratch = Scratch::create(&settings.dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let every = settings.every;
        let thread = std::thread::Builder::new()
            .name("fsync-probe".into())
            .spawn(move || {
                // At least one round, however short the run.
                let mut latency = Latency::new();
                loop {
                    latency.record_us(micros(scratch.round()?));
                    if stopped.load(Ordering::Relaxed) {
                        return Ok(latency);
                    }
                    std::thread::sleep(every);
                }
            })
            .context("cannot start the fsync probe's thread")?;
        Ok(FsyncProbe {
            dir: settings.dir.clone(),
            stop,
            thread,
        })
    }

    /// Stops after the round under way (at least one is made) and reports
    /// every round.
    pub fn finish(self) -> anyhow::Result<Floor> {
        self.stop.store(true, Ordering::Relaxed);
        let latency = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the fsync probe's thread panicked"))??;
        Ok(Floor::of(&self.dir, &latency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).expect("read_dir").count()
    }

    #[test]
    fn a_probe_alongside_a_run_times_rounds_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = ProbeSettings {
            dir: dir.path().to_path_buf(),
            every: Duration::from_millis(1),
        };
        let probe = FsyncProbe::start(&settings).expect("start");
        assert_eq!(entries(dir.path()), 1, "the scratch file");
        let deadline = Instant::now() + Duration::from_secs(30);
        // At least a few rounds: wait for the file to grow, with a deadline.
        while std::fs::read_dir(dir.path())
            .expect("read_dir")
            .filter_map(Result::ok)
            .all(|e| e.metadata().map_or(0, |m| m.len()) < 3 * PROBE_BYTES as u64)
        {
            assert!(Instant::now() < deadline, "the probe made no rounds");
            std::thread::sleep(Duration::from_millis(5));
        }
        let floor = probe.finish().expect("finish");
        assert!(floor.rounds >= 3, "{floor:?}");
        assert!(floor.latency.p50 <= floor.latency.p99);
        assert!(floor.latency.p99 <= floor.latency.max);
        assert_eq!(entries(dir.path()), 0, "the scratch file is removed");
        let json = floor.to_json();
        assert_eq!(json["rounds"], floor.rounds);
        assert!(json["p999_us"].is_u64());
    }

    #[test]
    fn back_to_back_rounds_wrap_the_file_below_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut scratch = Scratch::create(dir.path()).expect("create");
        scratch.len = MAX_FILE_BYTES - 1;
        scratch.round().expect("round");
        assert_eq!(scratch.len, PROBE_BYTES as u64);
        let len = std::fs::metadata(&scratch.path).expect("metadata").len();
        assert_eq!(len, PROBE_BYTES as u64, "cut back to zero, then appended");
        drop(scratch);
        assert_eq!(probe_back_to_back(dir.path(), 3).expect("probe").rounds, 3);
        assert_eq!(entries(dir.path()), 0);
    }

    #[test]
    fn a_missing_directory_is_refused_with_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nowhere");
        let err = FsyncProbe::start(&ProbeSettings::in_dir(&missing)).expect_err("refused");
        assert!(format!("{err:#}").contains("nowhere"), "{err:#}");
    }
}
