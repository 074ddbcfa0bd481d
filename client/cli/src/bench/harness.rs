//! The harness: [`run`] drives one [`Workload`] against one [`Target`] and
//! measures it.
//!
//! ## Tasks
//!
//! - One *publish* task per producer, owning its [`Publisher`]: takes the
//!   next index from its [`IndexSource`] (free-running, or from the
//!   [`Pacer`] at a fixed rate), writes stamp and sequence number into the
//!   value, publishes, and keeps the returned ack futures in a
//!   `FuturesUnordered` of at most [`Workload::window`]; each ack is timed
//!   the moment it completes (the task polls completions while it waits to
//!   publish), never in publication order.
//! - One *consume* task per consumer, owning its [`Subscriber`]: receive a
//!   batch, count the messages not seen before ([`SeenSet`] by sequence
//!   number; by `attempt == 1` for values too short to carry one), ack the
//!   batch, until the run's expected count is reached.
//!
//! Every task records into its own [`Latency`]; the histograms are merged
//! once the tasks are done. Tasks share only atomics and the seen set
//! (locked once per received batch).
//!
//! ## Timed phases
//!
//! - produce: from the first publish until every publisher has closed
//!   (every ack is in).
//! - consume: the topic is pre-loaded first (untimed); then from the start
//!   of the consumers until the batch holding the last new message was
//!   acked. Latency: one sample per batch, from the call to `receive` that
//!   returned it until its `ack` returned (for a target whose ack returns
//!   once sent, before the broker confirmed it — Pigeon's does: the Settle
//!   goes out and the next Receive is pipelined behind it).
//! - e2e: subscribers join first; then from the first publish until the
//!   last new message was received. Latency: publish→deliver per message
//!   (receive time minus the stamp in the value), and publish→ack from the
//!   publishers in the `ack_*` fields.
//!
//! Around each timed phase a [`Window`] runs the fsync probe and reads the
//! target's stage histograms (opened once publishers and subscribers are
//! ready, closed once the last task is done).
//!
//! ## Invariants
//!
//! - Memory is bounded whatever the target does: at most `window` acks
//!   outstanding per publisher, bounded pacer queues, a seen set of one bit
//!   per message of reordering span (at most [`MAX_SPAN`](super::seen::MAX_SPAN)).
//! - A message counts once, however often it is delivered.
//! - A run never hangs on a lost message: consumers fail after
//!   [`Workload::stall_timeout`] without a new message; the first failure
//!   of any task stops the others.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::task::JoinSet;

use super::latency::Latency;
use super::payload::{Epoch, ValueFactory, sequence_of, stamp_of};
use super::progress::{Goal, Progress};
use super::report::{Measured, Report};
use super::schedule::{IndexSource, Pacer, Schedule};
use super::seen::SeenSet;
use super::target::{Publisher, Received, Subscriber, Target};
use super::window::Window;
use super::workload::{Workload, WorkloadKind};

/// The consumer group every run consumes as.
pub const GROUP: &str = "pigeon-bench";

/// Longest wait of one receive, so that consumers notice the end of a run
/// (or a stall) promptly.
const RECEIVE_WAIT: Duration = Duration::from_millis(100);

/// Runs `workload` against `target` on `topic`, created afresh with
/// [`Target::create_topic`], and reports what was measured.
///
/// ```no_run
/// use pigeon_cli::bench::{PigeonTarget, Workload, WorkloadKind, run};
/// # async fn demo() -> anyhow::Result<()> {
/// let target = PigeonTarget::connect("127.0.0.1:7420").await?;
/// let report = run(&target, "bench-produce", &Workload::new(WorkloadKind::Produce)).await?;
/// println!("{}", report.to_json());
/// # Ok(()) }
/// ```
pub async fn run<T: Target>(
    target: &T,
    topic: &str,
    workload: &Workload,
) -> anyhow::Result<Report> {
    workload.validate()?;
    target
        .create_topic(topic, workload.partitions)
        .await
        .with_context(|| format!("cannot create topic {topic} on {}", target.name()))?;
    let measured = match workload.kind {
        WorkloadKind::Produce => produce(target, topic, workload).await?,
        WorkloadKind::Consume => consume(target, topic, workload).await?,
        WorkloadKind::E2e => end_to_end(target, topic, workload).await?,
    };
    Ok(Report::new(target.name(), workload, &measured))
}

