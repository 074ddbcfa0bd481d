//! Side by side: the same workloads against Pigeon (`fsync=always`), Redis
//! Streams (AOF, `appendfsync always`) and NATS JetStream (file storage),
//! each server started here on loopback with a fresh data dir, each driven
//! by the one harness of `pigeon_cli::bench` through its `Target`
//! (Pigeon's own, the peers' in `benches/peers/`), so the load generator is
//! never what differs.
//!
//! ```sh
//! cargo bench --bench side_by_side                                 # full run
//! PIGEON_BENCH_SCALE=0.1 cargo bench --bench side_by_side          # a tenth of every count and duration
//! PIGEON_BENCH_ONLY=W1,W3 cargo bench --bench side_by_side         # some workloads
//! PIGEON_BENCH_TARGETS=pigeon,redis cargo bench --bench side_by_side
//! PIGEON_BENCH_REDIS_CONNECTIONS=4 cargo bench --bench side_by_side   # Redis publishers on 4 connections
//! PIGEON_BENCH_IN_FLIGHT=1 cargo bench --bench side_by_side       # Pigeon with one batch in flight per partition
//! ```
//!
//! `PIGEON_BENCH_REDIS_SERVER` and `PIGEON_BENCH_NATS_SERVER` name the
//! server binaries when they are not on `PATH`.
//!
//! | module | job |
//! | --- | --- |
//! | `main` (this file) | the knobs, the workloads W1–W4, the order of runs |
//! | [`servers`] | finding, starting and killing `redis-server` and `nats-server` |
//! | [`machine`] | cores, CPU, memory, filesystem and the fsync latency probe |
//! | [`report`] | the markdown tables (figures and Pigeon ÷ peer ratios) |
//! | [`chart`] | the SVG chart of throughput and W3 latency percentiles |
//! | `peers` | the Redis and NATS drivers (shared with nothing else) |
//!
//! Invariants: every (workload, system) pair runs on a freshly started
//! server with an empty data dir; runs of one workload follow each other
//! (Pigeon, Redis, NATS) so that they see the same machine; a server that
//! is missing is reported as skipped, never silently dropped; every server
//! process is killed when its guard drops, also on panic.
//!
//! Same footing: before the runs the disk's fsync latency is probed back
//! to back (the machine table); during every run the harness probes it
//! again alongside the timed phase (one 4 KiB append + `fdatasync` every
//! 10 ms, `pigeon_cli::bench::floor`), and records the 1-minute load
//! average at both ends and the server process's CPU time (user + system
//! from `/proc/<pid>/stat`) over the phase, so that each figure can be
//! read against the disk and the CPU it had.
//!
//! Output: the tables on stdout and in `<target>/side-by-side/report.md`,
//! the chart in `docs/benchmarks-side-by-side.svg`; progress on stderr.

#[path = "../peers/mod.rs"]
mod peers;

mod chart;
mod machine;
mod report;
mod servers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use pigeon_cli::bench::floor::ProbeSettings;
use pigeon_cli::bench::{self, PigeonTarget, Target, Workload, WorkloadKind};
use pigeon_suite::Broker;

use machine::Machine;
use peers::nats::NatsTarget;
use peers::redis::RedisTarget;
use report::{Outcome, Run};
use servers::{Installed, Peer};

/// How long a peer's client may wait for its server to be ready.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One of the issue's workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Produce 100 B values, one batching producer.
    W1,
    /// Produce 1 KiB values, one batching producer.
    W2,
    /// A fixed 10,000 msgs/s of 1 KiB for 30 s through one producer and one
    /// consumer: produce→ack and publish→deliver latency.
    W3,
    /// Consume with acks 1,000,000 pre-loaded 100 B values.
    W4,
}

impl Case {
    /// All of them, in order.
    pub const ALL: [Case; 4] = [Case::W1, Case::W2, Case::W3, Case::W4];

