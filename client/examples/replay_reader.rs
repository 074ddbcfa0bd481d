//! Replays one partition of a topic from a Pigeon broker, printing records.
//!
//! ```text
//! cargo run -p pigeon-client --example replay_reader -- --topic orders --from-offset 0
//! cargo run -p pigeon-client --example replay_reader -- --topic orders --follow
//! ```
//!
//! Options: `--broker ADDR` (default `127.0.0.1:7420`), `--topic NAME`
//! (required), `--partition N` (default 0), `--from-offset N` (default: the
//! earliest offset), `--from-time MS` (ms since the Unix epoch), `--follow`
//! (keep waiting for new records instead of stopping at the current end).

use std::process::ExitCode;

use futures_util::StreamExt;
use pigeon_client::client::{
    Client, ClientError, DEFAULT_BROKER_ADDR, Reader, ReaderConfig, StartAt,
};

struct Args {
    broker: String,
    topic: String,
    partition: u32,
    start: StartAt,
    follow: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: DEFAULT_BROKER_ADDR.to_string(),
        topic: String::new(),
        partition: 0,
        start: StartAt::Earliest,
        follow: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--follow" {
            args.follow = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| format!("{flag}: {what} is not a number");
        match flag.as_str() {
            "--broker" => args.broker = value,
            "--topic" => args.topic = value,
            "--partition" => args.partition = value.parse().map_err(|_| number(&value))?,
            "--from-offset" => {
                args.start = StartAt::Offset(value.parse().map_err(|_| number(&value))?)
            }
            "--from-time" => {
                args.start = StartAt::Timestamp(value.parse().map_err(|_| number(&value))?)
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.topic.is_empty() {
        return Err("--topic is required".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("replay_reader: {err}");
            eprintln!(
                "usage: replay_reader --topic NAME [--broker ADDR] [--partition N] [--from-offset N | --from-time MS] [--follow]"
            );
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("replay_reader: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), ClientError> {
    let client = Client::connect(args.broker.clone()).await?;
    let config = ReaderConfig::new(args.start).follow(args.follow);
    let mut reader = Reader::open(&client, &args.topic, args.partition, config).await?;
    let mut count = 0u64;
    while let Some(record) = reader.next().await {
        let record = match record {
            Ok(record) => record,
            Err(err) if err.is_retriable() => {
                eprintln!("replay_reader: {err} (retrying)");
                continue;
            }
            Err(err) => return Err(err),
        };
        count += 1;
        let key = record
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_else(|| "-".into());
        let headers: Vec<String> = record
            .headers
            .iter()
            .map(|h| format!("{}={}", h.name, String::from_utf8_lossy(&h.value)))
            .collect();
        println!(
            "offset={} time={} key={} headers=[{}] value={}",
            record.offset,
            record.timestamp,
            key,
            headers.join(","),
            String::from_utf8_lossy(&record.value)
        );
    }
    eprintln!(
        "replay_reader: {count} records, next offset {}",
        reader.position()
    );
    Ok(())
}
