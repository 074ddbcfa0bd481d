//! The writer pool: a bounded set of OS threads that run the writers of
//! every partition log and group journal, instead of one thread per log.
//!
//! ## What it owns
//!
//! - **Worker threads** (`log-writer-N`) taking [`Job`]s from one run
//!   queue (FIFO). A job is a log with work: queued commands, or a timer
//!   that came due. A worker runs one *turn* of the job (see
//!   [`committer`](super::committer): at most one commit group, then the
//!   timers that are due) and takes the next job.
//! - **Elastic between a core and a most, while commits are small.** The
//!   `core` workers start with the pool and stay ([`default_threads`], or
//!   fewer if the most is lower). When a job is queued, more jobs wait than
//!   workers are idle, and the logs' recent commits are small syncs (a
//!   moving average below [`SMALL_COMMIT_BYTES`], a commit without an
//!   `fdatasync` counting as large, see [`WriterPool::note_commit`]),
//!   one more worker starts, up to `max` (`writer_threads`; by default
//!   [`default_most`]). A worker beyond the core exits when it finds no job
//!   for [`IDLE_EXIT`], or after a turn once commits are no longer small.
//!   Why the gate: under `fsync=always` a turn spends most of its time
//!   blocked in `fdatasync`, and the disk serves concurrent syncs of many
//!   files in parallel (this disk: 4,000–5,700 syncs/s
//!   from one thread, 19,000–25,000 from 16, `cargo bench --bench log --
//!   fsync_threads`). Thousands of busy partitions, each committing a few
//!   KiB per turn, are bound by that rate, and commit faster with more
//!   workers (10,000 partitions: 34k msgs/s with 4, 60k with 16). Where
//!   partitions have more to commit, fewer workers mean larger commits and
//!   fewer syncs for the same records, and more workers only split them:
//!   100 busy partitions did 490–497k msgs/s with 4 workers and 329–336k
//!   with 16. Without syncs (`fsync=never`) the turns do not block, and
//!   more workers only compete for the CPUs: 10,000 partitions did
//!   128–133k msgs/s with 4 workers and 107–110k with 16 (docs/benchmarks.md,
//!   "Writer threads that follow the size of the commits").
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
//!   and the flag is cleared only after its turn ends (whoever sets it
//!   again owns the next turn: a sender queues the job, the worker that
//!   ran the last turn runs it or queues it). So a log's commands
//!   are taken and committed in order by one worker at a time, exactly as
//!   by a thread of its own; the crash story of the log (what is on disk
//!   when, what recovery does: [`writer`](super::writer),
//!   [`seal`](super::writer::seal)) is unchanged, because the same code runs
//!   the same steps in the same order, only on a worker chosen per turn.
//! - **No lost wake-up.** Whoever queues a command schedules the log after
//!   queueing it; a turn, after clearing the flag, looks at the queue again
//!   and, if anything is there, takes the flag back and runs the next turn
//!   or queues it. Either the turn sees the command or the sender sees the
//!   flag clear.
//! - **Fairness.** A turn does a bounded amount of work (one commit group:
//!   at most [`MAX_GROUP_BYTES`](super::committer::MAX_GROUP_BYTES) of
//!   batches or a queue's worth of commands); a log with more queued goes
//!   to the back of the run queue when other jobs wait there, and is run
//!   again by the same worker when none does (no thread hand-off between
//!   the turns of a busy log; see [`run_turn`]). A busy log cannot keep a worker from the
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

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
pub(crate) fn schedule(pool: &'static WriterPool, job: Arc<dyn Job>) {
    if !job.scheduled().swap(true, Ordering::SeqCst) {
        pool.push(job);
    }
}

/// The core of the pool, the workers that always run: twice the CPUs (a
/// turn spends most of its time waiting for the disk), at least 4, at
/// most 32.
pub fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cpus).clamp(4, 32)
}

/// The most workers by default: four times the core, at most 64 (16 on
/// two CPUs: 10,000 partitions did better with 16 than with 64, whose
/// smaller commits gave back what the extra syncs won).
pub fn default_most() -> usize {
    (4 * default_threads()).min(64)
}

/// How long a worker beyond the core waits for a job before it exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);

/// Commits smaller than this on average (bytes of batches per commit
/// group) let the pool grow beyond its core: the logs are bound by the
/// rate of syncs, not by the bytes they write.
pub const SMALL_COMMIT_BYTES: u64 = 64 * 1024;