/// The produce workload.
async fn produce<T: Target>(target: &T, topic: &str, w: &Workload) -> anyhow::Result<Measured> {
    let publishers = open_publishers(target, topic, w).await?;
    let window = Window::open(target, w).await?;
    let run = Arc::new(Run::new(w, u64::MAX));
    let (_pacer, sources) = sources(&run, w, true)?;
    let goal = goal(w);
    let progress = Progress::start(w.progress, "produce", goal, run.acked.clone(), run.epoch);
    let mut tasks = JoinSet::new();
    for (publisher, source) in publishers.into_iter().zip(sources) {
        tasks.spawn(publish(publisher, source, run.clone()));
    }
    let outcomes = join(&mut tasks, &run, w.producers).await?;
    let nanos = run.epoch.ns();
    let seen = window.close(target).await?;
    progress.finish();
    let (published, _) = merge(outcomes);
    Ok(Measured {
        messages: published.messages,
        nanos,
        primary: published.acks,
        acks: None,
        schedule_lag: published.lag,
        redeliveries: 0,
        seen,
    })
}

/// The consume workload: an untimed pre-load, then timed consumers.
async fn consume<T: Target>(target: &T, topic: &str, w: &Workload) -> anyhow::Result<Measured> {
    if w.progress {
        eprintln!("pre-loading {} messages into {topic}…", w.messages);
    }
    let publishers = open_publishers(target, topic, w).await?;
    let preload = Arc::new(Run::new(w, u64::MAX));
    let (_, sources) = sources(&preload, w, false)?;
    let mut tasks = JoinSet::new();
    for (publisher, source) in publishers.into_iter().zip(sources) {
        tasks.spawn(publish(publisher, source, preload.clone()));
    }
    join(&mut tasks, &preload, w.producers)
        .await
        .context("pre-loading the topic")?;

    let subscribers = open_subscribers(target, topic, w).await?;
    let window = Window::open(target, w).await?;
    let run = Arc::new(Run::new(w, w.messages));
    let progress = Progress::start(
        w.progress,
        "consume",
        Goal::Messages(w.messages),
        run.counted.clone(),
        run.epoch,
    );
    let mut tasks = JoinSet::new();
    for subscriber in subscribers {
        tasks.spawn(receive(subscriber, run.clone()));
    }
    let outcomes = join(&mut tasks, &run, 0).await?;
    let seen = window.close(target).await?;
    progress.finish();
    let (_, consumed) = merge(outcomes);
    Ok(Measured {
        messages: run.counted.load(Ordering::SeqCst),
        nanos: run.last_counted_ns.load(Ordering::SeqCst),
        primary: consumed.latency,
        acks: None,
        schedule_lag: None,
        redeliveries: consumed.redeliveries,
        seen,
    })
}

/// The e2e workload: subscribers first, then publishers and subscribers
/// together.
async fn end_to_end<T: Target>(target: &T, topic: &str, w: &Workload) -> anyhow::Result<Measured> {
    let subscribers = open_subscribers(target, topic, w).await?;
    let publishers = open_publishers(target, topic, w).await?;
    let expected = match w.duration {
        Some(_) => u64::MAX,
        None => w.messages,
    };
    let window = Window::open(target, w).await?;
    let run = Arc::new(Run::new(w, expected));
    let (_pacer, sources) = sources(&run, w, true)?;
    let progress = Progress::start(w.progress, "e2e", goal(w), run.counted.clone(), run.epoch);
    let mut tasks = JoinSet::new();
    for subscriber in subscribers {
        tasks.spawn(receive(subscriber, run.clone()));
    }
    for (publisher, source) in publishers.into_iter().zip(sources) {
        tasks.spawn(publish(publisher, source, run.clone()));
    }
    let outcomes = join(&mut tasks, &run, w.producers).await?;
    let seen = window.close(target).await?;
    progress.finish();
    let (published, consumed) = merge(outcomes);
    Ok(Measured {
        messages: run.counted.load(Ordering::SeqCst),
        nanos: run.last_counted_ns.load(Ordering::SeqCst),
        primary: consumed.latency,
        acks: Some(published.acks),
        schedule_lag: published.lag,
        redeliveries: consumed.redeliveries,
        seen,
    })
}

/// What the bar counts towards.
fn goal(w: &Workload) -> Goal {
    match w.duration {
        Some(duration) => Goal::Duration(duration),
        None => Goal::Messages(w.messages),
    }
}

