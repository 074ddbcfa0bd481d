//! `pigeon consume TOPIC --group G`: receive a group's messages, print (or
//! hand to a command) and settle each one.
//!
//! Each message is printed (a human line, or with `--json` the `read
//! --json` object plus `attempt`) and flushed to stdout *before* it is
//! acked, so a message is never acked unseen. With `--exec 'CMD'`, CMD runs
//! via `sh -c` once per message with the value on stdin and
//! `PIGEON_TOPIC`, `PIGEON_PARTITION`, `PIGEON_OFFSET`, `PIGEON_ATTEMPT`,
//! `PIGEON_KEY` in its environment: exit 0 acks, exit 65 rejects (to the
//! DLQ), any other exit (or death by a signal) nacks (redelivery with the
//! group's backoff). The command's own output goes to ours.
//!
//! The command stops after `--max` messages, once no message has been
//! available for `--wait-ms`, or when interrupted (Ctrl-C, exit 0).
//! Messages are received in batches no larger than what `--max` still
//! allows, so no message is leased (and its attempt counted) needlessly.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Args;
use pigeon_client::client::{Client, Consumer, ConsumerConfig, GroupDelivery};
use serde_json::Value;

use super::Failure;
use super::failure::{client_failure, connect, explain};
use super::output::{Out, record_human, record_json_map};

/// Exit code of an `--exec` command that rejects the message (EX_DATAERR).
const EXIT_REJECT: i32 = 65;

/// Most messages received at once.
const BATCH: u64 = 100;

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
    /// Print messages without acking them (they are redelivered once this
    /// command exits).
    #[arg(long, conflicts_with = "exec")]
    no_ack: bool,
    /// Print one JSON object per message (the `read --json` fields plus `attempt`).
    #[arg(long)]
    json: bool,
    /// Run CMD via `sh -c` per message (value on stdin): exit 0 acks, 65
    /// rejects to the DLQ, anything else nacks.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
}

pub(crate) async fn run(broker: &str, args: ConsumeArgs) -> Result<(), Failure> {
    let client = connect(broker).await?;
    let mut consumer = join(&client, &args).await?;
    let mut out = Out::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let outcome = tokio::select! {
        _ = &mut interrupted => Ok(()),
        outcome = consume(&mut consumer, &args, &mut out) => outcome,
    };
    let flushed = out.flush();
    consumer.close().await;
    outcome.and(flushed)
}

async fn join(client: &Client, args: &ConsumeArgs) -> Result<Consumer, Failure> {
    let config = ConsumerConfig {
        consumer_name: consumer_name(),
        max_messages: args.max.unwrap_or(BATCH).clamp(1, BATCH) as u32,
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

async fn consume(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    out: &mut Out,
) -> Result<(), Failure> {
    let mut left = args.max.unwrap_or(u64::MAX);
    while left > 0 {
        consumer.set_max_messages(left.min(BATCH) as u32);
        let next = match args.wait_ms {
            Some(ms) => consumer.next_within(Duration::from_millis(ms)).await,
            None => consumer.next_delivery().await.map(Some),
        };
        let delivery = match next {
            Ok(Some(delivery)) => delivery,
            Ok(None) => return Ok(()),
            Err(err) => {
                return Err(anyhow::anyhow!(
                    "cannot consume topic {} as group {}: {}",
                    args.topic,
                    args.group,
                    explain(&err)
                ));
            }
        };
        handle(&delivery, args, out).await?;
        left -= 1;
    }
    Ok(())
}

/// What to do with a message once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ack,
    Nack,
    Reject(String),
    Keep,
}

async fn handle(
    delivery: &GroupDelivery,
    args: &ConsumeArgs,
    out: &mut Out,
) -> Result<(), Failure> {
    let verdict = match &args.exec {
        Some(command) => execute(command, delivery).await?,
        None => {
            print(out, delivery, args.json)?;
            out.flush()?;
            if args.no_ack {
                Verdict::Keep
            } else {
                Verdict::Ack
            }
        }
    };
    let settled = match verdict {
        Verdict::Ack => delivery.ack().await,
        Verdict::Nack => delivery.nack(None).await,
        Verdict::Reject(reason) => delivery.reject(reason).await,
        Verdict::Keep => Ok(()),
    };
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

/// Runs `command` for `delivery` and maps its exit to a verdict.
async fn execute(command: &str, delivery: &GroupDelivery) -> Result<Verdict, Failure> {
    let command = command.to_string();
    let value = delivery.value.clone();
    let env = [
        ("PIGEON_TOPIC", delivery.topic.clone()),
        ("PIGEON_PARTITION", delivery.partition.to_string()),
        ("PIGEON_OFFSET", delivery.offset.to_string()),
        ("PIGEON_ATTEMPT", delivery.attempt.to_string()),
        (
            "PIGEON_KEY",
            delivery
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
        ),
    ];
    let status = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .envs(env)
            .stdin(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // The command may not read its input: that is its business.
            let _ = stdin.write_all(&value);
        }
        child.wait()
    })
    .await
    .map_err(|err| anyhow::anyhow!("the --exec command could not be run: {err}"))?
    .map_err(|err| anyhow::anyhow!("cannot run the --exec command with sh: {err}"))?;
    Ok(match status.code() {
        Some(0) => Verdict::Ack,
        Some(EXIT_REJECT) => {
            Verdict::Reject(format!("the --exec command exited with code {EXIT_REJECT}"))
        }
        _ => Verdict::Nack,
    })
}
