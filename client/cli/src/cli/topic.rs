//! `pigeon topic create|list|describe|alter|delete`.
//!
//! Human output is a short sentence or an aligned table; `--json` on `list`
//! and `describe` prints one JSON object per line (a topic, resp. a
//! partition) for scripts. `delete` asks for confirmation on a terminal
//! (see `confirm.rs`).

use clap::{Args, Subcommand};
use pigeon_client::client::{Admin, NewTopic};
use pigeon_client::protocol::{DescribeTopicResponse, RetentionChange};
use serde_json::Value;

use super::Failure;
use super::confirm::confirm;
use super::failure::{client_failure, connect};
use super::output::{Out, json_object};

#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List every topic and its partition count.
    List(JsonFlag),
    /// Show a topic's retention and, per partition, its offsets, size and segments.
    Describe {
        /// The topic.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change a topic's retention; it takes effect at once (old segments
    /// are deleted before the command returns) and survives restarts.
    Alter(AlterArgs),
    /// Delete a topic, all its data and its consumer groups (asks first on a terminal).
    Delete {
        /// The topic.
        name: String,
        /// Do not ask for confirmation (scripts need not: they are never asked).
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["retention_ms", "retention_bytes"])))]
pub(crate) struct AlterArgs {
    /// The topic.
    name: String,
    /// Delete sealed segments older than this (ms); 0 keeps forever;
    /// `default` returns to the broker's default.
    #[arg(long, value_name = "MS", value_parser = parse_retention)]
    retention_ms: Option<RetentionChange>,
    /// Delete the oldest sealed segments beyond this size per partition
    /// (bytes); 0 is unlimited; `default` returns to the broker's default.
    #[arg(long, value_name = "B", value_parser = parse_retention)]
    retention_bytes: Option<RetentionChange>,
}

