//! `pigeon message show TOPIC --partition P --offset O --group G`: where one
//! message stands in a group.

use clap::{Args, Subcommand};
use pigeon_client::protocol::{MessageState, MessageStateResponse};
use serde_json::Value;

use super::Failure;
use super::failure::{client_failure, connect};
use super::output::{Out, json_object, rfc3339_ms};

#[derive(Debug, Subcommand)]
pub(crate) enum MessageCommand {
    /// Show a message's state in a group: available, in flight (to whom,
    /// until when), delayed (until when), settled, dead-lettered (why), …
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The topic.
    topic: String,
    /// The partition.
    #[arg(long, value_name = "P")]
    partition: u32,
    /// The message's offset.
    #[arg(long, value_name = "O")]
    offset: u64,
    /// The consumer group.
    #[arg(long, value_name = "G")]
    group: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(broker: &str, command: MessageCommand) -> Result<(), Failure> {
    let MessageCommand::Show(args) = command;
    let admin = connect(broker).await?.admin();
    let state = admin
        .message_state(&args.topic, &args.group, args.partition, args.offset)
        .await
        .map_err(client_failure)?;
    let mut out = Out::new();
    if args.json {
        out.line(show_json(&args, &state))?;
    } else {
        out.line(show_human(&args, &state))?;
    }
    out.flush()
}

fn state_name(state: MessageState) -> &'static str {
    match state {
        MessageState::Available => "available",
        MessageState::InFlight => "in_flight",
        MessageState::Delayed => "delayed",
        MessageState::Settled => "settled",
        MessageState::DeadLettered => "dead_lettered",
        MessageState::NotYetWritten => "not_yet_written",
        MessageState::RemovedByRetention => "removed_by_retention",
    }
}

fn time_or_null(ms: i64) -> Value {
    if ms < 0 { Value::Null } else { ms.into() }
}

fn show_json(args: &ShowArgs, s: &MessageStateResponse) -> Value {
    json_object([
        ("topic", args.topic.clone().into()),
        ("partition", args.partition.into()),
        ("offset", args.offset.into()),
        ("group", args.group.clone().into()),
        ("state", state_name(s.state).into()),
        ("attempts", s.attempts.into()),
        (
            "consumer",
            if s.consumer.is_empty() {
                Value::Null
            } else {
                s.consumer.clone().into()
            },
        ),
        ("until", time_or_null(s.until_ms)),
        ("first_delivery", time_or_null(s.first_delivery_ms)),
        ("last_delivery", time_or_null(s.last_delivery_ms)),
        (
            "reason",
            if s.reason.is_empty() {
                Value::Null
            } else {
                s.reason.clone().into()
            },
        ),
    ])
}

fn show_human(args: &ShowArgs, s: &MessageStateResponse) -> String {
    let state = match s.state {
        MessageState::Available => "available".to_string(),
        MessageState::InFlight => format!(
            "in flight to {} until {}",
            if s.consumer.is_empty() {
                "a consumer"
            } else {
                &s.consumer
            },
            rfc3339_ms(s.until_ms)
        ),
        MessageState::Delayed => format!("delayed until {}", rfc3339_ms(s.until_ms)),
        MessageState::Settled if s.reason.is_empty() => "settled".to_string(),
        MessageState::Settled => format!("settled ({})", s.reason),
        MessageState::DeadLettered if s.reason.is_empty() => "dead-lettered".to_string(),
        MessageState::DeadLettered => format!("dead-lettered ({})", s.reason),
        MessageState::NotYetWritten => "not yet written".to_string(),
        MessageState::RemovedByRetention => "removed by retention".to_string(),
    };
    let mut line = format!(
        "{}/{}@{} in group {}: {state}; attempts: {}",
        args.topic, args.partition, args.offset, args.group, s.attempts
    );
    if s.first_delivery_ms >= 0 {
        line.push_str(&format!(
            "; first delivered {}",
            rfc3339_ms(s.first_delivery_ms)
        ));
    }
    if s.last_delivery_ms >= 0 {
        line.push_str(&format!(
            "; last delivered {}",
            rfc3339_ms(s.last_delivery_ms)
        ));
    }
    line
}
