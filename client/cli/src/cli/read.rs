//! `pigeon read TOPIC`: plain replay without a group.
//!
//! Without `--follow`, each selected partition is read in partition order
//! from the start point to the log end seen when its reader opened, and the
//! command exits. With `--follow`, every selected partition is read at once
//! and records are printed as they arrive until `--max` is reached or the
//! command is interrupted (Ctrl-C exits 0).
//!
//! The start point is the same for every partition: the earliest record
//! still stored (default), an offset (`--from-offset`), or the first record
//! appended at or after a time (`--from-time`, RFC 3339).

use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, select_all};
use pigeon_client::batch::Record;
use pigeon_client::client::{Client, ClientError, Reader, ReaderConfig, StartAt};

use super::Failure;
use super::failure::{client_failure, connect, explain};
use super::output::{Out, record_human, record_json};

#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The topic to read.
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Start at this offset (in every partition read).
    #[arg(long, value_name = "O", conflicts_with = "from_time")]
    from_offset: Option<u64>,
    /// Start at the first record appended at or after this time (RFC 3339,
    /// e.g. 2026-11-23T10:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    from_time: Option<i64>,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Keep waiting for new records at the end of the log.
    #[arg(long)]
    follow: bool,
    /// Print one JSON object per record.
    #[arg(long)]
    json: bool,
}

/// An RFC 3339 time as ms since the Unix epoch.
pub(crate) fn parse_time(arg: &str) -> Result<i64, String> {
    arg.parse::<jiff::Timestamp>()
        .map(|ts| ts.as_millisecond())
        .map_err(|err| format!("`{arg}` is not an RFC 3339 time like 2026-11-23T10:00:00Z: {err}"))
}

impl ReadArgs {
    fn start(&self) -> StartAt {
        match (self.from_offset, self.from_time) {
            (Some(offset), _) => StartAt::Offset(offset),
            (None, Some(ms)) => StartAt::Timestamp(ms),
            (None, None) => StartAt::Earliest,
        }
    }

    fn print(&self, out: &mut Out, partition: u32, record: &Record) -> Result<(), Failure> {
        if self.json {
            out.line(record_json(&self.topic, partition, record))
        } else {
            out.line(record_human(&self.topic, partition, record))
        }
    }
}

pub(crate) async fn run(broker: &str, args: ReadArgs) -> Result<(), Failure> {
    let client = connect(broker).await?;
    let partitions = partitions(&client, &args).await?;
    let mut out = Out::new();
    let outcome = if args.max == Some(0) {
        Ok(())
    } else if args.follow {
        follow(&client, &args, &partitions, &mut out).await
    } else {
        replay(&client, &args, &partitions, &mut out).await
    };
    let flushed = out.flush();
    outcome.and(flushed)
}

/// The partitions to read: all of the topic's, or the one asked for.
async fn partitions(client: &Client, args: &ReadArgs) -> Result<Vec<u32>, Failure> {
    let topic = client
        .admin()
        .describe_topic(&args.topic)
        .await
        .map_err(client_failure)?;
    let all: Vec<u32> = topic.partitions.iter().map(|p| p.partition).collect();
    match args.partition {
        None => Ok(all),
        Some(p) if all.contains(&p) => Ok(vec![p]),
        Some(p) => Err(anyhow::anyhow!(
            "topic {} has no partition {p} (it has {}, numbered from 0)",
            args.topic,
            all.len()
        )),
    }
}

async fn open(client: &Client, args: &ReadArgs, partition: u32) -> Result<Reader, Failure> {
    let config = ReaderConfig::new(args.start()).follow(args.follow);
    Reader::open(client, &args.topic, partition, config)
        .await
        .map_err(|err| read_failure(args, partition, &err))
}

fn read_failure(args: &ReadArgs, partition: u32, err: &ClientError) -> Failure {
    anyhow::anyhow!("cannot read {}/{partition}: {}", args.topic, explain(err))
}

/// Reads each partition to its end, one after the other.
async fn replay(
    client: &Client,
    args: &ReadArgs,
    partitions: &[u32],
    out: &mut Out,
) -> Result<(), Failure> {
    let mut left = args.max.unwrap_or(u64::MAX);
    for &partition in partitions {
        let mut reader = open(client, args, partition).await?;
        while let Some(record) = reader.next_record().await {
            // Not following: give up on the first error rather than retry
            // against a broker that went away.
            let record = record.map_err(|err| read_failure(args, partition, &err))?;
            args.print(out, partition, &record)?;
            left -= 1;
            if left == 0 {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Reads every partition at once, printing records as they arrive.
async fn follow(
    client: &Client,
    args: &ReadArgs,
    partitions: &[u32],
    out: &mut Out,
) -> Result<(), Failure> {
    let mut readers: Vec<BoxStream<'static, (u32, Result<Record, ClientError>)>> = Vec::new();
    for &partition in partitions {
        let reader = open(client, args, partition).await?;
        readers.push(reader.map(move |item| (partition, item)).boxed());
    }
    let mut merged = select_all(readers);
    let mut left = args.max.unwrap_or(u64::MAX);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let next = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            next = merged.next() => next,
        };
        let Some((partition, item)) = next else {
            return Ok(());
        };
        match item {
            Ok(record) => {
                args.print(out, partition, &record)?;
                out.flush()?;
                left -= 1;
                if left == 0 {
                    return Ok(());
                }
            }
            // The reader retries these by itself after a backoff.
            Err(err) if err.is_retriable() => eprintln!(
                "pigeon: warning: reading {}/{partition}: {}; retrying",
                args.topic,
                explain(&err)
            ),
            Err(err) => return Err(read_failure(args, partition, &err)),
        }
    }
}