    /// `W1`…`W4`.
    pub fn name(self) -> &'static str {
        match self {
            Case::W1 => "W1",
            Case::W2 => "W2",
            Case::W3 => "W3",
            Case::W4 => "W4",
        }
    }

    /// What it does, in a few words, for the tables.
    pub fn title(self) -> &'static str {
        match self {
            Case::W1 => "produce 100 B",
            Case::W2 => "produce 1 KiB",
            Case::W3 => "10,000 msgs/s of 1 KiB, latency",
            Case::W4 => "consume + ack 100 B",
        }
    }

    /// A label short enough for the chart's axis.
    pub fn short(self) -> &'static str {
        match self {
            Case::W1 => "W1 produce 100 B",
            Case::W2 => "W2 produce 1 KiB",
            Case::W3 => "W3 e2e 10k/s",
            Case::W4 => "W4 consume 100 B",
        }
    }

    /// The harness workload (`Workload::new`'s defaults: 1 MiB batches with
    /// 5 ms linger, none for e2e; receives of up to 1,000; one producer,
    /// one consumer, one partition), with counts and durations multiplied
    /// by `scale`.
    pub fn workload(self, scale: f64) -> Workload {
        let count = |n: f64| ((n * scale).round() as u64).max(1_000);
        let mut workload = match self {
            Case::W1 | Case::W2 => Workload::new(WorkloadKind::Produce),
            Case::W3 => Workload::new(WorkloadKind::E2e),
            Case::W4 => Workload::new(WorkloadKind::Consume),
        };
        match self {
            Case::W1 | Case::W4 => {
                workload.messages = count(1e6);
                workload.value_size = 100;
            }
            Case::W2 => {
                workload.messages = count(1e6);
                workload.value_size = 1024;
            }
            Case::W3 => {
                workload.rate = Some(10_000);
                workload.duration = Some(Duration::from_secs_f64((30.0 * scale).max(2.0)));
                workload.value_size = 1024;
                // A moderate fixed rate: each message goes out at once.
                workload.publish.linger = Duration::ZERO;
            }
        }
        workload.producers = 1;
        workload.consumers = 1;
        workload.partitions = 1;
        workload.progress = false;
        workload
    }
}

/// The run's knobs, from the environment.
struct Knobs {
    /// `PIGEON_BENCH_SCALE` (default 1): multiplies counts and durations.
    scale: f64,
    /// `PIGEON_BENCH_ONLY` (default all): which workloads.
    cases: Vec<Case>,
    /// `PIGEON_BENCH_TARGETS` (default `pigeon,redis,nats`): which systems.
    targets: Vec<String>,
    /// `PIGEON_BENCH_REDIS_CONNECTIONS` (default 1): connections each
    /// Redis publisher spreads its pipelines over.
    redis_connections: usize,
    /// `PIGEON_BENCH_IN_FLIGHT` (default 5, 1–5): batches of a partition
    /// the Pigeon producer keeps in flight (to measure what pipelining
    /// brings).
    in_flight: Option<usize>,
}

