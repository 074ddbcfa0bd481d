//! The markdown report of a side-by-side run: the machine, what each
//! system ran with, a throughput table with Pigeon ÷ peer ratios, and the
//! W3 latency table with the same ratios; then the same footing: per run,
//! the server's CPU time per message, the load average and the disk's
//! fsync floor measured alongside, W3 against that floor, and Pigeon's
//! own stage breakdown.
//!
//! Ratios are always Pigeon's figure divided by the peer's: above 1 means
//! Pigeon is faster for throughput, below 1 means Pigeon is faster for
//! latency. A missing figure (system skipped or failed) shows as `—`, and
//! the reason is listed under the tables.

use std::fmt::Write as _;

use pigeon_cli::bench::Report;

use crate::Case;
use crate::machine::Machine;
use crate::servers::Installed;

/// One (workload, system) pair and what came of it.
pub struct Run {
    /// Which workload.
    pub case: Case,
    /// `pigeon`, `redis` or `nats`.
    pub target: String,
    /// The figures, or why there are none.
    pub outcome: Outcome,
}

/// What a run produced.
pub enum Outcome {
    /// The harness's figures (boxed: far larger than the other variants).
    Done(Box<Report>),
    /// The system was not available.
    Skipped(String),
    /// The run failed.
    Failed(String),
}

impl From<anyhow::Result<Report>> for Outcome {
    fn from(result: anyhow::Result<Report>) -> Outcome {
        match result {
            Ok(report) => Outcome::Done(Box::new(report)),
            Err(e) => Outcome::Failed(format!("failed: {e:#}")),
        }
    }
}

/// The figures of `target` in `case`, if it ran.
pub fn figures<'a>(runs: &'a [Run], case: Case, target: &str) -> Option<&'a Report> {
    runs.iter()
        .find(|r| r.case == case && r.target == target)
        .and_then(|r| match &r.outcome {
            Outcome::Done(report) => Some(report.as_ref()),
            _ => None,
        })
}

/// The whole report.
pub fn markdown(
    machine: &Machine,
    peers: &[Installed],
    targets: &[String],
    settings: &str,
    runs: &[Run],
) -> String {
    let mut out = String::new();
    machine_table(&mut out, machine);
    systems_table(&mut out, peers, targets);
    let _ = writeln!(out, "{settings}\n");
    throughput_table(&mut out, targets, runs);
    latency_table(&mut out, targets, runs);
    footing_table(&mut out, targets, runs);
    floor_table(&mut out, targets, runs);
    stage_table(&mut out, runs);
    for run in runs {
        if let Outcome::Skipped(why) | Outcome::Failed(why) = &run.outcome {
            let _ = writeln!(out, "- {} {}: {why}", run.case.name(), run.target);
        }
    }
    out
}

fn machine_table(out: &mut String, m: &Machine) {
    let _ = writeln!(out, "| machine | |\n| --- | --- |");
    let _ = writeln!(out, "| cores | {} ({}) |", m.cores, m.cpu);
    let _ = writeln!(out, "| memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(out, "| kernel | Linux {} |", m.kernel);
    let _ = writeln!(out, "| data dirs on | {} |", m.filesystem);
    let f = m.fsync.latency;
    let _ = writeln!(
        out,
        "| fsync latency before the runs (4 KiB append + fdatasync, {} rounds back to back) | p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs |\n",
        m.fsync.rounds, f.p50, f.p99, f.p999, f.max
    );
}

fn systems_table(out: &mut String, peers: &[Installed], targets: &[String]) {
    let _ = writeln!(
        out,
        "| system | version | durability |\n| --- | --- | --- |"
    );
    if targets.iter().any(|t| t == "pigeon") {
        let _ = writeln!(
            out,
            "| pigeon | {} | fsync=always (group commit: acked after fdatasync) |",
            env!("CARGO_PKG_VERSION")
        );
    }
    for peer in peers {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            peer.peer.binary_name(),
            peer.version,
            peer.durability()
        );
    }
    out.push('\n');
}

