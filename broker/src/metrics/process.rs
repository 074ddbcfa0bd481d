//! The broker process's own figures under Prometheus' standard names,
//! read from `/proc/self` at each scrape (Linux; elsewhere, and for any
//! file that cannot be read, the family is left out rather than guessed).
//!
//! | metric | type | source |
//! | --- | --- | --- |
//! | `process_cpu_seconds_total` | counter | `/proc/self/stat` utime + stime, in clock ticks |
//! | `process_resident_memory_bytes` | gauge | `/proc/self/status` `VmRSS` |
//! | `process_threads` | gauge | `/proc/self/status` `Threads` |
//! | `process_open_fds` | gauge | entries of `/proc/self/fd` |
//! | `process_max_fds` | gauge | `/proc/self/limits` "Max open files" (soft limit) |
//! | `process_start_time_seconds` | gauge | `/proc/stat` `btime` + `/proc/self/stat` starttime |
//!
//! Each file is parsed without trusting it: a line or field that is
//! missing or not a number drops that one metric.

use super::text::{self, Kind};

/// The figures read, each `None` when it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    /// CPU time, user and system, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    /// Reads this process's figures now.
    pub fn read() -> ProcessFigures {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let ticks = clock_ticks_per_second();
        let stat = read("/proc/self/stat");
        let stat = stat.as_deref().and_then(stat_fields);
        let status = read("/proc/self/status");
        let status_field = |name: &str| status.as_deref().and_then(|s| status_kib(s, name));
        let boot = read("/proc/stat").and_then(|s| boot_time(&s));
        ProcessFigures {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / ticks),
            resident_bytes: status_field("VmRSS:").map(|kib| kib * 1024),
            threads: status_field("Threads:"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: read("/proc/self/limits").and_then(|s| max_open_files(&s)),
            start_time_seconds: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / ticks),
        }
    }

    /// Appends a family for each figure that was read.
    pub fn render(&self, out: &mut String) {
        let families: [(&str, Kind, &str, Option<f64>); 6] = [
            (
                "process_cpu_seconds_total",
                Kind::Counter,
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                Kind::Gauge,
                "Resident memory size in bytes.",
                self.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_threads",
                Kind::Gauge,
                "Number of OS threads in the process.",
                self.threads.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                Kind::Gauge,
                "Number of open file descriptors.",
                self.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                Kind::Gauge,
                "Maximum number of open file descriptors (the soft limit).",
                self.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
        ];
        for (name, kind, help, value) in families {
            if let Some(value) = value {
                text::family(out, name, kind, help);
                text::sample(out, name, &[], value);
            }
        }
    }
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// Fields 14 (utime), 15 (stime) and 22 (starttime) of a `stat` line. The
/// command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted after its last `)`.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // After the name: field 3 (state) is the first.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// The number of a `Name:  value [kB]` line of `/proc/self/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn boot_time(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

/// The soft limit of the "Max open files" line of `/proc/self/limits`
/// (`unlimited` reads as `u64::MAX`).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`; 100 if unknown).
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_the_command_name_whatever_it_holds() {
        let line = "4242 (pigeon (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(
            stat_fields(line),
            Some(StatFields {
                utime: 250,
                stime: 75,
                starttime: 12345
            })
        );
        assert_eq!(stat_fields("4242 (cut short) S 1"), None);
        assert_eq!(stat_fields("no parenthesis"), None);
    }

    #[test]
    fn status_limits_and_boot_time_lines() {
        let status = "Name:\tpigeon-broker\nThreads:\t9\nVmRSS:\t   20480 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(20480));
        assert_eq!(status_kib(status, "Threads:"), Some(9));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), Some(u64::MAX));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let figures = ProcessFigures::read();
        assert!(figures.cpu_seconds.is_some());
        assert!(figures.resident_bytes.is_some_and(|b| b > 0));
        assert!(figures.threads.is_some_and(|t| t >= 1));
        assert!(figures.open_fds.is_some_and(|n| n >= 3));
        assert!(
            figures
                .max_fds
                .is_some_and(|n| n >= figures.open_fds.unwrap_or(0))
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let started = figures.start_time_seconds.unwrap_or(0.0);
        assert!(
            started > now - 3600.0 && started <= now + 1.0,
            "{started} vs {now}"
        );
        let mut out = String::new();
        figures.render(&mut out);
        assert!(out.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(out.contains("\nprocess_open_fds "));
    }
}
