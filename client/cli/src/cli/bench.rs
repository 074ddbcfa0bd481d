//! `pigeon bench produce|consume|e2e [TOPIC]`: the load generator
//! ([`pigeon_cli::bench`]) against the broker at `--broker`.
//!
//! The topic (default `bench-<workload>`) is deleted and created afresh,
//! with the group `pigeon-bench` on it. A topic whose name does not start
//! with `bench-` is someone's data: if it exists, the run refuses to start
//! unless `--recreate` says to delete it (with its groups and data). While the run is timed a progress
//! bar is drawn on stderr, only when stderr is a terminal and without
//! `--json`. Alongside the timed phase the disk's fsync floor is measured
//! (`--fsync-probe-dir`, the temp dir by default; `--no-fsync-probe`), and
//! with `--metrics-addr` the broker's append stages are read from its
//! `/metrics` before and after. At the end the figures are printed: a few aligned lines, or
//! with `--json` exactly one JSON object (see
//! [`Report::to_json`](pigeon_cli::bench::Report::to_json)) on stdout.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use pigeon_cli::bench::floor::ProbeSettings;
use pigeon_cli::bench::{self, PigeonTarget, Workload, WorkloadKind};

use super::Failure;
use super::failure::connect;
use super::output::Out;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Publish as fast as acks come back (or at --rate); latency is
    /// publish→ack per message.
    Produce(BenchArgs),
    /// Pre-load the topic (untimed), then receive and ack everything;
    /// latency is receive→ack per batch.
    Consume(BenchArgs),
    /// Publish and consume at once; latency is publish→deliver per message,
    /// and publish→ack.
    E2e(BenchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Topic to run on, DELETED and created afresh [default: bench-WORKLOAD];
    /// an existing topic not named bench-* needs --recreate.
    topic: Option<String>,
    /// Delete and recreate TOPIC even if it exists and is not a bench-*
    /// topic (its data and consumer groups are lost).
    #[arg(long)]
    recreate: bool,
    /// Messages to publish (or consume) in all [default: 1000000; 100000 for e2e].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
    /// Publish for this many seconds instead of a message count (produce, e2e).
    #[arg(long, value_name = "S", conflicts_with = "messages", value_parser = parse_seconds)]
    duration_secs: Option<Duration>,
    /// Bytes per value (at least 8: they carry the publish time).
    #[arg(long, value_name = "B", default_value_t = 100, value_parser = clap::value_parser!(u64).range(8..))]
    value_size: u64,
    /// Publishers, each on its own connection.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    producers: u64,
    /// Members of the consumer group, each on its own connection (consume, e2e).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    consumers: u64,
    /// Partitions of the topic.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Largest batch a producer sends, in bytes [default: 1048576].
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..))]
    batch_bytes: Option<u64>,
    /// How long a producer waits to fill a batch, ms [default: 5; 0 for e2e].
    #[arg(long, value_name = "MS")]
    linger_ms: Option<u64>,
    /// Batches of one partition a producer sends before the first is
    /// answered.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=5))]
    in_flight: u64,
    /// Publish at this fixed rate over all producers (msgs/s); latencies
    /// count from each message's scheduled time.
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Most messages one receive returns [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_messages: Option<u64>,
    /// Measure the disk's fsync floor (4 KiB append + fdatasync every
    /// 10 ms, alongside the run) in a scratch file in DIR: a directory on
    /// the broker's data filesystem [default: the system temp dir].
    #[arg(long, value_name = "DIR")]
    fsync_probe_dir: Option<PathBuf>,
    /// Do not measure the fsync floor.
    #[arg(long, conflicts_with = "fsync_probe_dir")]
    no_fsync_probe: bool,
    /// The broker's HTTP listener (HOST:PORT): its append stage histograms
    /// are read before and after the run and reported with the figures.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// The broker's process id (on this machine): its CPU time over the
    /// run is reported, in all and per message.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print exactly one JSON object with the figures (no progress bar).
    #[arg(long)]
    json: bool,
}