/// msgs/s per workload and system, then Pigeon ÷ each peer.
fn throughput_table(out: &mut String, targets: &[String], runs: &[Run]) {
    let peers: Vec<&String> = targets.iter().filter(|t| *t != "pigeon").collect();
    let _ = write!(out, "| workload |");
    for t in targets {
        let _ = write!(out, " {t} msgs/s |");
    }
    for p in &peers {
        let _ = write!(out, " pigeon ÷ {p} |");
    }
    let _ = write!(out, "\n| --- |");
    for _ in 0..targets.len() + peers.len() {
        let _ = write!(out, " ---: |");
    }
    out.push('\n');
    for case in Case::ALL {
        if !runs.iter().any(|r| r.case == case) {
            continue;
        }
        let _ = write!(out, "| {} {} |", case.name(), case.title());
        for t in targets {
            let cell = figures(runs, case, t).map_or("—".into(), |r| thousands(r.msgs_per_sec));
            let _ = write!(out, " {cell} |");
        }
        let pigeon = figures(runs, case, "pigeon").map(|r| r.msgs_per_sec);
        for p in &peers {
            let peer = figures(runs, case, p).map(|r| r.msgs_per_sec);
            let _ = write!(out, " {} |", ratio(pigeon, peer));
        }
        out.push('\n');
    }
    out.push('\n');
}

/// W3's latency percentiles per system, then Pigeon ÷ each peer at p99.
fn latency_table(out: &mut String, targets: &[String], runs: &[Run]) {
    if !runs.iter().any(|r| r.case == Case::W3) {
        return;
    }
    let _ = writeln!(
        out,
        "W3 latency in µs (produce→ack: until the system acknowledged the \
         message as durable; publish→deliver: until a consumer received it; both from \
         the message's scheduled send time; harness lag: how late the load generator \
         itself sent, already included):\n"
    );
    let _ = writeln!(
        out,
        "| system | produce→ack p50 | p99 | p99.9 | max | publish→deliver p50 | p99 | p99.9 | max | msgs/s | harness lag p99 |"
    );
    let _ = writeln!(out, "| --- |{}", " ---: |".repeat(10));
    for t in targets {
        let Some(r) = figures(runs, Case::W3, t) else {
            let _ = writeln!(out, "| {t} |{}", " — |".repeat(10));
            continue;
        };
        let opt = |v: Option<u64>| v.map_or("—".into(), |v| v.to_string());
        let _ = writeln!(
            out,
            "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            opt(r.ack_p50_us),
            opt(r.ack_p99_us),
            opt(r.ack_p999_us),
            opt(r.ack_max_us),
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            thousands(r.msgs_per_sec),
            opt(r.schedule_lag_p99_us)
        );
    }
    let pigeon = figures(runs, Case::W3, "pigeon");
    for p in targets.iter().filter(|t| *t != "pigeon") {
        let peer = figures(runs, Case::W3, p);
        let ack = ratio(
            pigeon.and_then(|r| r.ack_p99_us).map(|v| v as f64),
            peer.and_then(|r| r.ack_p99_us).map(|v| v as f64),
        );
        let deliver = ratio(
            pigeon.map(|r| r.p99_us as f64),
            peer.map(|r| r.p99_us as f64),
        );
        let _ = writeln!(
            out,
            "\npigeon ÷ {p} at p99 (below 1: Pigeon is faster): produce→ack {ack}, publish→deliver {deliver}"
        );
    }
    out.push('\n');
}

