//! The writer pool: a fixed set of OS threads that run the writers of every
//! partition log and group journal, instead of one thread per log.
//!
//! ## What it owns
//!
//! - `threads` **worker threads** (`log-writer-N`), started once, taking
//!   [`Job`]s from one run queue (FIFO). A job is a log with work: queued
//!   commands, or a timer that came due. A worker runs one *turn* of the
//!   job (see [`committer`](super::committer): at most one commit group,
//!   then the timers that are due) and takes the next job.
//! - one **timer thread** (`log-timers`) holding, for each log that has a
//!   timer (the interval policy's sync, a background seal's poll, the idle
//!   checkpoint, periodic retention), the instant it comes due; at that
//!   instant it puts the log on the run queue.
//!
//! Nothing else: the logs' state (the [`Log`](super::writer::Log), its
//! command queue) stays with each log, and an idle log (no command queued,
//! no timer due) is on no queue and holds no thread, only its state and
//! one timer entry (retention, every minute; once after its last write,
//! the idle checkpoint's).
//!
//! ## Invariants
//!
//! - **One turn at a time per log.** A job is on the run queue at most once:
//!   [`Job::schedule`] queues it only if its `scheduled` flag was clear,
//!   and the flag is cleared only after its turn ends. So a log's commands
//!   are taken and committed in order by one worker at a time, exactly as
//!   by a thread of its own; the crash story of the log (what is on disk
//!   when, what recovery does: [`writer`](super::writer),
//!   [`seal`](super::writer::seal)) is unchanged, because the same code runs
//!   the same steps in the same order, only on a worker chosen per turn.
//! - **No lost wake-up.** Whoever queues a command schedules the log after
//!   queueing it; a turn, after clearing the flag, looks at the queue again
//!   and schedules the log if anything is there. Either the turn sees the
//!   command or the sender sees the flag clear.
//! - **Fairness.** A turn does a bounded amount of work (one commit group:
//!   at most [`MAX_GROUP_BYTES`](super::committer::MAX_GROUP_BYTES) of
//!   batches or a queue's worth of commands); a log with more queued goes
//!   to the back of the run queue. A busy log cannot keep a worker from the
//!   others: each log with work gets a turn within one round of the queue.
//! - **Blocking is local.** A turn blocks its worker on the disk (write,
//!   `fdatasync`) as the log's own thread did; with `threads` workers at
//!   most `threads` commits run at once. A turn never waits for another
//!   log or for the async runtime, so the pool cannot deadlock on itself.
//!   A background seal runs on the [`sealer`](super::sealer)'s threads
//!   (at most one per log at a time, see [`seal`](super::writer::seal)),
//!   never on a worker.
//!
//! The pool is process-wide ([`WriterPool::global`]): the broker sizes it
//! once at start ([`WriterPool::init`], setting `writer_threads`), before
//! opening any log; tests that open logs without it get the default size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Something the pool runs, one turn at a time.
pub(crate) trait Job: Send + Sync + 'static {
    /// The job's flag: set while it is queued or running.
    fn scheduled(&self) -> &AtomicBool;
    /// One turn: a bounded amount of work. Called with the flag set; the
    /// pool clears it afterwards and calls [`Job::has_work`].
    fn turn(self: Arc<Self>, pool: &WriterPool);
    /// Whether the job has work queued (looked at after the flag is cleared).
    fn has_work(&self) -> bool;
}

/// Puts `job` on the run queue unless it is already there or running.
pub(crate) fn schedule(pool: &WriterPool, job: Arc<dyn Job>) {
    if !job.scheduled().swap(true, Ordering::SeqCst) {
        pool.push(job);
    }
}

/// The default number of worker threads: twice the CPUs (a turn spends
/// most of its time waiting for the disk), at least 4, at most 32.
pub fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cpus).clamp(4, 32)
}

/// See the module doc.
pub struct WriterPool {
    queue: flume::Sender<Arc<dyn Job>>,
    timers: Timers,
    threads: usize,
}

impl std::fmt::Debug for WriterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<&'static WriterPool> = OnceLock::new();

impl WriterPool {
    /// Starts the process-wide pool with `threads` workers; returns `false`
    /// (and changes nothing) if it was already started.
    pub fn init(threads: usize) -> bool {
        let mut started = false;
        GLOBAL.get_or_init(|| {
            started = true;
            WriterPool::start(threads)
        });
        started
    }

    /// The process-wide pool, started with [`default_threads`] if
    /// [`init`](Self::init) was not called.
    pub fn global() -> &'static WriterPool {
        GLOBAL.get_or_init(|| WriterPool::start(default_threads()))
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Starts a pool of `threads` workers (at least one) and its timer
    /// thread; it lives as long as the process.
    pub(crate) fn start(threads: usize) -> &'static WriterPool {
        let threads = threads.max(1);
        let (queue, jobs) = flume::unbounded::<Arc<dyn Job>>();
        let pool: &'static WriterPool = Box::leak(Box::new(WriterPool {
            queue,
            timers: Timers::default(),
            threads,
        }));
        for n in 0..threads {
            let jobs = jobs.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("log-writer-{n}"))
                .spawn(move || {
                    while let Ok(job) = jobs.recv() {
                        run_turn(pool, job);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a log writer thread");
            }
        }
        let spawned = std::thread::Builder::new()
            .name("log-timers".into())
            .spawn(move || pool.timers.run(pool));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the log timer thread");
        }
        pool
    }

    fn push(&self, job: Arc<dyn Job>) {
        // The workers hold the receiver for the life of the process.
        let _ = self.queue.send(job);
    }

    /// Schedules `job` at `at` (if it still exists then).
    pub(crate) fn wake_at(&self, at: Instant, job: Weak<dyn Job>) {
        self.timers.add(at, job);
    }
}

/// One turn of `job`, then the flag cleared and the queue looked at again.
fn run_turn(pool: &WriterPool, job: Arc<dyn Job>) {
    job.clone().turn(pool);
    job.scheduled().store(false, Ordering::SeqCst);
    if job.has_work() {
        schedule(pool, job);
    }
}

/// The timer thread's state: due instants, earliest first.
#[derive(Default)]
struct Timers {
    heap: Mutex<BinaryHeap<Reverse<Entry>>>,
    changed: Condvar,
    sequence: AtomicU64,
}

struct Entry {
    at: Instant,
    sequence: u64,
    job: Weak<dyn Job>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

impl Timers {
    fn add(&self, at: Instant, job: Weak<dyn Job>) {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut heap = self.heap.lock();
        let earliest = heap.peek().is_none_or(|Reverse(first)| at < first.at);
        heap.push(Reverse(Entry { at, sequence, job }));
        if earliest {
            self.changed.notify_one();
        }
    }

    fn run(&self, pool: &WriterPool) {
        let mut heap = self.heap.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while heap.peek().is_some_and(|Reverse(first)| first.at <= now) {
                if let Some(Reverse(entry)) = heap.pop() {
                    due.push(entry.job);
                }
            }
            if !due.is_empty() {
                drop(heap);
                for job in due {
                    if let Some(job) = job.upgrade() {
                        schedule(pool, job);
                    }
                }
                heap = self.heap.lock();
                continue;
            }
            match heap.peek().map(|Reverse(first)| first.at) {
                Some(at) => {
                    self.changed.wait_until(&mut heap, at);
                }
                None => self.changed.wait(&mut heap),
            }
        }
    }
}