impl Knobs {
    fn from_env() -> anyhow::Result<Knobs> {
        let scale = match std::env::var("PIGEON_BENCH_SCALE") {
            Ok(text) => text
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .with_context(|| format!("PIGEON_BENCH_SCALE={text} is not a positive number"))?,
            Err(_) => 1.0,
        };
        let list = |name: &str, default: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_string())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        let mut cases = Vec::new();
        for name in list("PIGEON_BENCH_ONLY", "W1,W2,W3,W4") {
            let case = Case::ALL
                .into_iter()
                .find(|c| c.name().eq_ignore_ascii_case(&name))
                .with_context(|| format!("PIGEON_BENCH_ONLY: no workload {name} (W1–W4)"))?;
            cases.push(case);
        }
        let targets = list("PIGEON_BENCH_TARGETS", "pigeon,redis,nats");
        if let Some(bad) = targets
            .iter()
            .find(|t| !["pigeon", "redis", "nats"].contains(&t.as_str()))
        {
            anyhow::bail!("PIGEON_BENCH_TARGETS: no system {bad} (pigeon, redis, nats)");
        }
        let redis_connections = match std::env::var("PIGEON_BENCH_REDIS_CONNECTIONS") {
            Ok(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| {
                    format!("PIGEON_BENCH_REDIS_CONNECTIONS={text} is not a positive number")
                })?,
            Err(_) => 1,
        };
        let in_flight = match std::env::var("PIGEON_BENCH_IN_FLIGHT") {
            Ok(text) => Some(
                text.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=pigeon_client::client::MAX_IN_FLIGHT_BATCHES).contains(n))
                    .with_context(|| format!("PIGEON_BENCH_IN_FLIGHT={text} is not 1 to 5"))?,
            ),
            Err(_) => None,
        };
        Ok(Knobs {
            scale,
            cases,
            targets,
            redis_connections,
            in_flight,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let knobs = Knobs::from_env()?;
    let out_dir = target_dir().join("side-by-side");
    std::fs::create_dir_all(&out_dir)?;
    let scratch = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&out_dir)?;
    eprintln!(
        "measuring the machine and the fsync latency of {}",
        scratch.path().display()
    );
    let machine = Machine::describe(scratch.path())?;
    let peers = find_peers(&knobs.targets);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for case in &knobs.cases {
        let mut workload = case.workload(knobs.scale);
        if let Some(in_flight) = knobs.in_flight {
            workload.publish.in_flight = in_flight;
        }
        for target in &knobs.targets {
            let outcome = match target.as_str() {
                "pigeon" => Outcome::from(run_pigeon(&runtime, scratch.path(), *case, &workload)),
                name => match peers
                    .iter()
                    .find(|(p, _)| p.binary_name().starts_with(name))
                {
                    Some((_, Ok(installed))) => Outcome::from(run_peer(
                        &runtime,
                        scratch.path(),
                        installed,
                        knobs.redis_connections,
                        *case,
                        &workload,
                    )),
                    Some((_, Err(why))) => Outcome::Skipped(why.clone()),
                    None => continue,
                },
            };
            if let Outcome::Failed(why) | Outcome::Skipped(why) = &outcome {
                eprintln!("{} {target}: {why}", case.name());
            }
            runs.push(Run {
                case: *case,
                target: target.clone(),
                outcome,
            });
        }
    }
    let installed: Vec<Installed> = peers.into_iter().filter_map(|(_, p)| p.ok()).collect();
    let date = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    let settings = format!(
        "Measured {date}; scale {} (`PIGEON_BENCH_SCALE`); {} connection(s) per Redis \
         publisher (`PIGEON_BENCH_REDIS_CONNECTIONS`); {} Pigeon batch(es) in flight per \
         partition (`PIGEON_BENCH_IN_FLIGHT`).",
        knobs.scale,
        knobs.redis_connections,
        knobs
            .in_flight
            .unwrap_or(pigeon_client::client::MAX_IN_FLIGHT_BATCHES)
    );
    let text = report::markdown(&machine, &installed, &knobs.targets, &settings, &runs);
    println!("{text}");
    let report_path = out_dir.join("report.md");
    std::fs::write(&report_path, &text)?;
    let chart_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks-side-by-side.svg");
    let nats = match installed.iter().find(|i| i.peer == Peer::Nats) {
        Some(i) if i.sync_always => ", nats sync_interval always",
        Some(_) => ", nats without fsync (no sync_interval option)",
        None => "",
    };
    let footer = format!(
        "cargo bench --bench side_by_side, {date}, scale {}; {} cores, fsync p50 {} µs; \
         pigeon fsync=always, redis appendfsync always{nats}",
        knobs.scale, machine.cores, machine.fsync.latency.p50
    );
    chart::draw(&chart_path, &knobs.targets, &runs, &footer)?;
    eprintln!(
        "wrote {} and {}",
        report_path.display(),
        chart_path.display()
    );
    Ok(())
}

