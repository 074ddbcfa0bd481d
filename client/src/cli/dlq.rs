//! `pigeon dlq list TOPIC --group G`: the messages a group parked in its
//! dead-letter topic `<topic>.<group>.dlq`, with why and from where.
//!
//! `dlq redrive` is not offered yet: the broker does not serve Redrive.

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
    let DlqCommand::List(args) = command;
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

fn header<'a>(record: &'a Record, name: &str) -> Option<&'a [u8]> {
    record
        .headers
        .iter()
        .rev()
        .find(|h| h.name == name)
        .map(|h| h.value.as_ref())
}

/// `orders/0@17 attempts=2 reason=max-deliveries reason-text="…" parked=… value`.
fn human(record: &Record) -> String {
    let get = |name: &str| header(record, &format!("pigeon.dlq.{name}")).map(printable);
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
