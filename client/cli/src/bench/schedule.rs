//! When each message is published: as fast as possible ([`Free`] order),
//! or at a fixed rate by the clock ([`Schedule`], driven by a [`Pacer`]
//! thread).
//!
//! ## Coordinated omission
//!
//! A load generator that sends the next message only after the last one
//! went out *coordinates* with the system it measures: while the system
//! stalls, the generator stops sending, so the messages that should have
//! gone out during the stall are never measured, and the percentiles look
//! better than what users at that rate would see.
//!
//! With a rate `r`, message `i` (numbered over all producers) is *due* at
//! `start + i / r`, whatever happened before: the [`Pacer`] hands index
//! `i` to producer `i mod producers` at that time, and the harness stamps
//! the message with its due time, not with the time it actually went out.
//! Every latency (publish→ack and publish→deliver) is measured from that
//! stamp, so time a message spent waiting behind a stalled system — in
//! the pacer's channel, in the publisher's full buffer, in a full window
//! of acks — counts against the system. A producer that falls behind
//! catches up by publishing back to back; nothing is skipped.
//!
//! The pacer is an OS thread sleeping with `std::thread::sleep`, not a
//! tokio timer: tokio timers have 1 ms granularity, which would add up to
//! a millisecond of the harness's own lateness to every measurement. How
//! late messages actually went out is reported (`schedule_lag_*`), so the
//! harness's share of a latency can be told apart.
//!
//! ## Invariants
//!
//! - Indices are handed out in increasing order, each exactly once, over
//!   bounded channels (memory stays bounded when producers fall behind:
//!   the pacer waits, and the stamps keep charging the lateness).
//! - The pacer stops when every index is out, when the run stops, or when
//!   a producer went away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::payload::Epoch;

/// Indices queued per producer before the pacer waits.
const PACER_QUEUE: usize = 4096;
/// Longest single sleep of the pacer, so that it notices a stop.
const PACER_MAX_SLEEP: Duration = Duration::from_millis(50);

/// A fixed rate: message `i` is due `i / rate` seconds after `start_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// When message 0 is due, in ns since the run's epoch.
    pub start_ns: u64,
    /// Messages per second over all producers (at least 1).
    pub rate: u64,
}

