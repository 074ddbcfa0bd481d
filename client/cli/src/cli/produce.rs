//! `pigeon produce TOPIC`: one message per line of stdin, pipelined.
//!
//! A thread reads stdin and hands lines over a bounded channel; the command
//! enqueues each line on the batching [`Producer`] as soon as it arrives and
//! prints each message's partition and offset once it is stored, in input
//! order. So a big piped file travels in large batches, and a line typed at
//! a terminal is answered at once.
//!
//! Invariants: output line *n* is about input line *n*; at most
//! [`MAX_PENDING`] messages await their answer (memory stays bounded); the
//! first message that cannot be stored stops the command with exit 1 after
//! the lines stored before it were printed.

use std::collections::VecDeque;
use std::io::BufRead;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use pigeon_client::client::{Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
use tokio::sync::mpsc;

use super::Failure;
use super::failure::{DELIVERY_TIMEOUT, client_failure, connect, explain};
use super::output::{Out, json_object};

/// Messages enqueued but not yet answered before reading more of stdin.
const MAX_PENDING: usize = 64 * 1024;

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// The topic to publish to.
    topic: String,
    /// Key of every message (messages of one key go to one partition).
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// A header of every message; repeat for more (names may repeat).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Stable producer name (for idempotence; a newer producer of the same name fences this one).
    #[arg(long = "producer", value_name = "NAME")]
    producer_name: Option<String>,
    /// Publish to this partition instead of choosing by key or round robin.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Print one JSON object per message: {"topic","partition","offset","timestamp"}.
    #[arg(long)]
    json: bool,
}

/// `NAME=VALUE`, split at the first `=`; the name must not be empty.
fn parse_header(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        Some(_) => Err(format!(
            "header `{arg}` has an empty name; expected NAME=VALUE"
        )),
        None => Err(format!("header `{arg}` has no `=`; expected NAME=VALUE")),
    }
}

pub(crate) async fn run(broker: &str, args: ProduceArgs) -> Result<(), Failure> {
    let client = connect(broker).await?;
    check_target(&client, &args).await?;
    let config = ProducerConfig {
        producer_name: args.producer_name.clone(),
        delivery_timeout: DELIVERY_TIMEOUT,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let mut out = Out::new();
    let outcome = pipeline(&producer, &args, &mut out).await;
    producer.close().await;
    let flushed = out.flush();
    outcome.and(flushed)
}

/// Fails early, with the broker's message, if the topic (or the chosen
/// partition) does not exist, even when stdin turns out to be empty.
async fn check_target(
    client: &pigeon_client::client::Client,
    args: &ProduceArgs,
) -> Result<(), Failure> {
    let topic = client
        .admin()
        .describe_topic(&args.topic)
        .await
        .map_err(client_failure)?;
    let count = topic.partitions.len();
    match args.partition {
        Some(p) if p as usize >= count => Err(anyhow::anyhow!(
            "topic {} has no partition {p} (it has {count}, numbered from 0)",
            args.topic
        )),
        _ => Ok(()),
    }
}

/// Enqueues each line of stdin and prints the answers in input order.
async fn pipeline(producer: &Producer, args: &ProduceArgs, out: &mut Out) -> Result<(), Failure> {
    let mut lines = spawn_stdin_reader();
    let mut pending: VecDeque<(u64, Delivery)> = VecDeque::new();
    let mut line_number = 0u64;
    let mut input_done = false;
    loop {
        if input_done && pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            Some(answer) = front(&mut pending) => {
                let (number, result) = answer;
                let stored = result.map_err(|err| anyhow::anyhow!("line {number} was not stored: {}", explain(&err)))?;
                print_stored(out, &args.topic, &stored, args.json)?;
                if pending.is_empty() {
                    // Caught up with the input: let a terminal user see it.
                    out.flush()?;
                }
            }
            line = lines.recv(), if !input_done && pending.len() < MAX_PENDING => match line {
                None => input_done = true,
                Some(line) => {
                    line_number += 1;
                    let line = line.with_context(|| format!("cannot read line {line_number} of stdin"))?;
                    let delivery = producer
                        .enqueue(&args.topic, record(args, line))
                        .await
                        .map_err(|err| anyhow::anyhow!("line {line_number} was not stored: {}", explain(&err)))?;
                    pending.push_back((line_number, delivery));
                }
            },
        }
    }
}

/// Waits for the oldest pending delivery; `None` (never ready) when there
/// is none.
async fn front(
    pending: &mut VecDeque<(u64, Delivery)>,
) -> Option<(
    u64,
    Result<RecordMetadata, pigeon_client::client::ClientError>,
)> {
    let (number, delivery) = pending.front_mut()?;
    let number = *number;
    let result = delivery.await;
    pending.pop_front();
    Some((number, result))
}

fn record(args: &ProduceArgs, value: Bytes) -> ProducerRecord {
    let mut record = ProducerRecord::new(value);
    if let Some(key) = &args.key {
        record = record.key(key.clone());
    }
    for (name, value) in &args.headers {
        record = record.header(name.clone(), value.clone());
    }
    if let Some(partition) = args.partition {
        record = record.partition(partition);
    }
    record
}

fn print_stored(
    out: &mut Out,
    topic: &str,
    stored: &RecordMetadata,
    json: bool,
) -> Result<(), Failure> {
    if json {
        out.line(json_object([
            ("topic", topic.into()),
            ("partition", stored.partition.into()),
            ("offset", stored.offset.into()),
            ("timestamp", stored.timestamp.into()),
        ]))
    } else {
        out.line(format_args!(
            "partition {} offset {}",
            stored.partition, stored.offset
        ))
    }
}

/// Reads stdin on its own thread, one message per line: the bytes before
/// each `\n` (a last line without one counts too). Blocking reads never
/// hold up the runtime.
fn spawn_stdin_reader() -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (lines, receiver) = mpsc::channel(4096);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = std::io::BufReader::with_capacity(256 * 1024, stdin.lock());
        loop {
            let mut line = Vec::new();
            let message = match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    Ok(Bytes::from(line))
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => Err(err),
            };
            let failed = message.is_err();
            if lines.blocking_send(message).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_header("trace=a=b"),
            Ok(("trace".to_string(), "a=b".to_string()))
        );
        assert_eq!(
            parse_header("empty="),
            Ok(("empty".to_string(), String::new()))
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("=v").is_err());
    }
}
