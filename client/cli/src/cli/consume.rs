//! `pigeon consume TOPIC --group G`: receive a group's messages, print (or
//! hand to a command) and settle each one.
//!
//! Each message is printed (a human line, or with `--json` the `read
//! --json` object plus `attempt`) and flushed to stdout *before* it is
//! acked, so a message is never acked unseen. With `--exec 'CMD'`, each
//! message goes to one run of CMD instead (see `exec.rs`: up to
//! `--concurrency` runs at once, leases extended while they run).
//!
//! The command stops after `--max` messages, once no message has been
//! available for `--wait-ms`, or when interrupted (Ctrl-C, exit 0).
//! Messages are received in batches no larger than what `--max` still
//! allows, so no message is leased (and its attempt counted) needlessly.
//!
//! On the way out, the messages received and never printed (or run) —
//! those a Receive answered as Ctrl-C came, those still buffered — are
//! released (`Consumer::close`): back to the group at once, not counted as
//! an attempt. Ctrl-C while printing stops after the batch in hand is
//! printed and acked. With `--exec`, Ctrl-C stops at once: the runs get the
//! interrupt too, and their messages come back counted. With `--no-ack`,
//! printed messages are not settled: their leases run out (or return when
//! the command exits) and they come back counted as an attempt.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use clap::Args;
use pigeon_client::client::{Client, Consumer, ConsumerConfig, GroupDelivery};
use serde_json::Value;

use super::Failure;
use super::exec::Exec;
use super::failure::{client_failure, connect, explain};
use super::output::{Out, record_human, record_json_map};

/// Most messages received at once.
const BATCH: u64 = 1000;

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// The consumer group to consume as.
    #[arg(long, value_name = "G")]
    group: String,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Stop once no message has been available for this long (ms).
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
    /// Print messages without acking them: each printed message's lease
    /// runs out (or ends when this command exits) and the message is
    /// delivered again, counted as an attempt (it reaches the dead-letter
    /// queue after the group's max deliveries).
    #[arg(long, conflicts_with = "exec")]
    no_ack: bool,
    /// Print one JSON object per message (the `read --json` fields plus `attempt`).
    #[arg(long)]
    json: bool,
    /// Run CMD via `sh -c` per message (value on stdin): exit 0 acks, 65
    /// rejects to the DLQ, anything else nacks. The message's lease is
    /// extended while CMD runs.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// Run up to N commands at once (with --exec), each message to one of
    /// them.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "exec",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
}

pub(crate) async fn run(broker: &str, args: ConsumeArgs) -> Result<(), Failure> {
    let client = connect(broker).await?;
    let mut consumer = join(&client, &args).await?;
    let mut out = Out::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let exec = args.exec.as_ref().map(|command| Exec {
        command: command.as_str().into(),
        concurrency: args.concurrency as usize,
        max: args.max,
        wait: args.wait_ms.map(Duration::from_millis),
    });
    let outcome = match &exec {
        Some(exec) => tokio::select! {
            _ = &mut interrupted => Ok(()),
            outcome = exec.run(&mut consumer) => outcome,
        },
        None => consume(&mut consumer, &args, &mut out, interrupted).await,
    };
    let flushed = out.flush();
    // What was received and never printed or run goes back uncounted.
    consumer.close().await;
    outcome.and(flushed)
}

async fn join(client: &Client, args: &ConsumeArgs) -> Result<Consumer, Failure> {
    let config = ConsumerConfig {
        consumer_name: consumer_name(),
        // Both loops set it before every receive (`consume`, `Exec::run`).
        max_messages: 1,
        ..ConsumerConfig::default()
    };
    Consumer::join(client, &args.topic, &args.group, config)
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot join group {} of topic {}: {}",
                args.group,
                args.topic,
                explain(&err)
            )
        })
}

/// `pigeon-cli@<host>-<pid>`, shown in `message show`.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        format!("pigeon-cli-{}", std::process::id())
    } else {
        format!("pigeon-cli@{host}-{}", std::process::id())
    }
}

