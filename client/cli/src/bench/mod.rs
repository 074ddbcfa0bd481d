//! The load generator behind `pigeon bench`: workloads, the harness that
//! runs them against any [`Target`], and the figures it reports.
//!
//! ```no_run
//! use pigeon_cli::bench::{PigeonTarget, Workload, WorkloadKind, run};
//! # async fn demo() -> anyhow::Result<()> {
//! let target = PigeonTarget::connect("127.0.0.1:7420").await?;
//! let mut workload = Workload::new(WorkloadKind::E2e);
//! workload.rate = Some(10_000);
//! let report = run(&target, "bench-e2e", &workload).await?;
//! println!("p99 publish→deliver: {} µs", report.p99_us);
//! # Ok(()) }
//! ```
//!
//! ## Workloads
//!
//! | workload | timed | primary latency | `ack_*` |
//! | --- | --- | --- | --- |
//! | `produce` | publishing `messages` (or for `duration`) until every ack is in | publish→ack, per message | — |
//! | `consume` | after an untimed pre-load: receiving and acking all `messages` | receive→ack, per batch | — |
//! | `e2e` | publishing and consuming at once, until the last message is received | publish→deliver, per message | publish→ack |
//!
//! ## How latency is measured
//!
//! - One clock: [`payload::Epoch`], a monotonic `Instant` taken when the
//!   timed phase starts; publishers write *nanoseconds since the epoch*
//!   into the first 8 bytes of each value, consumers in the same process
//!   subtract it from their own reading of the same clock.
//! - With a rate, every latency starts at the message's *scheduled* time,
//!   not when it actually went out, against coordinated omission; see
//!   [`schedule`].
//! - Values are recorded in µs into an HdrHistogram per task (3
//!   significant digits), merged at the end ([`latency`]).
//! - Each message counts once: consumers deduplicate by the sequence number
//!   in bytes 8..16 of the value ([`seen`]); redeliveries are reported
//!   apart.
//!
//! ## Next to the figures
//!
//! - The disk's floor ([`floor`]): with [`Workload::fsync_probe`], a
//!   thread appends 4 KiB and `fdatasync`s every 10 ms in the given
//!   directory for the whole timed phase; its p50/p99/p99.9 are reported
//!   with the run's latencies, so a durable ack latency is read against
//!   what the disk allowed at that moment.
//! - Where the time went ([`stages`]): a target that exposes stage
//!   histograms (Pigeon, with [`PigeonTarget::with_metrics`]) is read
//!   before and after the timed phase; the report carries each stage's
//!   count, mean and percentiles.
//!
//! ## Layout
//!
//! | module | job |
//! | --- | --- |
//! | [`target`] | the traits a system under test implements (Pigeon here, peers in `benches/`) |
//! | [`workload`] | [`Workload`]: what a run does, its defaults and checks |
//! | [`harness`] | [`run`]: publish and consume tasks, timed phases, counting |
//! | [`schedule`] | free-running and fixed-rate publishing (the pacer), coordinated omission |
//! | [`payload`] | the run's clock and the value layout (stamp, sequence number) |
//! | [`latency`] | HdrHistogram of µs per task, merged |
//! | [`seen`] | which messages were counted already (bounded bitmap) |
//! | [`progress`] | the live bar on stderr |
//! | [`floor`] | the disk's fsync floor: 4 KiB append + `fdatasync`, alongside a run or back to back (also used by `benches/side_by_side`) |
//! | [`stages`] | the broker's stage histograms, scraped from `/metrics` and subtracted |
//! | [`window`] | the probe and the stages, around the timed phase |
//! | [`report`] | [`Report`]: figures, JSON and text |
//! | [`pigeon`] | [`PigeonTarget`]: Pigeon through this crate's client |

pub mod floor;
pub mod harness;
pub mod latency;
pub mod payload;
pub mod pigeon;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod seen;
pub mod stages;
pub mod target;
pub mod window;
pub mod workload;

#[cfg(test)]
mod tests;

pub use harness::{GROUP, run};
pub use pigeon::PigeonTarget;
pub use report::Report;
pub use target::{PublishSettings, Publisher, Received, SubscribeSettings, Subscriber, Target};
pub use workload::{Workload, WorkloadKind};