/// A positive number of seconds (fractions allowed).
fn parse_seconds(arg: &str) -> Result<Duration, String> {
    let seconds: f64 = arg
        .parse()
        .map_err(|_| format!("`{arg}` is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 366.0 * 86_400.0) {
        return Err(format!(
            "`{arg}`: the duration must be more than 0 and at most a year"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(crate) async fn run(broker: &str, command: BenchCommand) -> Result<(), Failure> {
    let (kind, args) = match command {
        BenchCommand::Produce(args) => (WorkloadKind::Produce, args),
        BenchCommand::Consume(args) => (WorkloadKind::Consume, args),
        BenchCommand::E2e(args) => (WorkloadKind::E2e, args),
    };
    let workload = workload(kind, &args)?;
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{}", kind.as_str()));
    let client = connect(broker).await?;
    if !topic.starts_with("bench-") && !args.recreate {
        refuse_foreign_topic(&client, &topic).await?;
    }
    let mut target = PigeonTarget::with_client(client);
    if let Some(addr) = &args.metrics_addr {
        target = target.with_metrics(addr.clone());
    }
    let report = bench::run(&target, &topic, &workload).await?;
    let mut out = Out::new();
    if args.json {
        out.line(report.to_json())?;
    } else {
        out.line(report.to_text().trim_end())?;
    }
    out.flush()
}

/// The workload the arguments describe.
fn workload(kind: WorkloadKind, args: &BenchArgs) -> Result<Workload, Failure> {
    let mut workload = Workload::new(kind);
    if let Some(messages) = args.messages {
        workload.messages = messages;
    }
    workload.duration = args.duration_secs;
    workload.value_size = usize::try_from(args.value_size)?;
    workload.producers = usize::try_from(args.producers)?;
    workload.consumers = usize::try_from(args.consumers)?;
    workload.partitions = args.partitions;
    if let Some(bytes) = args.batch_bytes {
        workload.publish.batch_bytes = usize::try_from(bytes)?;
    }
    if let Some(ms) = args.linger_ms {
        workload.publish.linger = Duration::from_millis(ms);
    }
    workload.publish.in_flight = usize::try_from(args.in_flight)?;
    if let Some(max) = args.max_messages {
        workload.subscribe.max_messages = usize::try_from(max)?;
    }
    workload.rate = args.rate;
    workload.server_pid = args.server_pid;
    workload.progress = !args.json;
    if !args.no_fsync_probe {
        let dir = args
            .fsync_probe_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        workload.fsync_probe = Some(ProbeSettings::in_dir(dir));
    }
    workload.validate()?;
    Ok(workload)
}

/// Fails if `topic` exists: the bench would delete someone's data.
async fn refuse_foreign_topic(
    client: &pigeon_client::client::Client,
    topic: &str,
) -> Result<(), Failure> {
    let topics = client.admin().list_topics().await.map_err(|err| {
        anyhow::anyhow!("cannot list the topics: {}", super::failure::explain(&err))
    })?;
    if topics.iter().any(|t| t.topic == topic) {
        return Err(anyhow::anyhow!(
            "topic {topic} exists and pigeon bench would delete it (with its data and consumer groups); run on a bench-* topic (the default), or pass --recreate to delete {topic}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<(WorkloadKind, Workload), String> {
        let mut argv = vec!["pigeon", "bench"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let crate::cli::Command::Bench(command) = cli.command else {
            return Err("not a bench command".into());
        };
        let (kind, args) = match command {
            BenchCommand::Produce(a) => (WorkloadKind::Produce, a),
            BenchCommand::Consume(a) => (WorkloadKind::Consume, a),
            BenchCommand::E2e(a) => (WorkloadKind::E2e, a),
        };
        workload(kind, &args)
            .map(|w| (kind, w))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_set_the_workload() {
        let (kind, w) = parse(&[
            "e2e",
            "t",
            "--messages",
            "5",
            "--value-size",
            "1024",
            "--producers",
            "2",
            "--consumers",
            "3",
            "--partitions",
            "4",
            "--batch-bytes",
            "65536",
            "--linger-ms",
            "2",
            "--in-flight",
            "2",
            "--rate",
            "10000",
            "--max-messages",
            "50",
            "--fsync-probe-dir",
            "/data",
            "--metrics-addr",
            "127.0.0.1:7421",
            "--json",
        ])
        .expect("valid");
        assert_eq!(kind, WorkloadKind::E2e);
        assert_eq!(
            (
                w.messages,
                w.value_size,
                w.producers,
                w.consumers,
                w.partitions
            ),
            (5, 1024, 2, 3, 4)
        );
        assert_eq!(w.publish.batch_bytes, 65_536);
        assert_eq!(w.publish.linger, Duration::from_millis(2));
        assert_eq!(w.publish.in_flight, 2);
        assert_eq!(w.rate, Some(10_000));
        assert_eq!(w.subscribe.max_messages, 50);
        assert!(!w.progress);
        let probe = w.fsync_probe.expect("a probe");
        assert_eq!(probe.dir, PathBuf::from("/data"));
    }

    #[test]
    fn defaults_follow_the_workload() {
        let (_, produce) = parse(&["produce"]).expect("valid");
        assert_eq!(produce.messages, 1_000_000);
        assert!(produce.progress);
        let probe = produce.fsync_probe.expect("probed by default");
        assert_eq!(probe.dir, std::env::temp_dir());
        let (_, unprobed) = parse(&["produce", "--no-fsync-probe"]).expect("valid");
        assert!(unprobed.fsync_probe.is_none());
        let (_, e2e) = parse(&["e2e", "--duration-secs", "1.5"]).expect("valid");
        assert_eq!(e2e.messages, 100_000);
        assert_eq!(e2e.duration, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["produce", "--value-size", "7"][..],
            &["produce", "--producers", "0"],
            &["produce", "--rate", "0"],
            &["produce", "--duration-secs", "0"],
            &["produce", "--duration-secs", "x"],
            &["produce", "--messages", "5", "--duration-secs", "1"],
            &["consume", "--duration-secs", "1"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }
}
