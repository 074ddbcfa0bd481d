//! The sealer: a small fixed set of threads (`log-sealer-N`) that run the
//! background seal jobs of every log (see [`seal`](super::writer::seal)),
//! instead of one new thread per roll.
//!
//! ## What it owns
//!
//! - [`SEALER_THREADS`] threads, started on first use and kept for the
//!   life of the process, taking tasks from one FIFO queue.
//! - For each task, a [`TaskHandle`]: the writer that submitted it asks
//!   whether it finished and takes its result, or waits for it.
//!
//! ## Invariants
//!
//! - **Bounded.** At most [`SEALER_THREADS`] seal jobs (each mostly an
//!   `fdatasync` of a 128 MiB segment) run at once, whatever the number
//!   of partitions rolling; the others wait in the queue in the order they
//!   were submitted. A log has at most one seal job at a time (a roll
//!   while one is unsettled waits for it), so the queue holds at most one
//!   task per log.
//! - **Never lost.** A task runs exactly once; a task that panics is
//!   caught, its handle reports that it ended without a result
//!   ([`TaskHandle::join`] returns `None`), and the thread goes on with
//!   the next task.
//! - **No deadlock.** A task only touches its own segment's files and its
//!   log's checkpoint; it never waits for a writer, the writer pool or
//!   another task. A writer waiting for its task therefore waits at most
//!   for the tasks queued before it.
//! - If the threads cannot be started (the system refuses a thread), a
//!   task runs on the caller's thread instead, as a foreground seal did.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

/// Seal jobs that run at once (each is mostly one `fdatasync`).
pub(crate) const SEALER_THREADS: usize = 4;

type Task = Box<dyn FnOnce() + Send>;

/// The queue of the process-wide sealer, or `None` if its threads could
/// not start.
fn queue() -> Option<&'static flume::Sender<Task>> {
    static QUEUE: OnceLock<Option<flume::Sender<Task>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (queue, tasks) = flume::unbounded::<Task>();
            for n in 0..SEALER_THREADS {
                let tasks = tasks.clone();
                let started = std::thread::Builder::new()
                    .name(format!("log-sealer-{n}"))
                    .spawn(move || {
                        // The sender lives as long as the process.
                        while let Ok(task) = tasks.recv() {
                            task();
                        }
                    });
                if let Err(e) = started {
                    if n == 0 {
                        tracing::warn!(error = %e, "could not start a sealer thread; sealed segments are synced on the append path");
                        return None;
                    }
                    tracing::warn!(error = %e, started = n, "could not start every sealer thread; going on with fewer");
                    break;
                }
            }
            Some(queue)
        })
        .as_ref()
}

/// The submitter's side of a task: its result arrives on a channel of
/// one (`None` if the task panicked).
pub(crate) struct TaskHandle<T> {
    result: flume::Receiver<Option<T>>,
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> TaskHandle<T> {
    /// Whether the task ended (its result is ready).
    pub fn is_finished(&self) -> bool {
        !self.result.is_empty()
    }

    /// Waits for the task; `None` if it panicked.
    pub fn join(self) -> Option<T> {
        self.result.recv().ok().flatten()
    }
}

/// Runs `task` on a sealer thread (on this thread if there is none) and
/// returns its handle.
pub(crate) fn submit<T: Send + 'static>(
    task: impl FnOnce() -> T + Send + 'static,
) -> TaskHandle<T> {
    let (done, result) = flume::bounded(1);
    let job = move || {
        let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(task)).ok());
    };
    match queue() {
        // The threads hold the receiver for the life of the process.
        Some(queue) => drop(queue.send(Box::new(job))),
        None => job(),
    }
    TaskHandle { result }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::{Condvar, Mutex};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn every_task_runs_once_on_a_bounded_set_of_threads() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let (running, most) = (running.clone(), most.clone());
                submit(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                    running.fetch_sub(1, Ordering::SeqCst);
                    (i, std::thread::current().name().map(str::to_owned))
                })
            })
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let (ran, thread) = handle.join().expect("no panic");
            assert_eq!(ran, i);
            assert!(
                thread.is_some_and(|name| name.starts_with("log-sealer-")),
                "a task ran off the sealer threads"
            );
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=SEALER_THREADS).contains(&most),
            "{most} tasks ran at once"
        );
    }

    #[test]
    fn a_panicking_task_ends_without_a_result_and_the_threads_go_on() {
        let handles: Vec<_> = (0..SEALER_THREADS * 2)
            .map(|_| submit(|| -> u32 { panic!("a seal job panicked (test)") }))
            .collect();
        for handle in handles {
            assert!(handle.join().is_none());
        }
        assert_eq!(submit(|| 7).join(), Some(7));
    }

    #[test]
    fn is_finished_turns_true_once_the_task_ended() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let task_gate = gate.clone();
        let handle = submit(move || {
            let (open, turned) = &*task_gate;
            let mut open = open.lock();
            while !*open {
                turned.wait(&mut open);
            }
        });
        assert!(!handle.is_finished());
        *gate.0.lock() = true;
        gate.1.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !handle.is_finished() {
            assert!(Instant::now() < deadline, "the task never finished");
            std::thread::yield_now();
        }
        assert_eq!(handle.join(), Some(()));
    }
}
