//! Background sealing: under `fsync=never` and `fsync=interval`, the
//! `fdatasync` of a segment that rolls (and the sync of its indexes) runs
//! on a [`sealer`](crate::log::sealer) thread, off the append path; the
//! checkpoint that makes
//! recovery trust the sealed segment is written by the writer once that
//! sync has completed. Under `fsync=always` the roll stays in the
//! foreground (see "fsync=always" below).
//!
//! ## Steps (what is on disk at each, what recovery does)
//!
//! 1. The roll writes the staged batches of the old segment `S`, marks it
//!    sealed (it takes no more appends) and adds its final time entry.
//!    *Crash: the checkpoint names `S` (or an earlier segment); recovery
//!    scans `S`'s tail and cuts it at the first torn batch, as for any
//!    active segment.*
//! 2. It creates the next segment `N` (its directory entries are not
//!    synced yet), switches appends to `N`, encodes the producer snapshot
//!    as of `N`'s base, and starts the background job. Appends to `N` go
//!    on at once: nothing on the append path waits for a disk. *Crash: `S`
//!    is a sealed segment that the checkpoint does not cover, directly
//!    followed by the last one, `N`: its tail may never have reached the
//!    disk. Recovery scans it whole; if it is torn, corrupt, or ends before
//!    `N` begins, it lost its tail: `N` is removed (durably) first, then
//!    `S` is recovered as the active segment (cut at the first bad batch).
//!    Nothing after a lost piece is served, so what a power cut loses is
//!    still a suffix. If `S` checks out, recovery syncs it before trusting
//!    it.*
//!    A power cut may also undo `N`'s creation: then `S` is the last
//!    segment and is recovered as the active one.
//! 3. The job: `fdatasync` of `S`'s `.log`, then its indexes are sealed
//!    (reopened, flushed, cut to their entries, synced), then `S` is
//!    released to the cache of open files ([`crate::log::open_segments`]:
//!    from then on its `.log` may be closed when cold; until then the
//!    writer keeps it open, as `S` may become the active segment again).
//!    *Crash during or after it,
//!    before step 4: as in step 2 (the scan finds `S` whole once its sync
//!    completed).*
//! 4. The job then syncs the directory (`N`'s names are durable), writes
//!    the producer snapshot encoded in step 2 and a checkpoint naming `N`
//!    at position 0, each atomically. *Crash after it: `S` is trusted
//!    (before the checkpoint's segment), `N` is scanned from its start.*
//!    The writer settles the job when it sees it finished (at its next
//!    commit, or on a timer every [`SEAL_POLL`] while a job runs). If the
//!    checkpoint could not be written (say the disk is full), the writer
//!    tries again at each commit; a later roll supersedes it.
//!
//! At most one seal runs at a time: a roll while one runs waits for it. So
//! the only segment whose sync may not have completed is the one just
//! before the last: every earlier one was synced before the segment after
//! its successor was created. This is what lets recovery treat exactly
//! that segment as a possibly unsynced tail (`recovery` step 2) and every
//! earlier one as synced (damage inside one is bit rot, kept and
//! reported). The writer writes no checkpoint while a seal runs (it would
//! name `N` and so trust `S`, and it would race the job's), and retention
//! does not delete `S` until it is synced. Every other checkpoint writer
//! (a failed fsync's fence, a roll, a clean close) waits for the job
//! first.
//!
//! ## What "durable" means meanwhile
//!
//! [`Log::durable_position`] stays at `S`'s last completed sync until step
//! 4: everything after it, in `S` and in `N`, is lost if `S`'s tail is. An
//! explicit [`Log::sync`] (and [`Log::close`]) waits for the seal first.
//! The `interval` policy's timed sync of `N` does not wait: under
//! `interval` a power cut right after a roll can lose the appends since the
//! roll for as long as the sealed segment's sync takes (the time it used to
//! stall appends), or the interval, whichever is longer.
//!
//! ## A failed background sync
//!
//! If the `fdatasync` of `S` fails, its unsynced pages may have been
//! dropped ("fsyncgate", see [`fence`](super::fence)). The writer handles it
//! like a failed foreground sync, at `S`'s last completed sync: the
//! partition turns read-only (`partition refuses writes since an fsync
//! failed (fdatasync of …)`), readers forget `N` and `S`'s unsynced tail,
//! the writer goes back to that point (appends committed with the failure
//! get the error; earlier ones were acknowledged, as the policy allows),
//! `S` is cut there and `N` emptied, and a fence checkpoint names `S` at
//! that position. At the next start, recovery removes every segment after
//! a fenced one, then cuts that one at the fence. If only the index seal
//! fails (the log bytes are synced), the partition turns read-only and a
//! restart rebuilds `S`'s indexes from the log.
//!
//! ## fsync=always
//!
//! Every acknowledgement already waits for an `fdatasync` of its batch, so
//! when a segment rolls its bytes are synced but for the last group; the
//! roll syncs that in the foreground, seals the indexes and writes the
//! checkpoint, as before, and only then does `N` take appends. An append
//! to `N` is therefore acknowledged only after everything before it is
//! durable; a background seal would save little (the indexes' syncs) and
//! would make an acknowledgement in `N` depend on a sync still running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Log;
use super::fence::SyncedPoint;
use crate::io::{FileSystem, write_atomically};
use crate::log::checkpoint::Checkpoint;
use crate::log::error::{LogError, LogResult};
use crate::log::open_segments::OpenSegments;
use crate::log::producers::SNAPSHOT_FILE;
use crate::log::sealer::{self, TaskHandle};
use crate::log::segment::Segment;