impl Schedule {
    /// When message `index` is due, in ns since the epoch.
    ///
    /// ```
    /// use pigeon_cli::bench::schedule::Schedule;
    /// let schedule = Schedule { start_ns: 1_000, rate: 10_000 };
    /// assert_eq!(schedule.due_ns(0), 1_000);
    /// assert_eq!(schedule.due_ns(3), 1_000 + 300_000);
    /// ```
    pub fn due_ns(&self, index: u64) -> u64 {
        let offset = u128::from(index) * 1_000_000_000 / u128::from(self.rate.max(1));
        self.start_ns
            .saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// How many messages are due before `duration` has passed since the
    /// start (the messages of a timed run).
    ///
    /// ```
    /// use std::time::Duration;
    /// use pigeon_cli::bench::schedule::Schedule;
    /// let schedule = Schedule { start_ns: 0, rate: 10_000 };
    /// assert_eq!(schedule.count_within(Duration::from_secs(30)), 300_000);
    /// ```
    pub fn count_within(&self, duration: Duration) -> u64 {
        // Smallest n with due(n) >= duration: ceil(duration × rate / 1 s).
        let scaled = duration.as_nanos() * u128::from(self.rate.max(1));
        u64::try_from(scaled.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
    }
}

/// The indices one producer publishes, and the stamp of each.
#[derive(Debug)]
pub enum IndexSource {
    /// As fast as possible: `next`, `next + step`, … below `limit`, or
    /// until `until_ns` on the epoch; stamped with the time of publishing.
    Free(Free),
    /// At a fixed rate: indices from the pacer, stamped with their due time.
    Paced {
        /// Indices due now, from the pacer.
        indices: mpsc::Receiver<u64>,
        /// The schedule they follow.
        schedule: Schedule,
    },
}

/// The free-running order of one producer.
#[derive(Debug, Clone, Copy)]
pub struct Free {
    /// The next index.
    pub next: u64,
    /// Producers in the run: each takes every `step`-th index.
    pub step: u64,
    /// Indices end below this.
    pub limit: u64,
    /// No index after this time (ns since the epoch), if set.
    pub until_ns: Option<u64>,
}

impl IndexSource {
    /// The next `(index, stamp)` to publish, waiting for the pacer if
    /// paced; `None` when this producer is done. Cancel safe.
    pub async fn next(&mut self, epoch: &Epoch) -> Option<(u64, u64)> {
        match self {
            IndexSource::Free(free) => {
                let now = epoch.ns();
                if free.next >= free.limit || free.until_ns.is_some_and(|until| now >= until) {
                    return None;
                }
                let index = free.next;
                free.next = free.next.saturating_add(free.step);
                Some((index, now))
            }
            IndexSource::Paced { indices, schedule } => {
                let index = indices.recv().await?;
                Some((index, schedule.due_ns(index)))
            }
        }
    }

    /// The free-running sources of `producers` producers sharing `limit`
    /// indices (or running until `until_ns`).
    pub fn free(producers: usize, limit: u64, until_ns: Option<u64>) -> Vec<IndexSource> {
        let step = producers.max(1) as u64;
        (0..step)
            .map(|next| {
                IndexSource::Free(Free {
                    next,
                    step,
                    limit,
                    until_ns,
                })
            })
            .collect()
    }
}

/// The thread that hands out indices on schedule; it stops when dropped.
#[derive(Debug)]
pub struct Pacer {
    stop: Arc<AtomicBool>,
}

impl Pacer {
    /// Starts pacing `limit` indices over `producers` producers; returns
    /// the pacer and one paced source per producer.
    pub fn start(
        epoch: Epoch,
        schedule: Schedule,
        limit: u64,
        producers: usize,
    ) -> std::io::Result<(Pacer, Vec<IndexSource>)> {
        let (senders, sources): (Vec<_>, Vec<_>) = (0..producers.max(1))
            .map(|_| {
                let (sender, indices) = mpsc::channel(PACER_QUEUE);
                (sender, IndexSource::Paced { indices, schedule })
            })
            .unzip();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        // Detached: it ends by itself (see `pace`), and joining it could
        // block a runtime thread for a sleep.
        std::thread::Builder::new()
            .name("pigeon-bench-pacer".into())
            .spawn(move || pace(epoch, schedule, limit, &senders, &stopped))?;
        Ok((Pacer { stop }, sources))
    }
}

impl Drop for Pacer {
    /// Stops the pacer at its next wake-up (at most 50 ms away; one
    /// waiting on a full queue is freed when that producer's source is
    /// dropped).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The pacer's loop: sleep until the next index is due, then hand out
/// every index due by now.
fn pace(
    epoch: Epoch,
    schedule: Schedule,
    limit: u64,
    senders: &[mpsc::Sender<u64>],
    stop: &AtomicBool,
) {
    let producers = senders.len() as u64;
    let mut index = 0;
    while index < limit && !stop.load(Ordering::Relaxed) {
        let now = epoch.ns();
        let due = schedule.due_ns(index);
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now).min(PACER_MAX_SLEEP));
            continue;
        }
        while index < limit && schedule.due_ns(index) <= now {
            // Wraps within `producers`, so the cast is lossless.
            let producer = (index % producers) as usize;
            if senders[producer].blocking_send(index).is_err() {
                return;
            }
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_spaced_by_one_over_the_rate() {
        let schedule = Schedule {
            start_ns: 5,
            rate: 3,
        };
        assert_eq!(schedule.due_ns(0), 5);
        assert_eq!(schedule.due_ns(1), 5 + 333_333_333);
        assert_eq!(schedule.due_ns(2), 5 + 666_666_666);
        assert_eq!(schedule.due_ns(3), 5 + 1_000_000_000);
    }

    #[test]
    fn due_times_never_overflow() {
        let schedule = Schedule {
            start_ns: u64::MAX - 10,
            rate: 1,
        };
        assert_eq!(schedule.due_ns(u64::MAX), u64::MAX);
        let fast = Schedule {
            start_ns: 0,
            rate: u64::MAX,
        };
        assert_eq!(fast.due_ns(u64::MAX), 1_000_000_000);
    }

    #[test]
    fn a_timed_run_sends_rate_times_duration_messages() {
        let schedule = Schedule {
            start_ns: 123,
            rate: 10_000,
        };
        assert_eq!(schedule.count_within(Duration::from_secs(30)), 300_000);
        assert_eq!(schedule.count_within(Duration::from_micros(150)), 2);
        assert_eq!(schedule.count_within(Duration::ZERO), 0);
        // Every counted message is due strictly before the end.
        let n = schedule.count_within(Duration::from_millis(7));
        assert!(schedule.due_ns(n - 1) - 123 < 7_000_000);
        assert!(schedule.due_ns(n) - 123 >= 7_000_000);
    }

    #[test]
    fn free_sources_share_the_indices_round_robin() {
        let epoch = Epoch::now();
        let mut sources = IndexSource::free(3, 8, None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut taken: Vec<Vec<u64>> = Vec::new();
        for source in &mut sources {
            let mut mine = Vec::new();
            while let Some((index, _)) = runtime.block_on(source.next(&epoch)) {
                mine.push(index);
            }
            taken.push(mine);
        }
        assert_eq!(taken, vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5]]);
    }

    #[test]
    fn the_pacer_hands_out_every_index_once_in_order_stamped_with_its_due_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let epoch = Epoch::now();
        let schedule = Schedule {
            start_ns: epoch.ns(),
            rate: 20_000,
        };
        let (pacer, sources) = Pacer::start(epoch, schedule, 200, 2).expect("pacer");
        let mut all = Vec::new();
        for mut source in sources {
            runtime.block_on(async {
                while let Some((index, stamp)) = source.next(&epoch).await {
                    assert_eq!(stamp, schedule.due_ns(index));
                    // Never handed out before it is due.
                    assert!(epoch.ns() >= stamp);
                    all.push(index);
                }
            });
        }
        drop(pacer);
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>());
    }
}