/// Per run: CPU time of the server per message, load, and the fsync floor
/// measured alongside.
fn footing_table(out: &mut String, targets: &[String], runs: &[Run]) {
    let _ = writeln!(
        out,
        "Same footing, per run (server CPU: user + system of the server process over the timed \
         phase, from /proc/<pid>/stat; load: 1-minute load average at the start and the end; \
         fsync: 4 KiB append + fdatasync every 10 ms in the data dirs' filesystem, alongside \
         the timed phase):\n"
    );
    let _ = writeln!(
        out,
        "| workload | system | msgs/s | server CPU s | CPU µs per message | load start → end | fsync p50 | p99 | p99.9 | fsync rounds |"
    );
    let _ = writeln!(out, "| --- | --- |{}", " ---: |".repeat(8));
    for case in Case::ALL {
        for t in targets {
            let Some(r) = figures(runs, case, t) else {
                continue;
            };
            let opt = |v: Option<String>| v.unwrap_or_else(|| "—".into());
            let floor = r.fsync_floor.as_ref();
            let _ = writeln!(
                out,
                "| {} | {t} | {} | {} | {} | {} | {} | {} | {} | {} |",
                case.name(),
                thousands(r.msgs_per_sec),
                opt(r.server_cpu_seconds.map(|s| format!("{s:.2}"))),
                opt(r.server_cpu_us_per_message().map(|u| format!("{u:.2}"))),
                opt(r.load_average.map(|(a, b)| format!("{a:.2} → {b:.2}"))),
                opt(floor.map(|f| f.latency.p50.to_string())),
                opt(floor.map(|f| f.latency.p99.to_string())),
                opt(floor.map(|f| f.latency.p999.to_string())),
                opt(floor.map(|f| f.rounds.to_string())),
            );
        }
    }
    out.push('\n');
}

/// W3 against the disk's floor of the same run: the two targets.
fn floor_table(out: &mut String, targets: &[String], runs: &[Run]) {
    if !runs.iter().any(|r| r.case == Case::W3) {
        return;
    }
    let _ = writeln!(
        out,
        "W3 against the fsync floor of the same run, µs (targets: produce→ack p99 ≤ fsync p99 + 500; \
         publish→deliver p99 ≤ produce→ack p99 + 500):\n"
    );
    let _ = writeln!(
        out,
        "| system | fsync p50 / p99 / p99.9 | produce→ack p50 / p99 / p99.9 | publish→deliver p50 / p99 / p99.9 | ack p99 − fsync p99 | deliver p99 − ack p99 |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for t in targets {
        let Some(r) = figures(runs, Case::W3, t) else {
            continue;
        };
        let floor = r.fsync_floor.as_ref().map(|f| f.latency);
        let ack = r.ack_p50_us.zip(r.ack_p99_us).zip(r.ack_p999_us);
        let triple = |a: u64, b: u64, c: u64| format!("{a} / {b} / {c}");
        let _ = writeln!(
            out,
            "| {t} | {} | {} | {} | {} | {} |",
            floor.map_or("—".into(), |f| triple(f.p50, f.p99, f.p999)),
            ack.map_or("—".into(), |((a, b), c)| triple(a, b, c)),
            triple(r.p50_us, r.p99_us, r.p999_us),
            signed(r.ack_p99_us.zip(floor).map(|(a, f)| (a, f.p99))),
            signed(r.ack_p99_us.map(|a| (r.p99_us, a))),
        );
    }
    out.push('\n');
}

/// Pigeon's own stage breakdown (from its `/metrics`), per workload.
fn stage_table(out: &mut String, runs: &[Run]) {
    let with_stages: Vec<(&Run, &Report)> = runs
        .iter()
        .filter_map(|run| match &run.outcome {
            Outcome::Done(report) if report.stages.is_some() => Some((run, report.as_ref())),
            _ => None,
        })
        .collect();
    if with_stages.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "Where Pigeon's appends spent their time (its `pigeon_append_stage_seconds`, read before \
         and after the timed phase; one observation per appended batch; percentiles estimated \
         from the buckets, the mean exact), µs:\n"
    );
    let _ = writeln!(
        out,
        "| workload | stage | appends | mean | p50 | p99 | p99.9 |\n| --- | --- |{}",
        " ---: |".repeat(5)
    );
    for (run, report) in with_stages {
        for s in report.stages.iter().flatten() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {} |",
                run.case.name(),
                s.stage,
                thousands(s.count as f64),
                s.mean_us,
                s.p50_us,
                s.p99_us,
                s.p999_us
            );
        }
    }
    out.push('\n');
}

/// `a − b` with its sign, or `—`.
fn signed(pair: Option<(u64, u64)>) -> String {
    match pair {
        Some((a, b)) if a >= b => format!("+{}", a - b),
        Some((a, b)) => format!("−{}", b - a),
        None => "—".into(),
    }
}

/// `a ÷ b` to two decimals, or `—`.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

/// A rate rounded to a whole number with thousands separators.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