/// How often the writer looks for a finished seal while one runs and no
/// append comes.
pub(crate) const SEAL_POLL: Duration = Duration::from_millis(10);

/// How seal jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealMode {
    /// On the [`sealer`](crate::log::sealer)'s threads.
    Background,
    /// Tests: only when the test runs them ([`Log::run_seal_job`]), or
    /// when the writer waits for one; never, if the log is dropped first
    /// (a crash before the sync).
    #[cfg(test)]
    Manual,
}

/// What a seal job did.
#[derive(Debug)]
pub(crate) enum SealOutcome {
    /// The log bytes and the indexes are synced, the next segment's name
    /// too, and the checkpoint naming it is written.
    Synced,
    /// All synced; writing the checkpoint failed (the writer tries again).
    CheckpointFailed(std::io::Error),
    /// The `fdatasync` of the `.log` failed: its unsynced bytes may be lost.
    LogSyncFailed(std::io::Error),
    /// The log bytes are synced; sealing the indexes failed.
    IndexSealFailed(LogError),
}

/// What a seal job needs besides the segment: where to write the
/// checkpoint, and what.
#[derive(Debug, Clone)]
struct SealWork {
    fs: Arc<dyn FileSystem>,
    /// The cache the sealed segment's file is released to once synced.
    open_segments: OpenSegments,
    dir: PathBuf,
    checkpoint: Checkpoint,
    snapshot: Arc<Vec<u8>>,
}

impl SealWork {
    /// The directory (the next segment's names), the producer snapshot,
    /// the checkpoint; each durable before the next.
    fn write_checkpoint(&self) -> std::io::Result<()> {
        self.fs.sync_dir(&self.dir)?;
        write_atomically(
            self.fs.as_ref(),
            &self.dir.join(SNAPSHOT_FILE),
            &self.snapshot,
        )?;
        self.checkpoint.write(self.fs.as_ref(), &self.dir)
    }
}

/// The job: sync the sealed segment's bytes, seal its indexes, release its
/// file to the cache of open files, then make the next segment's names
/// durable and write the checkpoint naming it.
/// The writer writes no checkpoint while a job runs, so this one cannot
/// overtake or be overtaken by another.
fn seal_job(segment: &Segment, work: &SealWork) -> SealOutcome {
    if let Err(e) = segment.file().and_then(|file| file.sync_data()) {
        return SealOutcome::LogSyncFailed(e);
    }
    if let Err(e) = segment.seal_indexes(work.fs.as_ref()) {
        return SealOutcome::IndexSealFailed(e);
    }
    // Synced for good: never written again, whatever becomes of the
    // checkpoint. Its file may now be closed when cold.
    segment.release(work.fs.clone(), &work.open_segments);
    match work.write_checkpoint() {
        Ok(()) => SealOutcome::Synced,
        Err(e) => SealOutcome::CheckpointFailed(e),
    }
}

#[derive(Debug)]
enum Job {
    Running(TaskHandle<SealOutcome>),
    #[cfg(test)]
    Manual,
    /// Tests: a manual job that ran; its outcome not yet handled.
    #[cfg(test)]
    Done(SealOutcome),
    /// Synced; its checkpoint could not be written yet.
    CheckpointOwed,
}

