//! `pigeon consume --exec CMD [--concurrency N]`: each message to one run
//! of CMD, up to N runs at once, with the message's lease kept alive while
//! its run lasts.
//!
//! - CMD runs via `sh -c` with the value on stdin and `PIGEON_TOPIC`,
//!   `PIGEON_PARTITION`, `PIGEON_OFFSET`, `PIGEON_ATTEMPT`, `PIGEON_KEY` in
//!   its environment; its output goes to ours. Exit 0 acks, exit 65
//!   rejects (to the DLQ), any other exit (or death by a signal) nacks.
//! - Nothing is leased before a run can take it: a Receive asks for at
//!   most the free runs (and what `--max` still allows), so leased and
//!   running messages never exceed N, and no message waits in a buffer
//!   while its lease runs out.
//! - While a run lasts, its message's lease is extended by the group's ack
//!   timeout every third of it, so a handler slower than the ack timeout
//!   is not handed the same message again meanwhile. A lease that cannot
//!   be extended (lost) is reported once; the run goes on and its settle
//!   reports the loss.
//! - The command stops taking messages after `--max` of them or once none
//!   has been available for `--wait-ms`, then waits for the runs still
//!   going and settles them. Ctrl-C stops at once (the runs get the
//!   terminal's interrupt too; their leases return when the connection
//!   closes, counted as an attempt); messages received and not yet given
//!   to a run are released, not counted (`Consumer::close`).

use std::sync::Arc;
use std::time::Duration;

use pigeon_client::client::{Consumer, GroupDelivery};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Failure;
use super::consume::settle_result;
use super::failure::explain;

/// Exit code of an `--exec` command that rejects the message (EX_DATAERR).
const EXIT_REJECT: i32 = 65;

/// Most messages one Receive asks for.
const BATCH: u64 = 100;

/// Shortest spacing of lease extensions.
const MIN_EXTEND_EVERY: Duration = Duration::from_millis(100);

/// What the runs of one `consume --exec` share.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    /// The shell command.
    pub command: Arc<str>,
    /// Runs at once (at least 1).
    pub concurrency: usize,
    /// Stop after this many messages.
    pub max: Option<u64>,
    /// Stop once no message has been available for this long.
    pub wait: Option<Duration>,
}

impl Exec {
    /// Takes messages and runs the command on each until `--max` or
    /// `--wait-ms` says to stop, then waits for the runs still going.
    pub(crate) async fn run(&self, consumer: &mut Consumer) -> Result<(), Failure> {
        let ack_timeout = Duration::from_millis(u64::from(consumer.settings().ack_timeout_ms));
        let mut runs = JoinSet::new();
        let mut left = self.max.unwrap_or(u64::MAX);
        // Time spent asking for messages since one was last available.
        let mut idle = Duration::ZERO;
        while left > 0 {
            while let Some(done) = runs.try_join_next() {
                finished(done)?;
            }
            if runs.len() >= self.concurrency {
                if let Some(done) = runs.join_next().await {
                    finished(done)?;
                }
                continue;
            }
            let room = (self.concurrency - runs.len()) as u64;
            consumer.set_max_messages(left.min(room).min(BATCH) as u32);
            let poll = match self.wait {
                Some(wait) => wait.saturating_sub(idle),
                None => Duration::from_secs(1),
            };
            let asked = Instant::now();
            let next = consumer.next_within(poll).await.map_err(|err| {
                anyhow::anyhow!(
                    "cannot consume topic {} as group {}: {}",
                    consumer.topic(),
                    consumer.group(),
                    explain(&err)
                )
            })?;
            match next {
                Some(delivery) => {
                    idle = Duration::ZERO;
                    left -= 1;
                    runs.spawn(run_one(self.command.clone(), delivery, ack_timeout));
                }
                None => {
                    idle += asked.elapsed();
                    if self.wait.is_some_and(|wait| idle >= wait) {
                        break;
                    }
                }
            }
        }
        while let Some(done) = runs.join_next().await {
            finished(done)?;
        }
        Ok(())
    }
}

/// A run's task ended: its failure (or panic) is ours.
fn finished(done: Result<Result<(), Failure>, tokio::task::JoinError>) -> Result<(), Failure> {
    done.map_err(|err| anyhow::anyhow!("an --exec run failed: {err}"))?
}

/// Runs the command on one message, extending its lease meanwhile, and
/// settles it by the command's exit.
async fn run_one(
    command: Arc<str>,
    delivery: GroupDelivery,
    ack_timeout: Duration,
) -> Result<(), Failure> {
    let mut child = spawn(&command, &delivery)?;
    if let Some(mut stdin) = child.stdin.take() {
        let value = delivery.value.clone();
        // The command may not read its input (or not all of it): that is
        // its business, and must not hold up its run.
        tokio::spawn(async move {
            let _ = stdin.write_all(&value).await;
        });
    }
    let every = (ack_timeout / 3).max(MIN_EXTEND_EVERY);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    let mut lost = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = ticks.tick() => {
                if let Err(err) = delivery.extend(ack_timeout).await
                    && !std::mem::replace(&mut lost, true)
                {
                    eprintln!(
                        "pigeon: warning: cannot extend the lease of {}/{}@{} while its command runs: {}",
                        delivery.topic, delivery.partition, delivery.offset, explain(&err)
                    );
                }
            }
        }
    };
    let status =
        status.map_err(|err| anyhow::anyhow!("cannot wait for the --exec command: {err}"))?;
    let verdict = match status.code() {
        Some(0) => Verdict::Ack,
        Some(EXIT_REJECT) => {
            Verdict::Reject(format!("the --exec command exited with code {EXIT_REJECT}"))
        }
        _ => Verdict::Nack,
    };
    settle(&delivery, verdict).await
}

/// Starts `sh -c command` for `delivery`, its value to go on stdin.
fn spawn(command: &str, delivery: &GroupDelivery) -> Result<tokio::process::Child, Failure> {
    let key = delivery
        .key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PIGEON_TOPIC", &delivery.topic)
        .env("PIGEON_PARTITION", delivery.partition.to_string())
        .env("PIGEON_OFFSET", delivery.offset.to_string())
        .env("PIGEON_ATTEMPT", delivery.attempt.to_string())
        .env("PIGEON_KEY", key)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| anyhow::anyhow!("cannot run the --exec command with sh: {err}"))
}

/// What to do with a message once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ack,
    Nack,
    Reject(String),
}

/// Settles a handled message by its verdict. A settle the broker refuses
/// (the lease was lost) or that fails retriably is a warning: the message
/// comes back to the group, it is not ours to settle.
async fn settle(delivery: &GroupDelivery, verdict: Verdict) -> Result<(), Failure> {
    let settled = match verdict {
        Verdict::Ack => delivery.ack().await,
        Verdict::Nack => delivery.nack(None).await,
        Verdict::Reject(reason) => delivery.reject(reason).await,
    };
    settle_result(delivery, settled)
}
