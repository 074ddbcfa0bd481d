//! The `pigeon` command line: argument parsing, the async runtime, and the
//! mapping of outcomes to exit codes.
//!
//! ## Layout
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the argument grammar ([`Cli`]), dispatch, exit codes |
//! | `failure.rs` | the connection options (TLS); connecting with CLI-sized timeouts; one-sentence error messages |
//! | `topic.rs` | `pigeon topic create/list/describe/alter/delete` |
//! | `broker.rs` | `pigeon broker describe`: version, uptime, data dir usage, settings in effect |
//! | `confirm.rs` | asking before `topic delete` and `group delete` on a terminal; `--yes` |
//! | `produce.rs` | `pigeon produce`: stdin lines to records, pipelined |
//! | `read.rs` | `pigeon read`: replay without a group, optionally following |
//! | `group.rs` | `pigeon group create/list/describe/seek/pause/resume/delete` |
//! | `consume.rs` | `pigeon consume`: a group's messages printed or handed to `--exec`, then settled |
//! | `exec.rs` | `pigeon consume --exec`: one run of a command per message, `--concurrency` at once, leases extended while they run |
//! | `message.rs` | `pigeon message show`: one message's state in a group |
//! | `dlq.rs` | `pigeon dlq list`: a group's dead-letter topic |
//! | `bench.rs` | `pigeon bench produce/consume/e2e`: the load generator |
//! | `output.rs` | buffered stdout, record rendering (human and `--json`), timestamps |
//!
//! ## Exit codes
//!
//! - 0: success (also when stdout is closed early, e.g. `| head`, and when
//!   `read --follow` is interrupted);
//! - 1: a runtime error (unknown topic, broker unreachable, broker error),
//!   reported on stderr as one sentence prefixed `pigeon: `;
//! - 2: a usage error (clap's own report).

mod bench;
mod broker;
mod confirm;
mod consume;
mod dlq;
mod exec;
mod failure;
mod group;
mod message;
mod output;
mod produce;
mod read;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pigeon_client::client::DEFAULT_BROKER_ADDR;

use failure::Failure;

/// The command-line client of the Pigeon message broker.
#[derive(Debug, Parser)]
#[command(name = "pigeon", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Address of the broker's protocol listener (host:port).
    #[arg(
        long,
        global = true,
        env = "PIGEON_BROKER",
        default_value = DEFAULT_BROKER_ADDR,
        value_name = "ADDR"
    )]
    broker: String,

    #[command(flatten)]
    connection: failure::ConnectionArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Publish one message per line of standard input.
    Produce(produce::ProduceArgs),
    /// Replay a topic's records without a group, from a start point to the
    /// end of the log (or follow it).
    Read(read::ReadArgs),
    /// Create, list, describe, seek, pause, resume and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Receive a group's messages: print (or run a command on) and ack each.
    Consume(consume::ConsumeArgs),
    /// A message's state in a consumer group.
    #[command(subcommand)]
    Message(message::MessageCommand),
    /// The dead-letter queue of a consumer group.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Load generator: measure throughput and latency of produce, consume
    /// and end to end (on a bench-* topic, deleted and created afresh; another
    /// existing topic needs --recreate).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The broker itself: version, uptime, settings in effect, disk usage.
    #[command(subcommand)]
    Broker(broker::BrokerCommand),
}

/// Parses the arguments, runs the command and turns its outcome into an
/// exit code. Never panics on a runtime error.
pub(crate) fn main() -> ExitCode {
    // Usage errors exit here with code 2 (and --help/--version with 0).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return report(anyhow::anyhow!("cannot start the async runtime: {err}")),
    };
    let outcome = runtime.block_on(run(cli));
    // Background tasks (connection, producer senders) have nothing left to do.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    failure::set_connection(&cli.connection)?;
    match cli.command {
        Command::Topic(command) => topic::run(&cli.broker, command).await,
        Command::Produce(args) => produce::run(&cli.broker, args).await,
        Command::Read(args) => read::run(&cli.broker, args).await,
        Command::Group(command) => group::run(&cli.broker, command).await,
        Command::Consume(args) => consume::run(&cli.broker, args).await,
        Command::Message(command) => message::run(&cli.broker, command).await,
        Command::Dlq(command) => dlq::run(&cli.broker, command).await,
        Command::Bench(command) => bench::run(&cli.broker, command).await,
        Command::Broker(command) => broker::run(&cli.broker, command).await,
    }
}

fn report(failure: Failure) -> ExitCode {
    if failure::is_closed_stdout(&failure) {
        // The reader of our output went away (`| head`): nothing to say.
        return ExitCode::SUCCESS;
    }
    eprintln!("pigeon: {failure:#}");
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_argument_grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
