//! `pigeon broker describe`: the broker's version, uptime, data directory
//! usage, topic and group counts, and every setting in effect (secrets
//! hidden by the broker). `--json` prints one JSON object for scripts.

use clap::Subcommand;
use pigeon_client::protocol::DescribeBrokerResponse;
use serde_json::{Map, Value};

use super::Failure;
use super::failure::{client_failure, connect};
use super::output::{Out, json_object, rfc3339_ms};
use super::topic::print_table;

#[derive(Debug, Subcommand)]
pub(crate) enum BrokerCommand {
    /// Show the broker's version, uptime, data directory usage and settings in effect.
    Describe {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(broker: &str, command: BrokerCommand) -> Result<(), Failure> {
    let admin = connect(broker).await?.admin();
    let mut out = Out::new();
    match command {
        BrokerCommand::Describe { json } => {
            let described = admin.describe_broker().await.map_err(client_failure)?;
            if json {
                out.line(describe_json(&described))?;
            } else {
                describe_human(&mut out, &described)?;
            }
        }
    }
    out.flush()
}

fn describe_json(d: &DescribeBrokerResponse) -> Value {
    let config: Map<String, Value> = d
        .config
        .iter()
        .map(|c| (c.key.clone(), Value::from(c.value.clone())))
        .collect();
    json_object([
        ("version", d.version.clone().into()),
        ("started", rfc3339_ms(d.started_ms).into()),
        ("uptime_ms", d.uptime_ms.into()),
        ("data_dir", d.data_dir.clone().into()),
        ("data_dir_bytes", d.data_dir_bytes.into()),
        ("topics", d.topics.into()),
        ("groups", d.groups.into()),
        ("config", Value::Object(config)),
    ])
}

fn describe_human(out: &mut Out, d: &DescribeBrokerResponse) -> Result<(), Failure> {
    out.line(format_args!(
        "{}, up {} (since {})",
        d.version,
        duration(d.uptime_ms),
        rfc3339_ms(d.started_ms)
    ))?;
    out.line(format_args!(
        "data dir {}: {} bytes; {} topics, {} groups",
        d.data_dir, d.data_dir_bytes, d.topics, d.groups
    ))?;
    let rows: Vec<_> = d
        .config
        .iter()
        .map(|c| [c.key.clone(), c.value.clone()])
        .collect();
    print_table(out, ["SETTING", "VALUE"], &rows)
}

/// `3d 4h 5m 6s`, leading zero units left out.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let parts = [(d, "d"), (h, "h"), (m, "m")];
    let mut text: String = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .map(|(n, unit)| format!("{n}{unit} "))
        .collect();
    text.push_str(&format!("{s}s"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_from_the_largest_unit() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(61_000), "1m 1s");
        assert_eq!(duration(3_600_000), "1h 0m 0s");
        assert_eq!(duration(90_061_000), "1d 1h 1m 1s");
    }
}