/// Each requested peer, found or with the reason it is skipped.
fn find_peers(targets: &[String]) -> Vec<(Peer, Result<Installed, String>)> {
    let mut found = Vec::new();
    for peer in [Peer::Redis, Peer::Nats] {
        if !targets
            .iter()
            .any(|t| peer.binary_name().starts_with(t.as_str()))
        {
            continue;
        }
        let installed = Installed::find(peer).map_err(|e| format!("skipped: {e:#}"));
        match &installed {
            Ok(i) => eprintln!("{}: {} — {}", peer.binary_name(), i.version, i.durability()),
            Err(why) => eprintln!("{}: {why}", peer.binary_name()),
        }
        found.push((peer, installed));
    }
    found
}

/// One workload against a fresh Pigeon broker with `fsync=always`.
fn run_pigeon(
    runtime: &tokio::runtime::Runtime,
    scratch: &Path,
    case: Case,
    workload: &Workload,
) -> anyhow::Result<bench::Report> {
    let dir = tempfile::Builder::new()
        .prefix("pigeon")
        .tempdir_in(scratch)?;
    let broker = Broker::start(&dir.path().join("data"), &["--fsync", "always"]);
    eprintln!("{} pigeon: running", case.name());
    let workload = footing(workload, scratch, broker.pid());
    let report = runtime.block_on(async {
        let target = PigeonTarget::connect(&broker.addr.to_string())
            .await?
            .with_metrics(broker.http.to_string());
        drive(&target, case, &workload).await
    });
    drop(broker);
    report
}

/// One workload against a fresh `peer` server.
fn run_peer(
    runtime: &tokio::runtime::Runtime,
    scratch: &Path,
    installed: &Installed,
    redis_connections: usize,
    case: Case,
    workload: &Workload,
) -> anyhow::Result<bench::Report> {
    let server = installed.start(scratch)?;
    let addr = server.addr.to_string();
    let workload = &footing(workload, scratch, server.pid());
    eprintln!("{} {}: running", case.name(), installed.peer.binary_name());
    let report = runtime.block_on(async {
        match installed.peer {
            Peer::Redis => {
                let target = RedisTarget::connect(&addr, redis_connections).await?;
                drive(&target, case, workload).await
            }
            Peer::Nats => {
                drive(
                    &NatsTarget::connect(&addr, CONNECT_TIMEOUT).await?,
                    case,
                    workload,
                )
                .await
            }
        }
    });
    if report.is_err() {
        let log = server.log_text();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!(
            "{} log (last lines):\n{}",
            installed.peer.binary_name(),
            tail.join("\n")
        );
    }
    report
}

/// `workload` on the same footing for every system: the fsync floor
/// probed in the scratch dir (the filesystem of every data dir) alongside
/// the timed phase, and the CPU time of the server process `pid` counted.
fn footing(workload: &Workload, scratch: &Path, pid: u32) -> Workload {
    let mut workload = workload.clone();
    workload.fsync_probe = Some(ProbeSettings::in_dir(scratch));
    workload.server_pid = Some(pid);
    workload
}

/// Runs `workload` through the harness on a topic named after the case.
async fn drive<T: Target>(
    target: &T,
    case: Case,
    workload: &Workload,
) -> anyhow::Result<bench::Report> {
    let topic = format!("side-by-side-{}", case.name().to_lowercase());
    let report = bench::run(target, &topic, workload).await?;
    eprintln!(
        "{} {}: {:.0} msgs/s, p50 {} µs, p99 {} µs",
        case.name(),
        target.name(),
        report.msgs_per_sec,
        report.p50_us,
        report.p99_us
    );
    Ok(report)
}

/// The cargo target dir this bench was built in (`…/target/release/deps/x`
/// → `…/target`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .find(|dir| {
            dir.file_name()
                .is_some_and(|n| n == "release" || n == "debug")
        })
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