/// What a commit without an `fdatasync` counts as in the moving average.
const UNSYNCED_COMMIT: u64 = 16 * SMALL_COMMIT_BYTES;

/// The weight of one commit in the moving average: 1 / 2^this.
const COMMIT_AVERAGE_SHIFT: u32 = 4;

/// The pool at one moment, for `/metrics` (see
/// [`crate::metrics::writer_pool`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    /// Workers running.
    pub threads: usize,
    /// The most workers it may run (`writer_threads`).
    pub most: usize,
    /// Logs queued for a worker and not yet taken.
    pub waiting: usize,
    /// The moving average of the commit groups' bytes that gates the
    /// workers beyond the core ([`SMALL_COMMIT_BYTES`]).
    pub commit_bytes_average: u64,
}

/// Whether a worker is one of the core, which always run, or an extra
/// one, which exits when idle.
#[derive(Debug, Clone, Copy)]
enum Tenure {
    Core,
    Extra,
}

/// See the module doc.
pub struct WriterPool {
    queue: flume::Sender<Arc<dyn Job>>,
    /// The run queue's other end, for the workers started later.
    jobs: flume::Receiver<Arc<dyn Job>>,
    timers: Timers,
    max: usize,
    idle_exit: Duration,
    /// Workers running (started and not exited).
    live: AtomicUsize,
    /// Workers waiting for a job.
    idle: AtomicUsize,
    /// Jobs queued and not yet taken (the queue's length, without taking
    /// the queue's lock on every push).
    waiting: AtomicUsize,
    /// Workers ever started: the next one's name.
    started: AtomicUsize,
    /// Moving average of the bytes of the recent commit groups (see
    /// [`WriterPool::note_commit`]); starts at 0, small.
    commit_bytes: AtomicU64,
}

impl std::fmt::Debug for WriterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterPool")
            .field("max", &self.max)
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<&'static WriterPool> = OnceLock::new();

impl WriterPool {
    /// Starts the process-wide pool with at most `max_threads` workers
    /// (its core: [`default_threads`], or `max_threads` if fewer); returns
    /// `false` (and changes nothing) if it was already started.
    pub fn init(max_threads: usize) -> bool {
        let mut started = false;
        GLOBAL.get_or_init(|| {
            started = true;
            WriterPool::start(default_threads().min(max_threads), max_threads, IDLE_EXIT)
        });
        started
    }

