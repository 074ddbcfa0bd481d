//! Publishes records to a topic of a Pigeon broker.
//!
//! ```text
//! cargo run -p pigeon-client --example publisher -- --topic orders            # one record per stdin line
//! cargo run -p pigeon-client --example publisher -- --topic orders --count 1000
//! ```
//!
//! Options: `--broker ADDR` (default `127.0.0.1:7420`), `--topic NAME`
//! (required), `--count N` (publish N generated messages instead of
//! reading stdin), `--key KEY` (key every record), `--partitions N` (create
//! the topic with N partitions if it does not exist).

use std::process::ExitCode;

use pigeon_client::client::{
    Client, ClientError, DEFAULT_BROKER_ADDR, Delivery, NewTopic, Producer, ProducerConfig,
    ProducerRecord,
};
use pigeon_client::protocol::ErrorCode;
use tokio::io::{AsyncBufReadExt, BufReader};

struct Args {
    broker: String,
    topic: String,
    count: Option<u64>,
    key: Option<String>,
    partitions: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: DEFAULT_BROKER_ADDR.to_string(),
        topic: String::new(),
        count: None,
        key: None,
        partitions: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--broker" => args.broker = value()?,
            "--topic" => args.topic = value()?,
            "--count" => args.count = Some(value()?.parse().map_err(|e| format!("--count: {e}"))?),
            "--key" => args.key = Some(value()?),
            "--partitions" => {
                args.partitions = Some(value()?.parse().map_err(|e| format!("--partitions: {e}"))?)
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
            eprintln!("publisher: {err}");
            eprintln!(
                "usage: publisher --topic NAME [--broker ADDR] [--count N] [--key KEY] [--partitions N]"
            );
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("publisher: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), ClientError> {
    let client = Client::connect(args.broker.clone()).await?;
    if let Some(partitions) = args.partitions {
        match client
            .admin()
            .create_topic(NewTopic::new(args.topic.clone(), partitions))
            .await
        {
            Err(err) if err.code() != Some(ErrorCode::TopicAlreadyExists) => return Err(err),
            _ => {}
        }
    }
    let producer = Producer::new(client, ProducerConfig::default());
    let record = |value: String| {
        let record = ProducerRecord::new(value);
        match &args.key {
            Some(key) => record.key(key.clone()),
            None => record,
        }
    };
    // Enqueue everything, then wait: records are batched while in flight.
    let mut deliveries: Vec<Delivery> = Vec::new();
    match args.count {
        Some(count) => {
            for i in 0..count {
                deliveries.push(
                    producer
                        .enqueue(&args.topic, record(format!("message {i}")))
                        .await?,
                );
            }
        }
        None => {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Some(line) = lines
                .next_line()
                .await
                .map_err(|e| ClientError::Connection {
                    addr: "stdin".into(),
                    kind: e.kind(),
                    message: e.to_string(),
                })?
            {
                deliveries.push(producer.enqueue(&args.topic, record(line)).await?);
            }
        }
    }
    producer.flush().await;
    let (mut sent, mut failed) = (0u64, 0u64);
    for delivery in deliveries {
        match delivery.await {
            Ok(stored) => {
                sent += 1;
                if sent <= 3 {
                    println!(
                        "stored at partition {} offset {}",
                        stored.partition, stored.offset
                    );
                }
            }
            Err(err) => {
                failed += 1;
                eprintln!("publisher: a record failed: {err}");
            }
        }
    }
    producer.close().await;
    println!(
        "{sent} records published to {}, {failed} failed",
        args.topic
    );
    Ok(())
}