/// A sealed segment whose background sync has not been settled.
#[derive(Debug)]
pub(crate) struct PendingSeal {
    /// The sealed segment, `S`.
    segment: Arc<Segment>,
    /// Bytes of `S` covered by its last completed sync before the roll.
    synced_pos: u64,
    /// The writer's state there: where a failed sync goes back to.
    synced: SyncedPoint,
    /// The checkpoint naming the next segment, and the producer snapshot
    /// as of its base, to write once `S` is synced.
    work: SealWork,
    job: Job,
    /// When the writer next looks whether the job finished.
    next_poll: Instant,
    /// A failed checkpoint write was logged already.
    warned: bool,
}

impl PendingSeal {
    /// The job's outcome, if it finished (`wait`: wait for it).
    fn outcome(&mut self, wait: bool) -> Option<SealOutcome> {
        let job = std::mem::replace(&mut self.job, Job::CheckpointOwed);
        match job {
            Job::Running(handle) if wait || handle.is_finished() => {
                Some(handle.join().unwrap_or_else(|| {
                    SealOutcome::LogSyncFailed(std::io::Error::other(
                        "the job syncing the sealed segment panicked",
                    ))
                }))
            }
            #[cfg(test)]
            Job::Manual if wait => Some(seal_job(&self.segment, &self.work)),
            #[cfg(test)]
            Job::Done(outcome) => Some(outcome),
            Job::CheckpointOwed => Some(SealOutcome::CheckpointFailed(std::io::Error::other(
                "not written yet",
            ))),
            running => {
                self.job = running;
                None
            }
        }
    }
}

impl Drop for PendingSeal {
    /// A log dropped without closing (a crash, in tests) waits for a
    /// running (or queued) sync, so that no thread touches the files of a
    /// log reopened after it; a manual job that never ran is a crash
    /// before the sync.
    fn drop(&mut self) {
        if let Job::Running(handle) = std::mem::replace(&mut self.job, Job::CheckpointOwed) {
            let _ = handle.join();
        }
    }
}

impl Log {
    /// Step 2: starts syncing the sealed segment `segment` in the
    /// background. `synced_pos` and `synced` are its last completed sync;
    /// `checkpoint` and `snapshot` are written once it is synced.
    pub(super) fn start_seal(
        &mut self,
        segment: Arc<Segment>,
        synced_pos: u64,
        synced: SyncedPoint,
        checkpoint: Checkpoint,
        snapshot: Vec<u8>,
    ) {
        let work = SealWork {
            fs: self.fs.clone(),
            open_segments: self.config.open_segments.clone(),
            dir: self.dir.clone(),
            checkpoint,
            snapshot: Arc::new(snapshot),
        };
        let job = match self.seal_mode {
            SealMode::Background => {
                let (job_segment, job_work) = (segment.clone(), work.clone());
                Job::Running(sealer::submit(move || seal_job(&job_segment, &job_work)))
            }
            #[cfg(test)]
            SealMode::Manual => Job::Manual,
        };
        self.pending_seal = Some(PendingSeal {
            segment,
            synced_pos,
            synced,
            work,
            job,
            next_poll: Instant::now() + SEAL_POLL,
            warned: false,
        });
    }

