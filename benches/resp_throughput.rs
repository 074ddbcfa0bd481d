//! Redis Streams throughput three ways, side by side in one run: Pigeon
//! over its own protocol, Pigeon over RESP (its Redis listener), and
//! `redis-server` with the AOF fsynced on every write (`appendfsync
//! always`). Pigeon runs with `fsync=always`. Both RESP targets are
//! driven by the same Redis driver (`benches/peers/redis.rs`: pipelined
//! `XADD`, `XREADGROUP` + `XACK`), and every target by the one harness of
//! `pigeon_cli::bench`, so only the server differs.
//!
//! | workload | what |
//! | --- | --- |
//! | `xadd` | produce 100 B values, one publisher: Pigeon's batching producer, or `XADD key * v <value>` pipelined (up to 1 MiB of values per pipeline, 4 pipelines in flight) |
//! | `xreadgroup` | consume with per-message acks 100 B values loaded first: a Pigeon group consumer, or `XREADGROUP … COUNT 1000` + one `XACK` per batch |
//!
//! ```sh
//! cargo bench --bench resp_throughput                         # 1,000,000 messages per run
//! PIGEON_BENCH_SCALE=0.2 cargo bench --bench resp_throughput  # a fifth of that
//! PIGEON_BENCH_TARGETS=pigeon-resp,redis cargo bench --bench resp_throughput
//! PIGEON_BENCH_REDIS_CONNECTIONS=4 cargo bench --bench resp_throughput
//! ```
//!
//! Targets: `pigeon` (own protocol), `pigeon-resp`, `redis`. The table is
//! printed on stdout (markdown); progress on stderr. Every run starts a
//! fresh server with an empty data dir; a missing `redis-server` is
//! reported as skipped.

// Only the Redis driver of the peers, and the Redis lifecycle of the
// side-by-side bench's servers, are used here.
#[allow(dead_code)]
#[path = "peers/mod.rs"]
mod peers;

#[allow(dead_code)]
#[path = "side_by_side/servers.rs"]
mod servers;

use std::path::Path;

use anyhow::Context as _;
use pigeon_cli::bench::{self, PigeonTarget, Workload, WorkloadKind};
use pigeon_suite::Broker;

use peers::redis::RedisTarget;
use servers::{Installed, Peer};

/// The systems, in the order they run for each workload.
const TARGETS: [&str; 3] = ["pigeon", "pigeon-resp", "redis"];

/// One workload: its name and harness settings.
fn workload(kind: WorkloadKind, scale: f64) -> Workload {
    let mut workload = Workload::new(kind);
    workload.messages = ((1e6 * scale).round() as u64).max(1_000);
    workload.value_size = 100;
    workload.producers = 1;
    workload.consumers = 1;
    workload.partitions = 1;
    workload.progress = false;
    workload
}

struct Knobs {
    scale: f64,
    targets: Vec<String>,
    redis_connections: usize,
}

fn knobs() -> anyhow::Result<Knobs> {
    let number = |name: &str| -> anyhow::Result<Option<f64>> {
        match std::env::var(name) {
            Ok(text) => Ok(Some(
                text.parse::<f64>()
                    .ok()
                    .filter(|n| *n > 0.0)
                    .with_context(|| format!("{name}={text} is not a positive number"))?,
            )),
            Err(_) => Ok(None),
        }
    };
    let targets: Vec<String> = std::env::var("PIGEON_BENCH_TARGETS")
        .unwrap_or_else(|_| TARGETS.join(","))
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(bad) = targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        anyhow::bail!(
            "PIGEON_BENCH_TARGETS: no system {bad} ({})",
            TARGETS.join(", ")
        );
    }
    Ok(Knobs {
        scale: number("PIGEON_BENCH_SCALE")?.unwrap_or(1.0),
        targets,
        redis_connections: number("PIGEON_BENCH_REDIS_CONNECTIONS")?.map_or(1, |n| n as usize),
    })
}

