//! `pigeon dlq list TOPIC --group G`: the messages a group parked in its
//! dead-letter topic `<topic>.<group>.dlq`, with why and from where.
//!
//! `pigeon dlq redrive TOPIC --group G [--max N] [--dry-run] [--rate-per-sec R] [--yes]`:
//! moves the group's parked messages back into the source topic as new
//! records (the broker never moves one twice, even when run again or
//! interrupted) and prints a summary: how many moved, and per DLQ
//! partition the offsets looked at and the new offsets.
//!
//! Moving more than one page ([`REDRIVE_PAGE_MESSAGES`]) is confirmed
//! first: a dry run counts what would move, then a terminal is asked
//! (`[y/N]`) and a script must pass `--yes` (without it, and with stdin not
//! a terminal, the command refuses, moves nothing and exits non-zero). The
//! confirmed count bounds the move, so messages parked meanwhile wait for
//! the next run.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use pigeon_client::batch::Record;
use pigeon_client::client::{Admin, Reader, ReaderConfig, StartAt};
use pigeon_client::protocol::{REDRIVE_PAGE_MESSAGES, RedriveOutcome, RedriveResponse};

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
    /// Count what would move, move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Move at most this many messages a second (default: no limit).
    #[arg(long, value_name = "R")]
    rate_per_sec: Option<u32>,
    /// Move more than one page (256 messages) without asking: for scripts,
    /// where stdin is not a terminal.
    #[arg(long, short = 'y')]
    yes: bool,
}

impl RedriveArgs {
    fn dlq(&self) -> String {
        format!("{}.{}.dlq", self.topic, self.group)
    }
}

async fn redrive(broker: &str, args: RedriveArgs) -> Result<(), Failure> {
    let client = connect(broker).await?;
    let admin = client.admin();
    let rate = args.rate_per_sec.unwrap_or(0);
    let mut max = args.max.unwrap_or(0);
    if !args.dry_run && !args.yes {
        match confirmed(&admin, &args, max).await? {
            Some(count) => max = count,
            None => return Ok(()),
        }
    }
    let moved = admin
        .redrive(&args.topic, &args.group, max, args.dry_run, rate)
        .await
        .map_err(client_failure)?;
    let mut out = Out::new();
    for line in summary(&args, &moved) {
        out.line(line)?;
    }
    out.flush()?;
    if moved.outcome == RedriveOutcome::Interrupted {
        anyhow::bail!(
            "the broker stopped the redrive part-way (it is shutting down, or the group was deleted); what is listed above moved, run the command again for the rest"
        );
    }
    Ok(())
}

/// How many messages the user agreed to move: the dry run's count when it
/// is a page or less, or when confirmed. `None`: nothing to move (said on
/// stdout). An error when declined, or when more than a page would move
/// and stdin is not a terminal.
async fn confirmed(admin: &Admin, args: &RedriveArgs, max: u32) -> Result<Option<u32>, Failure> {
    let would = admin
        .redrive(&args.topic, &args.group, max, true, 0)
        .await
        .map_err(client_failure)?;
    if would.moved == 0 {
        let mut out = Out::new();
        out.line(format!(
            "nothing to redrive in {} for group {}",
            args.dlq(),
            args.group
        ))?;
        out.flush()?;
        return Ok(None);
    }
    // The dry run counted at most `max` (or all): it fits in u32 then.
    let count = u32::try_from(would.moved).unwrap_or(u32::MAX);
    if would.moved <= REDRIVE_PAGE_MESSAGES {
        return Ok(Some(count));
    }
    let question = format!(
        "move {} messages from {} back into {}?",
        would.moved,
        args.dlq(),
        args.topic
    );
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!(
            "{} messages would move from {} (more than one page of {REDRIVE_PAGE_MESSAGES}); pass --yes to confirm in a script, or --max {REDRIVE_PAGE_MESSAGES} to move one page; nothing moved",
            would.moved,
            args.dlq()
        );
    }
    if ask(&question, &mut stdin.lock())? {
        Ok(Some(count))
    } else {
        anyhow::bail!("redrive not confirmed; nothing moved")
    }
}