    /// Step 4: settles a finished seal (`wait`: waits for it): writes its
    /// checkpoint, or stops the partition if its sync failed. `Ok` while
    /// it runs, and when its checkpoint is still owed.
    pub(crate) fn settle_seal(&mut self, wait: bool) -> LogResult<()> {
        let Some(pending) = self.pending_seal.as_mut() else {
            return Ok(());
        };
        let Some(outcome) = pending.outcome(wait) else {
            pending.next_poll = Instant::now() + SEAL_POLL;
            return Ok(());
        };
        match outcome {
            SealOutcome::Synced => {
                self.pending_seal = None;
                Ok(())
            }
            SealOutcome::CheckpointFailed(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "the seal job could not write the checkpoint; the writer tries");
                self.write_seal_checkpoint();
                Ok(())
            }
            SealOutcome::LogSyncFailed(e) => {
                let pending = self.pending_seal.take().expect("pending");
                Err(self.seal_sync_failed(pending, e))
            }
            SealOutcome::IndexSealFailed(e) => {
                self.pending_seal = None;
                Err(self.refuse_writes(format!("sealing a segment failed ({e})")))
            }
        }
    }

    /// Writes the snapshot and checkpoint of a synced seal; on failure
    /// keeps them owed (tried again at the next commit).
    fn write_seal_checkpoint(&mut self) {
        let Some(pending) = self.pending_seal.as_mut() else {
            return;
        };
        let written = match &self.read_only {
            Some(cause) => Err(std::io::Error::other(format!(
                "no checkpoint is written once the partition refuses writes since {cause}"
            ))),
            None => pending.work.write_checkpoint(),
        };
        match written {
            Ok(()) => self.pending_seal = None,
            Err(e) => {
                if !pending.warned {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the checkpoint after sealing a segment; trying again at the next commit");
                    pending.warned = true;
                }
                pending.job = Job::CheckpointOwed;
            }
        }
    }

    /// When the writer should next look for a finished seal, if one runs.
    pub(crate) fn seal_poll_at(&self) -> Option<Instant> {
        match &self.pending_seal {
            Some(p) if !matches!(p.job, Job::CheckpointOwed) => Some(p.next_poll),
            _ => None,
        }
    }

    /// `(segment base, bytes)` of the last completed sync while a seal is
    /// unsettled: everything after it may be lost with the sealed segment's
    /// tail.
    pub(super) fn pending_durable_position(&self) -> Option<(u64, u64)> {
        self.pending_seal.as_ref().map(|p| match p.job {
            Job::CheckpointOwed => (p.segment.base_offset, p.segment.size()),
            _ => (p.segment.base_offset, p.synced_pos),
        })
    }

    /// Base offset of the segment being sealed: retention keeps it until
    /// its sync has completed.
    pub(crate) fn sealing_base(&self) -> Option<u64> {
        self.pending_seal
            .as_ref()
            .filter(|p| !matches!(p.job, Job::CheckpointOwed))
            .map(|p| p.segment.base_offset)
    }

    /// Writes and fsyncs everything appended, the sealed segment of a
    /// background seal included (it waits for it); then publishes it. If
    /// the write of the staged batches fails, what was written before them
    /// is still synced and published, and the write's error returned.
    pub fn sync(&mut self) -> LogResult<()> {
        self.settle_seal(true)?;
        self.sync_active()
    }

    /// After a failed background `fdatasync` of the sealed segment (see
    /// the module doc): back to its last completed sync, read-only, the
    /// next segment emptied, the sealed one cut and fenced.
    fn seal_sync_failed(&mut self, pending: PendingSeal, e: std::io::Error) -> LogError {
        let sealed = pending.segment.clone();
        let error = self.refuse_writes(format!(
            "an fsync failed (fdatasync of {}: {e})",
            sealed.log_path.display()
        ));
        {
            let mut segments = self.shared.segments.write();
            let kept: Vec<Arc<Segment>> = segments
                .iter()
                .filter(|s| s.base_offset <= sealed.base_offset)
                .cloned()
                .collect();
            *segments = Arc::new(kept);
        }
        let next = self.active.segment.clone();
        next.publish(0, next.base_offset, i64::MIN);
        if let Err(e) = next.file().and_then(|file| file.set_len(0)) {
            tracing::warn!(segment = %next.log_path.display(), error = %e, "could not empty the segment after a sealed one whose fsync failed; the fence makes recovery remove it");
        }
        self.active.segment = sealed;
        self.active.write_pos = self.active.segment.size();
        // Cut to its data when it rolled.
        self.active.file_len = self.active.write_pos;
        self.active.synced_pos = pending.synced_pos;
        self.go_back_and_fence(pending.synced);
        error
    }

    /// Tests: runs a manual seal job now, as its thread would; the writer
    /// settles it at its next commit. Returns whether there was one.
    #[cfg(test)]
    pub(crate) fn run_seal_job(&mut self) -> bool {
        match self.pending_seal.as_mut() {
            Some(pending) if matches!(pending.job, Job::Manual) => {
                pending.job = Job::Done(seal_job(&pending.segment, &pending.work));
                true
            }
            _ => false,
        }
    }

    /// Tests: seal jobs run only when the test says so.
    #[cfg(test)]
    pub(crate) fn with_manual_seals(mut self) -> Log {
        self.seal_mode = SealMode::Manual;
        self
    }

    /// Whether a sealed segment's background sync is unsettled.
    pub fn seal_pending(&self) -> bool {
        self.pending_seal.is_some()
    }
}
