//! [`Workload`]: what one benchmark run does, with the defaults of
//! `pigeon bench`, and the checks that make a run meaningful before it
//! starts ([`Workload::validate`]).
//!
//! A workload is plain data: the harness ([`super::run`]) reads it and
//! never changes it, so the same value can drive Pigeon and the peers.

use std::time::Duration;

use super::floor::ProbeSettings;
use super::payload::STAMP_LEN;
use super::target::{PublishSettings, SubscribeSettings};

/// Which of the three runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Publish as fast as acks come back (or at `rate`); latency is
    /// publish→ack per message.
    Produce,
    /// Pre-load the topic (untimed), then receive and ack everything;
    /// latency is one batch's receive→ack cycle.
    Consume,
    /// Publish and consume at once; latency is publish→deliver per message,
    /// plus publish→ack in the `ack_*` fields.
    E2e,
}

impl WorkloadKind {
    /// The name used on the command line and in reports.
    ///
    /// ```
    /// use pigeon_cli::bench::WorkloadKind;
    /// assert_eq!(WorkloadKind::E2e.as_str(), "e2e");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Produce => "produce",
            WorkloadKind::Consume => "consume",
            WorkloadKind::E2e => "e2e",
        }
    }

    /// What the primary latency of this workload measures.
    pub fn latency(self) -> &'static str {
        match self {
            WorkloadKind::Produce => "publish→ack per message",
            WorkloadKind::Consume => "receive→ack per batch",
            WorkloadKind::E2e => "publish→deliver per message",
        }
    }

    /// Whether the workload publishes while it is timed.
    pub fn publishes(self) -> bool {
        self != WorkloadKind::Consume
    }

    /// Whether the workload consumes (so needs subscribers).
    pub fn consumes(self) -> bool {
        self != WorkloadKind::Produce
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One benchmark run: how much, how fast, by how many.
///
/// ```
/// use pigeon_cli::bench::{Workload, WorkloadKind};
/// let mut workload = Workload::new(WorkloadKind::E2e);
/// workload.rate = Some(10_000);
/// assert!(workload.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Workload {
    /// Which run.
    pub kind: WorkloadKind,
    /// Total messages (when `duration` is `None`), over all producers.
    pub messages: u64,
    /// Run for this long instead (produce and e2e only).
    pub duration: Option<Duration>,
    /// Bytes per value, at least 8: the first 8 carry the publish time, the
    /// next 8 (when there are 16 or more) the message's sequence number.
    pub value_size: usize,
    /// Publishers, each on its own connection.
    pub producers: usize,
    /// Group members, each on its own connection.
    pub consumers: usize,
    /// Partitions of the topic.
    pub partitions: u32,
    /// How publishers batch.
    pub publish: PublishSettings,
    /// How subscribers receive.
    pub subscribe: SubscribeSettings,
    /// Fixed target rate in messages per second over all producers; `None`
    /// publishes as fast as acks allow.
    pub rate: Option<u64>,
    /// Draw a live progress bar on stderr (only where stderr is a terminal).
    pub progress: bool,
    /// Most acks one publisher may have outstanding; publishing waits for
    /// the oldest beyond this (bounds memory whatever the target does).
    pub window: usize,
    /// A run fails when consumers see no new message for this long
    /// (instead of hanging on a lost message).
    pub stall_timeout: Duration,
    /// Measure the disk's fsync floor alongside the timed phase
    /// ([`super::floor`]); `None` measures nothing.
    pub fsync_probe: Option<ProbeSettings>,
    /// The server process, to report its CPU time over the timed phase
    /// (from `/proc/<pid>/stat`; it must run on this machine).
    pub server_pid: Option<u32>,
}

/// Default number of messages of `produce` and `consume`.
pub const DEFAULT_MESSAGES: u64 = 1_000_000;
/// Default number of messages of `e2e`.
pub const DEFAULT_E2E_MESSAGES: u64 = 100_000;

