//! What the run was measured on: cores, CPU model, memory, the
//! filesystem the servers' data dirs live on, and that filesystem's fsync
//! latency, measured here (every system in the comparison pays it on each
//! durable write, so it bounds what `fsync=always` can do).
//!
//! The fsync probe is `pigeon_cli::bench::floor` (the one `pigeon bench`
//! runs alongside each run): here [`PROBE_ROUNDS`] rounds of a 4 KiB
//! append + `fdatasync`, back to back, before the first run.

use std::path::Path;

use pigeon_cli::bench::floor::{Floor, probe_back_to_back};

/// Rounds of the fsync probe.
pub const PROBE_ROUNDS: usize = 1_000;

/// The machine and its disk.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Cores this process may run on.
    pub cores: usize,
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu: String,
    /// `MemTotal` of `/proc/meminfo`, in GiB.
    pub memory_gib: f64,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// Filesystem type and device of the data dir (from `/proc/mounts`).
    pub filesystem: String,
    /// The fsync probe's result.
    pub fsync: Floor,
}

impl Machine {
    /// Describes this machine, probing fsync in `data_dir`.
    pub fn describe(data_dir: &Path) -> anyhow::Result<Machine> {
        Ok(Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: cpu_model().unwrap_or_else(|| "unknown".into()),
            memory_gib: memory_gib().unwrap_or(0.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            filesystem: filesystem_of(data_dir).unwrap_or_else(|| "unknown".into()),
            fsync: probe_back_to_back(data_dir, PROBE_ROUNDS)?,
        })
    }
}

/// The first `model name` of `/proc/cpuinfo`.
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
}

/// `MemTotal` in GiB.
fn memory_gib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = text
        .lines()
        .find(|line| line.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / (1024.0 * 1024.0))
}

/// `type (device)` of the longest mount point containing `path`.
fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{kind} ({device})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
}