    /// The process-wide pool, started with the defaults if
    /// [`init`](Self::init) was not called.
    pub fn global() -> &'static WriterPool {
        GLOBAL.get_or_init(|| WriterPool::start(default_threads(), default_most(), IDLE_EXIT))
    }

    /// Counts a commit group of `bytes` into the moving average that gates
    /// the workers beyond the core. A commit that did not end in an
    /// `fdatasync` (`fsync=interval` or `never`) counts as large: its turn
    /// does not block on the disk, so more workers would only compete for
    /// the CPUs. Workers may race on the average; a lost update only skews
    /// an estimate.
    pub(crate) fn note_commit(&self, bytes: u64, synced: bool) {
        let sample = if synced { bytes } else { UNSYNCED_COMMIT };
        let old = self.commit_bytes.load(Ordering::Relaxed);
        let new = old - (old >> COMMIT_AVERAGE_SHIFT) + (sample >> COMMIT_AVERAGE_SHIFT);
        self.commit_bytes.store(new, Ordering::Relaxed);
    }

    /// Whether recent commits were small enough for more workers to help.
    fn commits_small(&self) -> bool {
        self.commit_bytes.load(Ordering::Relaxed) < SMALL_COMMIT_BYTES
    }

    /// Workers running now.
    pub fn threads(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// What the pool shows at a metrics scrape.
    pub fn figures(&self) -> PoolFigures {
        PoolFigures {
            threads: self.threads(),
            most: self.max,
            waiting: self.waiting.load(Ordering::SeqCst),
            commit_bytes_average: self.commit_bytes.load(Ordering::Relaxed),
        }
    }

    /// Starts a pool of `core` workers (at least one) that may grow to
    /// `max` (at least `core`), and its timer thread; it lives as long as
    /// the process. A worker beyond the core exits after `idle_exit`
    /// without a job.
    pub(crate) fn start(core: usize, max: usize, idle_exit: Duration) -> &'static WriterPool {
        let core = core.max(1);
        let (queue, jobs) = flume::unbounded::<Arc<dyn Job>>();
        let pool: &'static WriterPool = Box::leak(Box::new(WriterPool {
            queue,
            jobs,
            timers: Timers::default(),
            max: max.max(core),
            idle_exit,
            live: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            commit_bytes: AtomicU64::new(0),
        }));
        for _ in 0..core {
            pool.add_worker(Tenure::Core);
        }
        let spawned = std::thread::Builder::new()
            .name("log-timers".into())
            .spawn(move || pool.timers.run(pool));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the log timer thread");
        }
        pool
    }

    /// A pool of exactly `threads` workers (tests that need one worker).
    #[cfg(test)]
    pub(crate) fn fixed(threads: usize) -> &'static WriterPool {
        WriterPool::start(threads, threads, IDLE_EXIT)
    }

    /// Starts one more worker unless `max` run already.
    fn add_worker(&'static self, tenure: Tenure) {
        let room = self
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |live| {
                (live < self.max).then_some(live + 1)
            });
        if room.is_err() {
            return;
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name(format!("log-writer-{n}"))
            .spawn(move || self.work(tenure));
        if let Err(e) = spawned {
            self.live.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(error = %e, "could not start a log writer thread");
        }
    }

    /// A worker's loop: takes jobs; an extra worker exits after
    /// `idle_exit` without one, or after a turn once commits are large.
    /// A job that still has work after its turn is run again by the same
    /// worker when no other job waits (see [`run_turn`]), and goes to the
    /// back of the run queue otherwise.
    fn work(&'static self, tenure: Tenure) {
        let mut carried: Option<Arc<dyn Job>> = None;
        loop {
            let job = match carried.take() {
                Some(job) => job,
                None => {
                    self.idle.fetch_add(1, Ordering::SeqCst);
                    let next = match tenure {
                        Tenure::Core => self.jobs.recv().ok(),
                        Tenure::Extra => self.jobs.recv_timeout(self.idle_exit).ok(),
                    };
                    self.idle.fetch_sub(1, Ordering::SeqCst);
                    // Idle that long (or, never, the queue gone): exit.
                    let Some(job) = next else {
                        self.live.fetch_sub(1, Ordering::SeqCst);
                        return;
                    };
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    job
                }
            };
            let again = run_turn(self, job);
            if matches!(tenure, Tenure::Extra) && !self.commits_small() {
                if let Some(job) = again {
                    self.push(job);
                }
                self.live.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            carried = again.and_then(|job| {
                if self.waiting.load(Ordering::SeqCst) == 0 {
                    Some(job)
                } else {
                    self.push(job);
                    None
                }
            });
        }
    }

    fn push(&'static self, job: Arc<dyn Job>) {
        let waiting = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        // The pool holds the receiver for the life of the process.
        let _ = self.queue.send(job);
        // More jobs wait than workers are free to take them, and the
        // commits are small (bound by the syncs, not the bytes): one more.
        if waiting > self.idle.load(Ordering::SeqCst) && self.commits_small() {
            self.add_worker(Tenure::Extra);
        }
    }

    /// Schedules `job` at `at` (if it still exists then).
    pub(crate) fn wake_at(&self, at: Instant, job: Weak<dyn Job>) {
        self.timers.add(at, job);
    }
}