/// Prints and acks the group's messages, a batch at a time: each batch is
/// printed and flushed, then acked with one Settle request (never acked
/// unseen, and one round trip per batch rather than per message). The ack
/// of a batch overlaps the receive of the next one; at most one ack is in
/// flight, and the last is waited for before returning. `interrupted`
/// (Ctrl-C) ends the wait for a batch; a batch in hand is printed and
/// acked first.
async fn consume(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    out: &mut Out,
    mut interrupted: Pin<&mut impl Future<Output = std::io::Result<()>>>,
) -> Result<(), Failure> {
    let mut left = args.max.unwrap_or(u64::MAX);
    let mut acking: Option<tokio::task::JoinHandle<Result<(), Failure>>> = None;
    while left > 0 {
        let want = left.min(BATCH);
        consumer.set_max_messages(want as u32);
        let wait = args
            .wait_ms
            .map_or(Duration::from_secs(1), Duration::from_millis);
        // Cancel-safe: a Receive answered as Ctrl-C comes is kept by the
        // consumer and released by its close.
        let batch = tokio::select! {
            _ = &mut interrupted => break,
            batch = consumer.next_batch_within(want as usize, wait) => batch,
        };
        let batch = batch.map_err(|err| {
            anyhow::anyhow!(
                "cannot consume topic {} as group {}: {}",
                args.topic,
                args.group,
                explain(&err)
            )
        })?;
        if batch.is_empty() {
            if args.wait_ms.is_some() {
                break;
            }
            continue;
        }
        for delivery in &batch {
            print(out, delivery, args.json)?;
        }
        out.flush()?;
        left -= batch.len() as u64;
        if !args.no_ack {
            acked(acking.take()).await?;
            acking = Some(tokio::spawn(async move { ack_batch(&batch).await }));
        }
    }
    acked(acking).await
}

/// Waits for the ack in flight, if any, and passes on its failure.
async fn acked(
    acking: Option<tokio::task::JoinHandle<Result<(), Failure>>>,
) -> Result<(), Failure> {
    match acking {
        Some(task) => task
            .await
            .map_err(|err| anyhow::anyhow!("acking a batch failed: {err}"))?,
        None => Ok(()),
    }
}

/// Acks a printed batch in one request. A message whose ack the broker
/// refuses (its lease was lost), or a batch whose request fails
/// retriably, is a warning: those messages come back to the group.
async fn ack_batch(batch: &[GroupDelivery]) -> Result<(), Failure> {
    let results = match GroupDelivery::ack_all(batch).await {
        Ok(results) => results,
        Err(err) if err.code().is_some() || err.is_retriable() => {
            eprintln!(
                "pigeon: warning: cannot ack {} messages: {}; they will be delivered again",
                batch.len(),
                explain(&err)
            );
            return Ok(());
        }
        Err(err) => return Err(client_failure(err)),
    };
    for (delivery, result) in batch.iter().zip(results) {
        settle_result(delivery, result)?;
    }
    Ok(())
}

/// The outcome of settling `delivery`: refused (lease lost) or failed
/// retriably is a warning, anything else a failure.
pub(crate) fn settle_result(
    delivery: &GroupDelivery,
    settled: Result<(), pigeon_client::ClientError>,
) -> Result<(), Failure> {
    match settled {
        Ok(()) => Ok(()),
        // The message comes back to the group; it is not ours to settle.
        Err(err) if err.code().is_some() || err.is_retriable() => {
            eprintln!(
                "pigeon: warning: cannot settle {}/{}@{}: {}; it will be delivered again",
                delivery.topic,
                delivery.partition,
                delivery.offset,
                explain(&err)
            );
            Ok(())
        }
        Err(err) => Err(client_failure(err)),
    }
}

fn print(out: &mut Out, delivery: &GroupDelivery, json: bool) -> Result<(), Failure> {
    let record = delivery.record();
    if json {
        let mut object = record_json_map(&delivery.topic, delivery.partition, &record);
        object.insert("attempt".into(), delivery.attempt.into());
        out.line(Value::Object(object))
    } else {
        let line = record_human(&delivery.topic, delivery.partition, &record);
        // `t/0@5 2026-…` → `t/0@5 attempt=1 2026-…`
        let (position, rest) = line.split_once(' ').unwrap_or((&line, ""));
        out.line(format_args!(
            "{position} attempt={} {rest}",
            delivery.attempt
        ))
    }
}
