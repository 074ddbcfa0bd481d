//! `pigeon dlq list TOPIC --group G`: the messages a group parked in its
//! dead-letter topic `<topic>.<group>.dlq`, with why and from where.
//!
//! `pigeon dlq redrive TOPIC --group G [--max N] [--dry-run] [--rate-per-sec R]`:
//! moves parked messages back into the source topic as new records (the
//! broker never moves one twice, even when run again or interrupted).

use clap::{Args, Subcommand};
use pigeon_client::batch::Record;
use pigeon_client::client::{Reader, ReaderConfig, StartAt};

use super::Failure;
use super::failure::{client_failure, connect, explain};
use super::output::{Out, printable, record_json, rfc3339_ms};

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List the messages parked in a group's dead-letter topic.
    List(ListArgs),
    /// Move parked messages back into the source topic, as new records.
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RedriveArgs {
    /// The source topic.
    topic: String,
    /// The consumer group.
    #[arg(long, value_name = "G")]
    group: String,
    /// Move at most this many messages (default: all).
    #[arg(long, value_name = "N")]
    max: Option<u32>,
    /// List what would move, move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Move at most this many messages a second (default: no limit).
    #[arg(long, value_name = "R")]
    rate_per_sec: Option<u32>,
}

async fn redrive(broker: &str, args: RedriveArgs) -> Result<(), Failure> {
    let client = connect(broker).await?;
    let moved = client
        .admin()
        .redrive(
            &args.topic,
            &args.group,
            args.max.unwrap_or(0),
            args.dry_run,
            args.rate_per_sec.unwrap_or(0),
        )
        .await
        .map_err(client_failure)?;
    let mut out = Out::new();
    for m in &moved.redriven {
        if args.dry_run {
            out.line(format!(
                "would redrive {}.{}.dlq/{}@{} to {}/{}",
                args.topic, args.group, m.partition, m.dlq_offset, args.topic, m.partition
            ))?;
        } else {
            out.line(format!(
                "redrove {}.{}.dlq/{}@{} to {}/{}@{}",
                args.topic,
                args.group,
                m.partition,
                m.dlq_offset,
                args.topic,
                m.partition,
                m.new_offset
            ))?;
        }
    }
    out.flush()
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The source topic.
    topic: String,
    /// The consumer group.
    #[arg(long, value_name = "G")]
    group: String,
    /// Print one JSON object per message (the `read --json` format; the
    /// `pigeon.dlq.*` headers say why and from where).
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(broker: &str, command: DlqCommand) -> Result<(), Failure> {
    let args = match command {
        DlqCommand::List(args) => args,
        DlqCommand::Redrive(args) => return redrive(broker, args).await,
    };
    let client = connect(broker).await?;
    let dlq = format!("{}.{}.dlq", args.topic, args.group);
    let topic = client.admin().describe_topic(&dlq).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot read the dead-letter topic {dlq} of group {} (does the group exist?): {}",
            args.group,
            explain(&err)
        )
    })?;
    let mut out = Out::new();
    for p in &topic.partitions {
        let config = ReaderConfig::new(StartAt::Earliest).follow(false);
        let mut reader = Reader::open(&client, &dlq, p.partition, config)
            .await
            .map_err(client_failure)?;
        while let Some(record) = reader.next_record().await {
            let record = record.map_err(client_failure)?;
            if args.json {
                out.line(record_json(&dlq, p.partition, &record))?;
            } else {
                out.line(human(&record))?;
            }
        }
    }
    out.flush()
}

/// `orders/0@17 attempts=2 reason=max-deliveries reason-text="…" first-delivery=… last-delivery=… parked=… value`.
fn human(record: &Record) -> String {
    let get = |name: &str| record.header(&format!("pigeon.dlq.{name}")).map(printable);
    let mut line = format!(
        "{}/{}@{}",
        get("source-topic").unwrap_or_else(|| "?".into()),
        get("source-partition").unwrap_or_else(|| "?".into()),
        get("source-offset").unwrap_or_else(|| "?".into()),
    );
    line.push_str(&format!(
        " attempts={} reason={}",
        get("attempts").unwrap_or_else(|| "?".into()),
        get("reason").unwrap_or_else(|| "?".into())
    ));
    if let Some(text) = get("reason-text").filter(|t| !t.is_empty()) {
        line.push_str(&format!(" reason-text={text:?}"));
    }
    let time = |name: &str| {
        get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .map(rfc3339_ms)
    };
    if let Some(first) = time("first-delivery-ms") {
        line.push_str(&format!(" first-delivery={first}"));
    }
    if let Some(last) = time("last-delivery-ms") {
        line.push_str(&format!(" last-delivery={last}"));
    }
    line.push_str(&format!(
        " parked={} (dlq offset {})",
        rfc3339_ms(record.timestamp),
        record.offset
    ));
    if let Some(key) = &record.key {
        line.push_str(&format!(" key={}", printable(key)));
    }
    line.push(' ');
    line.push_str(&printable(&record.value));
    line
}