/// Asks `question` on stderr and reads the answer from `input`: `y` or
/// `yes` (any case) is yes, anything else no.
fn ask(question: &str, input: &mut impl BufRead) -> Result<bool, Failure> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{question} [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The lines printed for a redrive's answer: what moved (or would), then
/// one line per DLQ partition, then why it stopped early, if it did.
fn summary(args: &RedriveArgs, r: &RedriveResponse) -> Vec<String> {
    let dlq = args.dlq();
    let messages = |n: u64| if n == 1 { "message" } else { "messages" };
    let left = match r.skipped {
        0 => String::new(),
        n => format!(" ({n} records of other groups left in place)"),
    };
    let mut lines = vec![match (r.moved, args.dry_run) {
        (0, _) => format!("nothing to redrive in {dlq} for group {}{left}", args.group),
        (n, true) => format!(
            "would redrive {n} {} of {dlq} to {}{left}",
            messages(n),
            args.topic
        ),
        (n, false) => format!(
            "redrove {n} {} of {dlq} to {}{left}",
            messages(n),
            args.topic
        ),
    }];
    for p in r.partitions.iter().filter(|p| p.moved > 0 || p.skipped > 0) {
        let mut line = format!(
            "  partition {}: dlq offsets {}..{}: {} {}",
            p.partition,
            p.dlq_from,
            p.dlq_to,
            p.moved,
            if args.dry_run { "would move" } else { "moved" }
        );
        if p.new_to > p.new_from {
            line.push_str(&format!(
                " to {}/{} offsets {}..{}",
                args.topic, p.partition, p.new_from, p.new_to
            ));
        }
        if p.skipped > 0 {
            line.push_str(&format!(", {} skipped", p.skipped));
        }
        lines.push(line);
    }
    if r.outcome == RedriveOutcome::MaxReached {
        lines.push(
            "stopped at the limit (--max, or what was confirmed); run it again for more".into(),
        );
    }
    lines
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

#[cfg(test)]
mod tests {
    use pigeon_client::protocol::RedrivePartition;

    use super::*;

    fn args(dry_run: bool) -> RedriveArgs {
        RedriveArgs {
            topic: "orders".into(),
            group: "billing".into(),
            max: None,
            dry_run,
            rate_per_sec: None,
            yes: false,
        }
    }

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y\n", "Y", " yes \n", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "y y"] {
            assert!(!is_yes(no), "{no:?}");
        }
        let mut input = std::io::Cursor::new(b"yes\n".to_vec());
        assert!(ask("move?", &mut input).expect("ask"));
        let mut input = std::io::Cursor::new(Vec::new());
        assert!(
            !ask("move?", &mut input).expect("ask"),
            "end of input is no"
        );
    }

    #[test]
    fn the_summary_gives_counts_and_ranges_not_every_message() {
        let response = RedriveResponse {
            moved: 300,
            skipped: 2,
            outcome: RedriveOutcome::MaxReached,
            partitions: vec![
                RedrivePartition {
                    partition: 0,
                    dlq_from: 4,
                    dlq_to: 306,
                    moved: 300,
                    skipped: 2,
                    new_from: 10,
                    new_to: 310,
                },
                RedrivePartition {
                    partition: 1,
                    ..RedrivePartition::default()
                },
            ],
            ..RedriveResponse::default()
        };
        assert_eq!(
            summary(&args(false), &response),
            [
                "redrove 300 messages of orders.billing.dlq to orders (2 records of other groups left in place)",
                "  partition 0: dlq offsets 4..306: 300 moved to orders/0 offsets 10..310, 2 skipped",
                "stopped at the limit (--max, or what was confirmed); run it again for more",
            ]
        );
        let dry = RedriveResponse {
            moved: 1,
            partitions: vec![RedrivePartition {
                partition: 2,
                dlq_from: 0,
                dlq_to: 1,
                moved: 1,
                ..RedrivePartition::default()
            }],
            ..RedriveResponse::default()
        };
        assert_eq!(
            summary(&args(true), &dry),
            [
                "would redrive 1 message of orders.billing.dlq to orders",
                "  partition 2: dlq offsets 0..1: 1 would move",
            ]
        );
    }
}