impl Workload {
    /// The defaults of `pigeon bench <kind>`: 1,000,000 messages (100,000
    /// for e2e) of 100 bytes, one producer, one consumer, one partition,
    /// 1 MiB batches with 5 ms linger (0 for e2e, which measures latency),
    /// receives of up to 1,000 messages, 30 s leases, no rate limit,
    /// 100,000 outstanding acks per publisher, 60 s stall timeout, no
    /// fsync probe, no server pid.
    pub fn new(kind: WorkloadKind) -> Workload {
        let linger = match kind {
            WorkloadKind::E2e => Duration::ZERO,
            _ => Duration::from_millis(5),
        };
        Workload {
            kind,
            messages: match kind {
                WorkloadKind::E2e => DEFAULT_E2E_MESSAGES,
                _ => DEFAULT_MESSAGES,
            },
            duration: None,
            value_size: 100,
            producers: 1,
            consumers: 1,
            partitions: 1,
            publish: PublishSettings {
                batch_bytes: 1024 * 1024,
                linger,
                in_flight: pigeon_client::client::MAX_IN_FLIGHT_BATCHES,
            },
            subscribe: SubscribeSettings {
                max_messages: 1000,
                ack_timeout: Duration::from_secs(30),
            },
            rate: None,
            progress: false,
            window: 100_000,
            stall_timeout: Duration::from_secs(60),
            fsync_probe: None,
            server_pid: None,
        }
    }

    /// Refuses a workload that cannot run or would measure nothing, with
    /// one sentence naming the setting.
    ///
    /// ```
    /// use pigeon_cli::bench::{Workload, WorkloadKind};
    /// let mut workload = Workload::new(WorkloadKind::Produce);
    /// workload.value_size = 4;
    /// assert!(workload.validate().is_err());
    /// ```
    pub fn validate(&self) -> anyhow::Result<()> {
        let fail = |what: &str| Err(anyhow::anyhow!("{what}"));
        if self.value_size < STAMP_LEN {
            return fail("the value size must be at least 8 bytes (they carry the publish time)");
        }
        if self.producers == 0 {
            return fail("there must be at least one producer");
        }
        if self.kind.consumes() && self.consumers == 0 {
            return fail("there must be at least one consumer");
        }
        if self.partitions == 0 {
            return fail("there must be at least one partition");
        }
        match self.duration {
            Some(_) if self.kind == WorkloadKind::Consume => {
                return fail(
                    "the consume workload takes a message count (it pre-loads them), not a duration",
                );
            }
            Some(duration) if duration.is_zero() => return fail("the duration must not be zero"),
            None if self.messages == 0 => return fail("the message count must not be zero"),
            _ => {}
        }
        if self.rate == Some(0) {
            return fail("the rate must be at least 1 message per second");
        }
        if self.subscribe.max_messages == 0 {
            return fail("a receive must be allowed at least 1 message");
        }
        if self.publish.batch_bytes == 0 {
            return fail("the batch size must not be zero");
        }
        if self.window == 0 {
            return fail("the window of outstanding acks must not be zero");
        }
        if self.fsync_probe.as_ref().is_some_and(|p| p.every.is_zero()) {
            return fail("the fsync probe needs a pause between its rounds (at least 1 ms)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_workload_is_valid() {
        for kind in [
            WorkloadKind::Produce,
            WorkloadKind::Consume,
            WorkloadKind::E2e,
        ] {
            let workload = Workload::new(kind);
            assert!(workload.validate().is_ok(), "{kind}");
            assert!(workload.value_size >= STAMP_LEN);
        }
        assert_eq!(
            Workload::new(WorkloadKind::E2e).publish.linger,
            Duration::ZERO
        );
    }

    #[test]
    fn a_timed_consume_run_is_refused() {
        let mut workload = Workload::new(WorkloadKind::Consume);
        workload.duration = Some(Duration::from_secs(1));
        let err = workload.validate().expect_err("refused");
        assert!(err.to_string().contains("message count"), "{err}");
    }

    #[test]
    fn zero_counts_and_rates_are_refused() {
        let base = Workload::new(WorkloadKind::E2e);
        let cases: [fn(&mut Workload); 5] = [
            |w| w.messages = 0,
            |w| w.consumers = 0,
            |w| w.producers = 0,
            |w| w.rate = Some(0),
            |w| w.partitions = 0,
        ];
        for change in cases {
            let mut workload = base.clone();
            change(&mut workload);
            assert!(workload.validate().is_err(), "{workload:?}");
        }
    }
}
