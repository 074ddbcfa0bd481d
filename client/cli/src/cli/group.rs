//! `pigeon group create|list|describe|seek|pause|resume|delete`.
//!
//! Human output is a sentence or an aligned table; `describe --json`
//! prints one JSON object per partition (with the group's settings and
//! pause state in each), `list --json` one per group, for scripts.
//! `delete` asks for confirmation on a terminal (see `confirm.rs`).

use clap::{Args, Subcommand};
use pigeon_client::client::Admin;
use pigeon_client::protocol::{DescribeGroupResponse, GroupListing, GroupSettings, SeekTarget};
use serde_json::Value;

use super::Failure;
use super::confirm::confirm;
use super::failure::{client_failure, connect};
use super::output::{Out, json_object};
use super::read::parse_time;
use super::topic::print_table;

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a consumer group on a topic (and its DLQ topic `<topic>.<group>.dlq`).
    Create(CreateArgs),
    /// Change a group's settings: only those given change, the others keep
    /// their values (leases already handed out keep their deadlines).
    Alter(CreateArgs),
    /// List consumer groups (of every topic, or of one) with their lag.
    List {
        /// Only the groups of this topic.
        #[arg(long, value_name = "T")]
        topic: Option<String>,
        /// Print one JSON object per group.
        #[arg(long)]
        json: bool,
    },
    /// Show a group's settings, whether it is paused, and per partition its progress.
    Describe {
        #[command(flatten)]
        target: GroupTarget,
        /// Print one JSON object per partition.
        #[arg(long)]
        json: bool,
    },
    /// Move a group to an offset, a time, the earliest or the latest offset;
    /// everything from there on is delivered again.
    Seek(SeekArgs),
    /// Stop new deliveries (acks of what is in flight still count).
    Pause(GroupTarget),
    /// Resume deliveries of a paused group.
    Resume(GroupTarget),
    /// Delete a group and its delivery state (asks first on a terminal).
    Delete {
        #[command(flatten)]
        target: GroupTarget,
        /// Do not ask for confirmation (scripts need not: they are never asked).
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct GroupTarget {
    /// The group.
    group: String,
    /// The topic the group subscribes to.
    #[arg(long, value_name = "T")]
    topic: String,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    target: GroupTarget,
    /// How long a delivery's lease lasts before redelivery (default 30000).
    #[arg(long, value_name = "MS")]
    ack_timeout_ms: Option<u32>,
    /// Deliveries of one message before it is dead-lettered (default 5).
    #[arg(long, value_name = "N")]
    max_deliveries: Option<u32>,
    /// Delay before the second attempt (default 1000).
    #[arg(long, value_name = "MS")]
    backoff_initial_ms: Option<u32>,
    /// Longest delay between attempts (default 300000).
    #[arg(long, value_name = "MS")]
    backoff_max_ms: Option<u32>,
    /// Growth of the delay per attempt, at least 1.0 (default 2.0).
    #[arg(long, value_name = "X", value_parser = parse_multiplier)]
    backoff_multiplier: Option<f64>,
    /// Random spread of each delay in thousandths, at most 1000 (default 200 = ±20 %).
    #[arg(long, value_name = "PERMILLE", value_parser = clap::value_parser!(u16).range(0..=1000))]
    backoff_jitter_permille: Option<u16>,
    /// Most messages in flight to one consumer at a time (default 1000).
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
}

fn parse_multiplier(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 1.0 => Ok(x),
        _ => Err(format!("`{arg}` is not a number of at least 1.0")),
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_offset", "to_time", "earliest", "latest"])))]
pub(crate) struct SeekArgs {
    #[command(flatten)]
    target: GroupTarget,
    /// Deliver again from this offset.
    #[arg(long, value_name = "O")]
    to_offset: Option<u64>,
    /// Deliver again from the first record appended at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    to_time: Option<i64>,
    /// Deliver again from the oldest stored record.
    #[arg(long)]
    earliest: bool,
    /// Skip to the end: deliver only new records.
    #[arg(long)]
    latest: bool,
    /// Only this partition (default: all).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
}

impl SeekArgs {
    fn seek_target(&self) -> SeekTarget {
        match (self.to_offset, self.to_time, self.earliest) {
            (Some(offset), _, _) => SeekTarget::Offset(offset),
            (None, Some(ms), _) => SeekTarget::Timestamp(ms),
            (None, None, true) => SeekTarget::Earliest,
            (None, None, false) => SeekTarget::Latest,
        }
    }
}

pub(crate) async fn run(broker: &str, command: GroupCommand) -> Result<(), Failure> {
    let admin = connect(broker).await?.admin();
    let mut out = Out::new();
    match command {
        GroupCommand::Create(args) => create(&admin, &mut out, args).await?,
        GroupCommand::Alter(args) => alter(&admin, &mut out, args).await?,
        GroupCommand::Describe { target, json } => {
            let described = admin
                .describe_group(&target.topic, &target.group)
                .await
                .map_err(client_failure)?;
            if json {
                describe_json(&mut out, &target, &described)?;
            } else {
                describe_human(&mut out, &target, &described)?;
            }
        }
        GroupCommand::Seek(args) => {
            let GroupTarget { group, topic } = &args.target;
            let moved = admin
                .seek_group(topic, group, args.partition, args.seek_target())
                .await
                .map_err(client_failure)?;
            for p in moved {
                out.line(format_args!(
                    "group {group} on {topic}/{} now delivers from offset {}",
                    p.partition, p.offset
                ))?;
            }
        }
        GroupCommand::Pause(GroupTarget { group, topic }) => {
            admin
                .pause_group(&topic, &group, true)
                .await
                .map_err(client_failure)?;
            out.line(format_args!("paused group {group} on topic {topic}"))?;
        }
        GroupCommand::Resume(GroupTarget { group, topic }) => {
            admin
                .pause_group(&topic, &group, false)
                .await
                .map_err(client_failure)?;
            out.line(format_args!("resumed group {group} on topic {topic}"))?;
        }
        GroupCommand::List { topic, json } => {
            let groups = admin
                .list_groups(topic.as_deref())
                .await
                .map_err(client_failure)?;
            list(&mut out, &groups, json)?;
        }
        GroupCommand::Delete {
            target: GroupTarget { group, topic },
            yes,
        } => {
            let question = format!(
                "Delete group {group} of topic {topic} and its delivery state (what it has settled, its leases and redeliveries)? Its dead-letter topic {topic}.{group}.dlq stays."
            );
            confirm(&question, yes, &format!("group {group} was not deleted"))?;
            admin
                .delete_group(&topic, &group)
                .await
                .map_err(client_failure)?;
            out.line(format_args!("deleted group {group} on topic {topic}"))?;
        }
    }
    out.flush()
}

/// `base` with the settings `args` gives instead.
fn settings_from(args: &CreateArgs, base: GroupSettings) -> GroupSettings {
    GroupSettings {
        ack_timeout_ms: args.ack_timeout_ms.unwrap_or(base.ack_timeout_ms),
        max_deliveries: args.max_deliveries.unwrap_or(base.max_deliveries),
        backoff_initial_ms: args.backoff_initial_ms.unwrap_or(base.backoff_initial_ms),
        backoff_multiplier: args.backoff_multiplier.unwrap_or(base.backoff_multiplier),
        backoff_max_ms: args.backoff_max_ms.unwrap_or(base.backoff_max_ms),
        backoff_jitter_permille: args
            .backoff_jitter_permille
            .unwrap_or(base.backoff_jitter_permille),
        max_in_flight: args.max_in_flight.unwrap_or(base.max_in_flight),
    }
}

async fn create(admin: &Admin, out: &mut Out, args: CreateArgs) -> Result<(), Failure> {
    let settings = settings_from(&args, GroupSettings::default());
    let GroupTarget { group, topic } = &args.target;
    admin
        .create_group(topic, group, settings)
        .await
        .map_err(client_failure)?;
    out.line(format_args!(
        "created group {group} on topic {topic} (dead letters go to {topic}.{group}.dlq)"
    ))?;
    Ok(())
}

/// Changes the settings `args` gives, keeping the group's others.
async fn alter(admin: &Admin, out: &mut Out, args: CreateArgs) -> Result<(), Failure> {
    let GroupTarget { group, topic } = &args.target;
    let current = admin
        .describe_group(topic, group)
        .await
        .map_err(client_failure)?
        .settings;
    let settings = settings_from(&args, current);
    admin
        .alter_group(topic, group, settings)
        .await
        .map_err(client_failure)?;
    out.line(format_args!(
        "altered group {group} on topic {topic}: ack timeout {} ms, max deliveries {}, backoff {} ms to {} ms (x{}, jitter {}‰), max in flight {}",
        settings.ack_timeout_ms,
        settings.max_deliveries,
        settings.backoff_initial_ms,
        settings.backoff_max_ms,
        settings.backoff_multiplier,
        settings.backoff_jitter_permille,
        settings.max_in_flight
    ))?;
    Ok(())
}

fn list(out: &mut Out, groups: &[GroupListing], json: bool) -> Result<(), Failure> {
    if json {
        for g in groups {
            let object = json_object([
                ("topic", g.topic.clone().into()),
                ("group", g.group.clone().into()),
                ("paused", g.paused.into()),
                ("partitions", g.partitions.into()),
                ("lag", g.lag.into()),
                ("in_flight", g.in_flight.into()),
                ("delayed", g.delayed.into()),
                ("dead_lettered", g.dead_lettered.into()),
            ]);
            out.line(object)?;
        }
        return Ok(());
    }
    let rows: Vec<_> = groups
        .iter()
        .map(|g| {
            [
                g.topic.clone(),
                g.group.clone(),
                if g.paused { "paused" } else { "active" }.to_string(),
                g.lag.to_string(),
                g.in_flight.to_string(),
                g.delayed.to_string(),
                g.dead_lettered.to_string(),
            ]
        })
        .collect();
    print_table(
        out,
        [
            "TOPIC",
            "GROUP",
            "STATE",
            "LAG",
            "IN FLIGHT",
            "DELAYED",
            "DEAD-LETTERED",
        ],
        &rows,
    )
}

fn settings_json(s: &GroupSettings) -> Value {
    json_object([
        ("ack_timeout_ms", s.ack_timeout_ms.into()),
        ("max_deliveries", s.max_deliveries.into()),
        ("backoff_initial_ms", s.backoff_initial_ms.into()),
        ("backoff_multiplier", s.backoff_multiplier.into()),
        ("backoff_max_ms", s.backoff_max_ms.into()),
        ("backoff_jitter_permille", s.backoff_jitter_permille.into()),
        ("max_in_flight", s.max_in_flight.into()),
    ])
}

fn describe_json(
    out: &mut Out,
    target: &GroupTarget,
    described: &DescribeGroupResponse,
) -> Result<(), Failure> {
    for p in &described.partitions {
        let object = json_object([
            ("topic", target.topic.clone().into()),
            ("group", target.group.clone().into()),
            ("partition", p.partition.into()),
            ("committed_floor", p.committed_floor.into()),
            ("log_start", p.log_start.into()),
            ("log_end", p.log_end.into()),
            ("lag", p.lag.into()),
            ("in_flight", p.in_flight.into()),
            ("delayed", p.delayed.into()),
            ("dead_lettered", p.dead_lettered.into()),
            ("removed_by_retention", p.removed_by_retention.into()),
            ("paused", described.paused.into()),
            ("settings", settings_json(&described.settings)),
        ]);
        out.line(object)?;
    }
    Ok(())
}

fn describe_human(
    out: &mut Out,
    target: &GroupTarget,
    described: &DescribeGroupResponse,
) -> Result<(), Failure> {
    let s = &described.settings;
    let state = if described.paused { "paused" } else { "active" };
    out.line(format_args!(
        "group {} on topic {}: {state}; ack timeout {} ms, max deliveries {}, backoff {} ms x{} up to {} ms (jitter ±{}‰), max in flight {}",
        target.group,
        target.topic,
        s.ack_timeout_ms,
        s.max_deliveries,
        s.backoff_initial_ms,
        s.backoff_multiplier,
        s.backoff_max_ms,
        s.backoff_jitter_permille,
        s.max_in_flight,
    ))?;
    let rows: Vec<_> = described
        .partitions
        .iter()
        .map(|p| {
            [
                p.partition.to_string(),
                p.committed_floor.to_string(),
                p.log_end.to_string(),
                p.lag.to_string(),
                p.in_flight.to_string(),
                p.delayed.to_string(),
                p.dead_lettered.to_string(),
                p.removed_by_retention.to_string(),
            ]
        })
        .collect();
    print_table(
        out,
        [
            "PARTITION",
            "COMMITTED FLOOR",
            "LOG END",
            "LAG",
            "IN FLIGHT",
            "DELAYED",
            "DEAD-LETTERED",
            "REMOVED BY RETENTION",
        ],
        &rows,
    )
}