async fn open_publishers<T: Target>(
    target: &T,
    topic: &str,
    w: &Workload,
) -> anyhow::Result<Vec<T::Publisher>> {
    let mut publishers = Vec::with_capacity(w.producers);
    for _ in 0..w.producers {
        let publisher = target
            .publisher(topic, &w.publish)
            .await
            .with_context(|| format!("cannot open a publisher to {topic}"))?;
        publishers.push(publisher);
    }
    Ok(publishers)
}

async fn open_subscribers<T: Target>(
    target: &T,
    topic: &str,
    w: &Workload,
) -> anyhow::Result<Vec<T::Subscriber>> {
    let mut subscribers = Vec::with_capacity(w.consumers);
    for _ in 0..w.consumers {
        let subscriber = target
            .subscriber(topic, GROUP, &w.subscribe)
            .await
            .with_context(|| format!("cannot join group {GROUP} of {topic}"))?;
        subscribers.push(subscriber);
    }
    Ok(subscribers)
}

/// One index source per producer; paced (with the pacer, which must live
/// as long as the run) when the workload has a rate and `timed`.
fn sources(
    run: &Run,
    w: &Workload,
    timed: bool,
) -> anyhow::Result<(Option<Pacer>, Vec<IndexSource>)> {
    let start_ns = run.epoch.ns();
    let until_ns = w
        .duration
        .map(|d| start_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
    match w.rate {
        Some(rate) if timed => {
            let schedule = Schedule { start_ns, rate };
            let limit = match w.duration {
                Some(duration) => schedule.count_within(duration),
                None => w.messages,
            };
            let (pacer, sources) = Pacer::start(run.epoch, schedule, limit, w.producers)
                .context("cannot start the pacer thread")?;
            Ok((Some(pacer), sources))
        }
        _ => {
            let limit = if until_ns.is_some() {
                u64::MAX
            } else {
                w.messages
            };
            Ok((None, IndexSource::free(w.producers, limit, until_ns)))
        }
    }
}

/// What every task of one run shares.
#[derive(Debug)]
struct Run {
    /// The run's clock; the timed phase starts at its zero.
    epoch: Epoch,
    kind: WorkloadKind,
    value_size: usize,
    window: usize,
    max_messages: usize,
    stall_timeout: Duration,
    /// Sequence numbers are below this (`u64::MAX` when not known).
    sequences: u64,
    /// Set when a task failed: everyone stops.
    stop: AtomicBool,
    /// Set when consumers counted every expected message.
    done: AtomicBool,
    /// Publishes acked so far.
    acked: Arc<AtomicU64>,
    /// Messages counted by consumers so far (each once).
    counted: Arc<AtomicU64>,
    /// Messages consumers must count (`u64::MAX` until known).
    expected: AtomicU64,
    /// When the last new message was counted (ns on the epoch).
    last_counted_ns: AtomicU64,
    seen: Mutex<SeenSet>,
}

impl Run {
    fn new(w: &Workload, expected: u64) -> Run {
        Run {
            epoch: Epoch::now(),
            kind: w.kind,
            value_size: w.value_size,
            window: w.window,
            max_messages: w.subscribe.max_messages,
            stall_timeout: w.stall_timeout,
            sequences: if w.duration.is_some() {
                u64::MAX
            } else {
                w.messages
            },
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
            acked: Arc::new(AtomicU64::new(0)),
            counted: Arc::new(AtomicU64::new(0)),
            expected: AtomicU64::new(expected),
            last_counted_ns: AtomicU64::new(0),
            seen: Mutex::new(SeenSet::new()),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst) || self.stopped()
    }

    /// The publishers are done: consumers must count `published` messages.
    fn expect(&self, published: u64) {
        self.expected.store(published, Ordering::SeqCst);
        if self.counted.load(Ordering::SeqCst) >= published {
            self.done.store(true, Ordering::SeqCst);
        }
    }

    /// Adds `fresh` new messages counted at `at_ns`.
    fn counted_at(&self, fresh: u64, at_ns: u64) {
        if fresh == 0 {
            return;
        }
        self.last_counted_ns.fetch_max(at_ns, Ordering::SeqCst);
        let total = self.counted.fetch_add(fresh, Ordering::SeqCst) + fresh;
        if total >= self.expected.load(Ordering::SeqCst) {
            self.done.store(true, Ordering::SeqCst);
        }
    }

    /// Fails once no new message came for the stall timeout.
    fn check_stall(&self, now_ns: u64) -> anyhow::Result<()> {
        let last = self.last_counted_ns.load(Ordering::SeqCst);
        let quiet = Duration::from_nanos(now_ns.saturating_sub(last));
        if quiet > self.stall_timeout {
            let expected = self.expected.load(Ordering::SeqCst);
            let expected = if expected == u64::MAX {
                "an unknown number".to_string()
            } else {
                expected.to_string()
            };
            anyhow::bail!(
                "no new message for {} s: {} of {expected} messages received (first missing: message {})",
                quiet.as_secs(),
                self.counted.load(Ordering::SeqCst),
                lock(&self.seen).first_missing()
            );
        }
        Ok(())
    }

    /// Counts the new messages of `batch`, received at `received_ns`;
    /// for e2e, records each new one's publish→deliver latency.
    fn count(
        &self,
        batch: &[Received],
        received_ns: u64,
        tally: &mut Consumed,
    ) -> anyhow::Result<u64> {
        let mut seen = lock(&self.seen);
        let mut fresh = 0;
        for message in batch {
            let Some(stamp) = stamp_of(&message.value) else {
                anyhow::bail!(
                    "received a value of {} bytes, which the harness did not publish",
                    message.value.len()
                );
            };
            let new = match sequence_of(&message.value) {
                Some(sequence) if sequence >= self.sequences => anyhow::bail!(
                    "received message number {sequence}, which the harness did not publish"
                ),
                Some(sequence) => seen.insert(sequence)?,
                None => message.attempt <= 1,
            };
            if !new {
                tally.redeliveries += 1;
                continue;
            }
            fresh += 1;
            if self.kind == WorkloadKind::E2e {
                tally.latency.record_ns(stamp, received_ns);
            }
        }
        Ok(fresh)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What one publish task measured.
#[derive(Debug)]
struct Published {
    messages: u64,
    acks: Latency,
    lag: Option<Latency>,
}

/// What one consume task measured.
#[derive(Debug, Default)]
struct Consumed {
    latency: Latency,
    redeliveries: u64,
}

#[derive(Debug)]
enum Outcome {
    Published(Published),
    Consumed(Consumed),
}

/// Waits for every task; on the first failure stops the others and
/// returns it. Once the `publishers` publish tasks are done, consumers
/// are told how many messages to expect.
async fn join(
    tasks: &mut JoinSet<anyhow::Result<Outcome>>,
    run: &Run,
    publishers: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    let mut publishing = publishers;
    let mut published = 0;
    while let Some(joined) = tasks.join_next().await {
        let failure = match joined {
            Ok(Ok(outcome)) => {
                if let Outcome::Published(p) = &outcome {
                    published += p.messages;
                    publishing -= 1;
                    if publishing == 0 {
                        run.expect(published);
                    }
                }
                outcomes.push(outcome);
                continue;
            }
            Ok(Err(err)) => err,
            Err(err) => anyhow::anyhow!("a benchmark task failed: {err}"),
        };
        run.stop.store(true, Ordering::SeqCst);
        tasks.abort_all();
        return Err(failure);
    }
    Ok(outcomes)
}

/// Merges the tasks' measurements: publishers' and consumers'.
fn merge(outcomes: Vec<Outcome>) -> (Published, Consumed) {
    let mut published = Published {
        messages: 0,
        acks: Latency::new(),
        lag: None,
    };
    let mut consumed = Consumed::default();
    for outcome in outcomes {
        match outcome {
            Outcome::Published(p) => {
                published.messages += p.messages;
                published.acks.merge(&p.acks);
                if let Some(lag) = p.lag {
                    published.lag.get_or_insert_with(Latency::new).merge(&lag);
                }
            }
            Outcome::Consumed(c) => {
                consumed.latency.merge(&c.latency);
                consumed.redeliveries += c.redeliveries;
            }
        }
    }
    (published, consumed)
}

/// A completed ack: its outcome, the message's index and its stamp.
type Done = (anyhow::Result<()>, u64, u64);

/// An ack future with the message's index and stamp.
///
/// The ack is polled outside tokio's cooperative budget: once a task has
/// used its budget, tokio's channels answer `Pending` and wake the task at
/// once, and a `FuturesUnordered` of many such acks would re-poll every one
/// of them on each poll (measured: 5× the CPU of the whole run). The
/// publish task still yields, through the publisher's own back-pressure.
async fn tagged<A>(ack: A, index: u64, stamp: u64) -> Done
where
    A: Future<Output = anyhow::Result<()>>,
{
    (tokio::task::unconstrained(ack).await, index, stamp)
}

impl Published {
    /// Records `first` and every other ack already complete in `pending`,
    /// all at one reading of the clock (acks of one batch complete
    /// together; one reading each would only cost time).
    fn acked<F>(
        &mut self,
        first: Done,
        pending: &mut FuturesUnordered<F>,
        run: &Run,
    ) -> anyhow::Result<()>
    where
        F: Future<Output = Done>,
    {
        let now = run.epoch.ns();
        let mut count = 0;
        let mut next = Some(first);
        while let Some((result, index, stamp)) = next {
            result.with_context(|| format!("message {index} was not acknowledged"))?;
            self.acks.record_ns(stamp, now);
            count += 1;
            next = pending.next().now_or_never().flatten();
        }
        run.acked.fetch_add(count, Ordering::Relaxed);
        Ok(())
    }
}

/// One publish task: publishes what `source` hands out, timing each ack.
async fn publish<P: Publisher>(
    mut publisher: P,
    mut source: IndexSource,
    run: Arc<Run>,
) -> anyhow::Result<Outcome> {
    let epoch = run.epoch;
    let mut tally = Published {
        messages: 0,
        acks: Latency::new(),
        lag: matches!(source, IndexSource::Paced { .. }).then(Latency::new),
    };
    let mut values = ValueFactory::new(run.value_size);
    let mut pending = FuturesUnordered::new();
    while !run.stopped() {
        // Wait for the next index (the pacer) while recording acks.
        let next = loop {
            tokio::select! {
                biased;
                Some(done) = pending.next(), if !pending.is_empty() => tally.acked(done, &mut pending, &run)?,
                next = source.next(&epoch) => break next,
            }
        };
        let Some((index, stamp)) = next else { break };
        if let Some(lag) = &mut tally.lag {
            lag.record_ns(stamp, epoch.ns());
        }
        let value = values.make(stamp, index);
        let publishing = publisher.publish(value);
        tokio::pin!(publishing);
        // Wait for buffer space while recording acks.
        let ack = loop {
            tokio::select! {
                biased;
                Some(done) = pending.next(), if !pending.is_empty() => tally.acked(done, &mut pending, &run)?,
                ack = &mut publishing => break ack.with_context(|| format!("cannot publish message {index}"))?,
            }
        };
        pending.push(tagged(ack, index, stamp));
        tally.messages += 1;
        while pending.len() >= run.window {
            if let Some(done) = pending.next().await {
                tally.acked(done, &mut pending, &run)?;
            }
        }
    }
    // Close while still timing the last acks as they complete.
    let drain = async {
        while let Some(done) = pending.next().await {
            tally.acked(done, &mut pending, &run)?;
        }
        anyhow::Ok(())
    };
    let (closed, drained) = tokio::join!(publisher.close(), drain);
    drained?;
    closed.context("cannot close a publisher")?;
    Ok(Outcome::Published(tally))
}

/// One consume task: receives, counts and acks until the run is done.
async fn receive<S: Subscriber>(mut subscriber: S, run: Arc<Run>) -> anyhow::Result<Outcome> {
    let epoch = run.epoch;
    let mut tally = Consumed::default();
    while !run.finished() {
        let started = epoch.ns();
        let batch = subscriber
            .receive(run.max_messages, RECEIVE_WAIT)
            .await
            .context("cannot receive")?;
        let received = epoch.ns();
        let fresh = if batch.is_empty() {
            0
        } else {
            let fresh = run.count(&batch, received, &mut tally)?;
            subscriber.ack().await.context("cannot ack")?;
            fresh
        };
        if fresh == 0 {
            run.check_stall(received)?;
            continue;
        }
        let counted_at = match run.kind {
            WorkloadKind::Consume => {
                let acked = epoch.ns();
                tally.latency.record_ns(started, acked);
                acked
            }
            _ => received,
        };
        run.counted_at(fresh, counted_at);
    }
    if !run.stopped() {
        subscriber
            .close()
            .await
            .context("cannot close a subscriber")?;
    }
    Ok(Outcome::Consumed(tally))
}