/// One turn of `job`, then the flag cleared and the queue looked at again.
/// Returns the job when it has more work and this worker took its flag
/// back: the worker then owns its next turn (runs it, or queues it), as a
/// sender that sets the flag owns queueing it. Running it again on the
/// same worker, rather than queueing it, spares a busy log a thread
/// hand-off per turn: a job queued while workers are parked wakes one of
/// them (a context switch on the way of every commit), and the worker
/// that queued it goes to sleep.
fn run_turn(pool: &'static WriterPool, job: Arc<dyn Job>) -> Option<Arc<dyn Job>> {
    job.clone().turn(pool);
    job.scheduled().store(false, Ordering::SeqCst);
    (job.has_work() && !job.scheduled().swap(true, Ordering::SeqCst)).then_some(job)
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

    fn run(&self, pool: &'static WriterPool) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A job whose turn blocks until its gate opens.
    struct Gated {
        scheduled: AtomicBool,
        gate: Arc<(Mutex<bool>, Condvar)>,
        turns: Arc<AtomicUsize>,
    }

    impl Job for Gated {
        fn scheduled(&self) -> &AtomicBool {
            &self.scheduled
        }
        fn turn(self: Arc<Self>, _pool: &WriterPool) {
            let (open, opened) = &*self.gate;
            let mut open = open.lock();
            while !*open {
                opened.wait(&mut open);
            }
            self.turns.fetch_add(1, Ordering::SeqCst);
        }
        fn has_work(&self) -> bool {
            false
        }
    }

    fn gated(gate: &Arc<(Mutex<bool>, Condvar)>, turns: &Arc<AtomicUsize>) -> Arc<dyn Job> {
        Arc::new(Gated {
            scheduled: AtomicBool::new(false),
            gate: gate.clone(),
            turns: turns.clone(),
        })
    }

    /// Queues `jobs` jobs behind `gate` on `pool`.
    fn queue_gated(
        pool: &'static WriterPool,
        gate: &Arc<(Mutex<bool>, Condvar)>,
        turns: &Arc<AtomicUsize>,
        jobs: usize,
    ) {
        for _ in 0..jobs {
            schedule(pool, gated(gate, turns));
        }
    }

    /// Once `pool`'s single core worker waits, queues `jobs` jobs behind a
    /// closed gate; returns the gate and the count of turns run.
    fn backlog(
        pool: &'static WriterPool,
        jobs: usize,
    ) -> (Arc<(Mutex<bool>, Condvar)>, Arc<AtomicUsize>) {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let turns = Arc::new(AtomicUsize::new(0));
        wait_for("the core started", || pool.idle.load(Ordering::SeqCst) == 1);
        queue_gated(pool, &gate, &turns, jobs);
        (gate, turns)
    }

    fn open(gate: &(Mutex<bool>, Condvar), value: bool) {
        *gate.0.lock() = value;
        gate.1.notify_all();
    }

    /// Waits (at most 10 s) until `condition` holds.
    fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_backlog_starts_workers_up_to_the_most_and_the_extra_ones_exit_when_idle() {
        let pool = WriterPool::start(1, 4, Duration::from_millis(100));
        assert_eq!(pool.threads(), 1);
        let (gate, turns) = backlog(pool, 10);
        wait_for("four workers", || pool.threads() == 4);
        wait_for("every worker busy", || {
            pool.idle.load(Ordering::SeqCst) == 0
        });
        assert_eq!(pool.threads(), 4, "never more than the most");
        open(&gate, true);
        wait_for("every turn", || turns.load(Ordering::SeqCst) == 10);
        wait_for("back to the core", || pool.threads() == 1);
        // The core worker stays and still serves.
        schedule(pool, gated(&gate, &turns));
        wait_for("one more turn", || turns.load(Ordering::SeqCst) == 11);
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn jobs_one_after_another_start_no_worker_beyond_the_core() {
        let pool = WriterPool::start(2, 8, Duration::from_secs(60));
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let turns = Arc::new(AtomicUsize::new(0));
        wait_for("the core started", || pool.idle.load(Ordering::SeqCst) == 2);
        for n in 1..=50 {
            schedule(pool, gated(&gate, &turns));
            wait_for("the turn", || turns.load(Ordering::SeqCst) == n);
            // Both core workers waiting again before the next job.
            wait_for("idle workers", || pool.idle.load(Ordering::SeqCst) == 2);
        }
        assert_eq!(pool.threads(), 2);
    }

    #[test]
    fn large_commits_keep_a_backlog_on_the_core() {
        let pool = WriterPool::start(1, 4, Duration::from_secs(60));
        for _ in 0..64 {
            pool.note_commit(4 * SMALL_COMMIT_BYTES, true);
        }
        assert!(!pool.commits_small());
        let (gate, turns) = backlog(pool, 10);
        wait_for("the core busy", || pool.idle.load(Ordering::SeqCst) == 0);
        assert_eq!(
            pool.threads(),
            1,
            "large commits: no worker beyond the core"
        );
        open(&gate, true);
        wait_for("every turn", || turns.load(Ordering::SeqCst) == 10);
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn extra_workers_retire_after_a_turn_once_commits_are_large() {
        // Idle workers would wait an hour: only large commits end them.
        let pool = WriterPool::start(1, 4, Duration::from_secs(3600));
        let (gate, turns) = backlog(pool, 10);
        wait_for("four workers (small commits)", || pool.threads() == 4);
        for _ in 0..64 {
            pool.note_commit(4 * SMALL_COMMIT_BYTES, true);
        }
        open(&gate, true);
        wait_for("every turn", || turns.load(Ordering::SeqCst) == 10);
        // An extra worker that found no job waits (here an hour); the next
        // turn it takes is its last.
        wait_for("back to the core", || {
            schedule(pool, gated(&gate, &turns));
            pool.threads() == 1
        });
        let done = turns.load(Ordering::SeqCst);
        // Small again: a backlog grows the pool again.
        for _ in 0..256 {
            pool.note_commit(0, true);
        }
        assert!(pool.commits_small());
        open(&gate, false);
        queue_gated(pool, &gate, &turns, 10);
        wait_for("four workers again", || pool.threads() == 4);
        open(&gate, true);
        wait_for("every turn", || turns.load(Ordering::SeqCst) >= done + 10);
    }

    /// A job with `remaining` turns of work; each turn notes its thread.
    struct Busy {
        scheduled: AtomicBool,
        name: &'static str,
        remaining: AtomicUsize,
        turns: Arc<Mutex<Vec<(&'static str, std::thread::ThreadId)>>>,
    }

    impl Job for Busy {
        fn scheduled(&self) -> &AtomicBool {
            &self.scheduled
        }
        fn turn(self: Arc<Self>, _pool: &WriterPool) {
            self.turns
                .lock()
                .push((self.name, std::thread::current().id()));
            self.remaining.fetch_sub(1, Ordering::SeqCst);
        }
        fn has_work(&self) -> bool {
            self.remaining.load(Ordering::SeqCst) > 0
        }
    }

    fn busy(
        name: &'static str,
        turns: usize,
        seen: &Arc<Mutex<Vec<(&'static str, std::thread::ThreadId)>>>,
    ) -> Arc<dyn Job> {
        Arc::new(Busy {
            scheduled: AtomicBool::new(false),
            name,
            remaining: AtomicUsize::new(turns),
            turns: seen.clone(),
        })
    }

    #[test]
    fn a_busy_job_alone_runs_its_turns_on_one_worker() {
        // Two workers parked: queueing the job again after each turn would
        // hand it to the other one (a thread wake-up per turn).
        let pool = WriterPool::start(2, 2, Duration::from_secs(60));
        wait_for("the core started", || pool.idle.load(Ordering::SeqCst) == 2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        schedule(pool, busy("a", 50, &seen));
        wait_for("every turn", || seen.lock().len() == 50);
        let seen = seen.lock();
        let first = seen[0].1;
        assert!(
            seen.iter().all(|&(_, thread)| thread == first),
            "the turns moved between workers"
        );
    }

    #[test]
    fn busy_jobs_take_turns_on_one_worker() {
        let pool = WriterPool::start(1, 1, Duration::from_secs(60));
        let (gate, gated_turns) = backlog(pool, 1);
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Both queued while the worker is held: neither may run all its
        // turns before the other's first.
        schedule(pool, busy("a", 5, &seen));
        schedule(pool, busy("b", 5, &seen));
        open(&gate, true);
        wait_for("every turn", || seen.lock().len() == 10);
        assert_eq!(gated_turns.load(Ordering::SeqCst), 1);
        let order: String = seen.lock().iter().map(|&(name, _)| name).collect();
        assert_eq!(order, "ababababab");
    }

    #[test]
    fn the_commit_average_follows_the_recent_commits() {
        let pool = WriterPool::start(1, 1, Duration::from_secs(60));
        assert!(pool.commits_small(), "an unused pool counts as small");
        for _ in 0..64 {
            pool.note_commit(1024 * 1024, true);
        }
        let average = pool.commit_bytes.load(Ordering::Relaxed);
        assert!((1000 * 1024..=1024 * 1024).contains(&average), "{average}");
        for _ in 0..128 {
            pool.note_commit(4096, true);
        }
        assert!(pool.commits_small());
        let average = pool.commit_bytes.load(Ordering::Relaxed);
        assert!((4000..8192).contains(&average), "{average}");
        // Small commits without a sync (fsync=interval or never) are large.
        for _ in 0..64 {
            pool.note_commit(4096, false);
        }
        assert!(!pool.commits_small());
    }
}