/// A retention flag's value: a number, or `default`.
fn parse_retention(arg: &str) -> Result<RetentionChange, String> {
    if arg == "default" {
        return Ok(RetentionChange::Default);
    }
    arg.parse::<u64>()
        .map(RetentionChange::Set)
        .map_err(|_| format!("`{arg}` is neither a whole number nor `default`"))
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The topic's name ([A-Za-z0-9._-], 1 to 200 characters).
    name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Delete sealed segments older than this (ms); the broker's default if absent.
    #[arg(long, value_name = "MS")]
    retention_ms: Option<u64>,
    /// Delete the oldest sealed segments beyond this size per partition (bytes).
    #[arg(long, value_name = "B")]
    retention_bytes: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct JsonFlag {
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(broker: &str, command: TopicCommand) -> Result<(), Failure> {
    let admin = connect(broker).await?.admin();
    let mut out = Out::new();
    match command {
        TopicCommand::Create(args) => {
            let mut topic = NewTopic::new(&args.name, args.partitions);
            topic.retention_ms = args.retention_ms;
            topic.retention_bytes = args.retention_bytes;
            admin.create_topic(topic).await.map_err(client_failure)?;
            let plural = if args.partitions == 1 { "" } else { "s" };
            out.line(format_args!(
                "created topic {} with {} partition{plural}",
                args.name, args.partitions
            ))?;
        }
        TopicCommand::List(JsonFlag { json }) => {
            let mut topics = admin.list_topics().await.map_err(client_failure)?;
            topics.sort_by(|a, b| a.topic.cmp(&b.topic));
            let rows: Vec<_> = topics
                .iter()
                .map(|t| [t.topic.clone(), t.partitions.to_string()])
                .collect();
            if json {
                for t in &topics {
                    let object = json_object([
                        ("topic", t.topic.clone().into()),
                        ("partitions", t.partitions.into()),
                    ]);
                    out.line(object)?;
                }
            } else {
                print_table(&mut out, ["TOPIC", "PARTITIONS"], &rows)?;
            }
        }
        TopicCommand::Describe { name, json } => {
            let topic = admin.describe_topic(&name).await.map_err(client_failure)?;
            if json.json {
                describe_json(&mut out, &topic)?;
            } else {
                describe_human(&mut out, &topic)?;
            }
        }
        TopicCommand::Alter(args) => alter(&admin, &mut out, args).await?,
        TopicCommand::Delete { name, yes } => {
            if !yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                let question = delete_question(&admin, &name).await?;
                confirm(&question, false, &format!("topic {name} was not deleted"))?;
            }
            admin.delete_topic(&name).await.map_err(client_failure)?;
            out.line(format_args!("deleted topic {name}"))?;
        }
    }
    out.flush()
}

async fn alter(admin: &Admin, out: &mut Out, args: AlterArgs) -> Result<(), Failure> {
    let keep = |change: Option<RetentionChange>| change.unwrap_or(RetentionChange::Keep);
    let now = admin
        .alter_topic(
            &args.name,
            keep(args.retention_ms),
            keep(args.retention_bytes),
        )
        .await
        .map_err(client_failure)?;
    let by_time = now
        .retention_ms
        .map_or("forever".to_string(), |ms| format!("{ms} ms"));
    let by_size = now.retention_bytes.map_or("unlimited".to_string(), |b| {
        format!("{b} bytes per partition")
    });
    let deleted = now.segments_deleted;
    let plural = if deleted == 1 { "" } else { "s" };
    out.line(format_args!(
        "topic {}: retention by time {by_time}, by size {by_size}; {deleted} old segment{plural} deleted",
        args.name
    ))
}

/// The question before deleting `name`: what goes with it.
async fn delete_question(admin: &Admin, name: &str) -> Result<String, Failure> {
    let topic = admin.describe_topic(name).await.map_err(client_failure)?;
    let records: u64 = topic
        .partitions
        .iter()
        .map(|p| p.log_end_offset - p.log_start_offset)
        .sum();
    let groups = admin
        .list_groups(Some(name))
        .await
        .map_err(client_failure)?;
    let groups = match groups.len() {
        0 => "no consumer groups".to_string(),
        n => {
            let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
            let plural = if n == 1 { "" } else { "s" };
            format!("its {n} consumer group{plural} ({})", names.join(", "))
        }
    };
    Ok(format!(
        "Delete topic {name} with its {records} stored records and {groups}? This cannot be undone."
    ))
}

fn describe_human(out: &mut Out, topic: &DescribeTopicResponse) -> Result<(), Failure> {
    let count = topic.partitions.len();
    let plural = if count == 1 { "" } else { "s" };
    // The topic's own settings: none means the broker's default applies;
    // 0 means no limit.
    let retention_ms = match topic.retention_ms {
        None => "the broker default".to_string(),
        Some(0) => "forever".to_string(),
        Some(ms) => format!("{ms} ms"),
    };
    let retention_bytes = match topic.retention_bytes {
        None => "the broker default".to_string(),
        Some(0) => "unlimited".to_string(),
        Some(b) => format!("{b} bytes per partition"),
    };
    out.line(format_args!(
        "topic {}: {count} partition{plural}, retention by time: {retention_ms}, by size: {retention_bytes}",
        topic.topic
    ))?;
    let rows: Vec<_> = topic
        .partitions
        .iter()
        .map(|p| {
            [
                p.partition.to_string(),
                p.log_start_offset.to_string(),
                p.log_end_offset.to_string(),
                p.size_bytes.to_string(),
                p.segment_count.to_string(),
            ]
        })
        .collect();
    print_table(
        out,
        [
            "PARTITION",
            "START OFFSET",
            "END OFFSET",
            "SIZE (BYTES)",
            "SEGMENTS",
        ],
        &rows,
    )
}

fn describe_json(out: &mut Out, topic: &DescribeTopicResponse) -> Result<(), Failure> {
    let optional = |v: Option<u64>| v.map_or(Value::Null, Value::from);
    for p in &topic.partitions {
        let object = json_object([
            ("topic", topic.topic.clone().into()),
            ("partition", p.partition.into()),
            ("start_offset", p.log_start_offset.into()),
            ("end_offset", p.log_end_offset.into()),
            ("size_bytes", p.size_bytes.into()),
            ("segments", p.segment_count.into()),
            ("retention_ms", optional(topic.retention_ms)),
            ("retention_bytes", optional(topic.retention_bytes)),
        ]);
        out.line(object)?;
    }
    Ok(())
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn print_table<const N: usize>(
    out: &mut Out,
    header: [&str; N],
    rows: &[[String; N]],
) -> Result<(), Failure> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let render = |cells: [&str; N]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    out.line(render(header))?;
    for row in rows {
        out.line(render(row.each_ref().map(String::as_str)))?;
    }
    Ok(())
}