fn main() -> anyhow::Result<()> {
    let knobs = knobs()?;
    let scratch = tempfile::Builder::new()
        .prefix("resp-throughput-")
        .tempdir()?;
    let redis = Installed::find(Peer::Redis).map_err(|e| format!("skipped: {e:#}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let workloads = [
        ("xadd", "XADD 100 B, pipelined", WorkloadKind::Produce),
        (
            "xreadgroup",
            "XREADGROUP + XACK 100 B",
            WorkloadKind::Consume,
        ),
    ];
    let mut rows = Vec::new();
    for (name, title, kind) in workloads {
        let workload = workload(kind, knobs.scale);
        let mut cells = Vec::new();
        for target in &knobs.targets {
            let run = RunOf {
                runtime: &runtime,
                scratch: scratch.path(),
                topic: format!("resp-{name}"),
                workload: &workload,
                redis_connections: knobs.redis_connections,
            };
            let outcome = match target.as_str() {
                "pigeon" => run.pigeon(false),
                "pigeon-resp" => run.pigeon(true),
                _ => match &redis {
                    Ok(installed) => run.redis(installed),
                    Err(why) => Err(anyhow::anyhow!("{why}")),
                },
            };
            let cell = match outcome {
                Ok(report) => {
                    eprintln!("{name} {target}: {:.0} msgs/s", report.msgs_per_sec);
                    Some(report.msgs_per_sec)
                }
                Err(e) => {
                    eprintln!("{name} {target}: {e:#}");
                    None
                }
            };
            cells.push(cell);
        }
        rows.push((title, cells));
    }
    println!("{}", table(&knobs, &rows));
    Ok(())
}

/// What one run needs.
struct RunOf<'a> {
    runtime: &'a tokio::runtime::Runtime,
    scratch: &'a Path,
    topic: String,
    workload: &'a Workload,
    redis_connections: usize,
}

impl RunOf<'_> {
    /// A fresh broker with `fsync=always`, over its own protocol or RESP.
    fn pigeon(&self, resp: bool) -> anyhow::Result<bench::Report> {
        let dir = tempfile::Builder::new()
            .prefix("pigeon")
            .tempdir_in(self.scratch)?;
        let broker = Broker::start(&dir.path().join("data"), &["--fsync", "always"]);
        self.runtime.block_on(async {
            if resp {
                let addr = broker.resp.context("the RESP listener")?.to_string();
                let target = RedisTarget::connect(&addr, self.redis_connections).await?;
                bench::run(&target, &self.topic, self.workload).await
            } else {
                let target = PigeonTarget::connect(&broker.addr.to_string()).await?;
                bench::run(&target, &self.topic, self.workload).await
            }
        })
    }

    /// A fresh `redis-server` with `appendfsync always`.
    fn redis(&self, installed: &Installed) -> anyhow::Result<bench::Report> {
        let server = installed.start(self.scratch)?;
        let addr = server.addr.to_string();
        self.runtime.block_on(async {
            let target = RedisTarget::connect(&addr, self.redis_connections).await?;
            bench::run(&target, &self.topic, self.workload).await
        })
    }
}

/// The markdown table: msgs/s per target, and Pigeon over RESP ÷ Redis.
fn table(knobs: &Knobs, rows: &[(&str, Vec<Option<f64>>)]) -> String {
    let label = |t: &str| match t {
        "pigeon" => "Pigeon, own protocol",
        "pigeon-resp" => "Pigeon, RESP",
        _ => "redis-server, appendfsync always",
    };
    let mut out = String::from("| workload (msgs/s) |");
    for t in &knobs.targets {
        out.push_str(&format!(" {} |", label(t)));
    }
    let ratio = knobs.targets.iter().any(|t| t == "pigeon-resp")
        && knobs.targets.iter().any(|t| t == "redis");
    if ratio {
        out.push_str(" Pigeon RESP ÷ Redis |");
    }
    out.push_str("\n| --- |");
    for _ in 0..knobs.targets.len() + usize::from(ratio) {
        out.push_str(" ---: |");
    }
    for (title, cells) in rows {
        out.push_str(&format!("\n| {title} |"));
        for cell in cells {
            match cell {
                Some(v) => out.push_str(&format!(" {v:.0} |")),
                None => out.push_str(" failed or skipped |"),
            }
        }
        if ratio {
            let of = |name: &str| {
                let at = knobs.targets.iter().position(|t| t == name)?;
                cells[at]
            };
            match (of("pigeon-resp"), of("redis")) {
                (Some(p), Some(r)) if r > 0.0 => out.push_str(&format!(" {:.2} |", p / r)),
                _ => out.push_str(" – |"),
            }
        }
    }
    out.push_str(&format!(
        "\n\n{} messages of 100 B per run (`PIGEON_BENCH_SCALE` {}); {} connection(s) per RESP publisher.",
        ((1e6 * knobs.scale).round() as u64).max(1_000),
        knobs.scale,
        knobs.redis_connections
    ));
    out
}
