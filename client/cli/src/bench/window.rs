//! [`Window`]: what the harness observes around a run's timed phase
//! besides the run itself — the disk's fsync floor ([`super::floor`], on
//! its own thread for the whole phase), the system's stage histograms
//! ([`super::stages`], read at both ends and subtracted), the CPU time of
//! the server process (when its pid is known) and the machine's load
//! average.
//!
//! Invariant: the window opens right before the timed phase starts (after
//! consume's untimed pre-load) and closes right after it ends, so all of
//! it covers the same stretch of time as the figures it is printed next
//! to. A probe that cannot start fails the run before anything is timed;
//! a target whose stages cannot be read fails the run too (a scrape
//! address was given, so its figures were asked for). CPU time and load
//! come from `/proc` and are left out where it cannot be read.

use std::time::Duration;

use super::floor::{Floor, FsyncProbe};
use super::stages::{StageCounts, StageFigures};
use super::target::Target;
use super::workload::Workload;

/// Clock ticks per second of `/proc/<pid>/stat` (Linux's `USER_HZ`, 100
/// on every architecture the kernel exposes to user space).
const TICKS_PER_SECOND: u64 = 100;

/// Open while the timed phase runs.
#[derive(Debug)]
pub struct Window {
    probe: Option<FsyncProbe>,
    stages: Option<StageCounts>,
    server_pid: Option<u32>,
    cpu: Option<Duration>,
    load: Option<f64>,
}

/// What the window saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The disk's floor during the phase.
    pub floor: Option<Floor>,
    /// The system's stages during the phase.
    pub stages: Option<Vec<StageFigures>>,
    /// CPU time (user + system, all threads) the server process used
    /// during the phase.
    pub server_cpu: Option<Duration>,
    /// The 1-minute load average when the phase started and when it ended.
    pub load: Option<(f64, f64)>,
}

impl Window {
    /// Starts the probe (if the workload asks for one) and reads the
    /// target's stages, the server's CPU time and the load.
    pub async fn open<T: Target>(target: &T, w: &Workload) -> anyhow::Result<Window> {
        let probe = w.fsync_probe.as_ref().map(FsyncProbe::start).transpose()?;
        let stages = target.stage_counts().await?;
        Ok(Window {
            probe,
            stages,
            server_pid: w.server_pid,
            cpu: w.server_pid.and_then(cpu_time),
            load: load_average(),
        })
    }

    /// Reads it all again and stops the probe.
    pub async fn close<T: Target>(self, target: &T) -> anyhow::Result<Seen> {
        let server_cpu = match (self.cpu, self.server_pid.and_then(cpu_time)) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let load = self.load.zip(load_average());
        let stages = match self.stages {
            Some(before) => target
                .stage_counts()
                .await?
                .map(|after| after.since(&before).figures()),
            None => None,
        };
        let floor = self.probe.map(FsyncProbe::finish).transpose()?;
        Ok(Seen {
            floor,
            stages,
            server_cpu,
            load,
        })
    }
}

/// CPU time process `pid` has used so far, all threads, user and system,
/// from `/proc/<pid>/stat` (10 ms resolution); `None` where it cannot be
/// read.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_of_stat(&stat)
}

/// `utime + stime` of a `/proc/<pid>/stat` line. The command name is in
/// parentheses and may hold spaces and parentheses: fields are counted
/// from the last `)` (state is field 3, utime 14, stime 15).
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_user_plus_system_after_the_command_name() {
        let stat = "4242 (pigeon (x) y) S 1 2 3 4 5 6 7 8 9 10 250 130 0 0 20 0 9 0";
        assert_eq!(cpu_of_stat(stat), Some(Duration::from_millis(3_800)));
        assert_eq!(cpu_of_stat("4242 (short) S 1"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_the_machine_a_load() {
        let spent = cpu_time(std::process::id());
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(spent.is_some());
            assert!(load_average().is_some_and(|l| l >= 0.0));
        }
    }
}
