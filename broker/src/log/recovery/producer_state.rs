//! Producer state at open: the snapshot (`read_producer_snapshot`), to
//! which the scans of [recovery](super) add the batches they replay, and,
//! when the snapshot is missing or damaged, a walk of the segments that may
//! hold batches of live producers (`Opener::walk_producers`).
//!
//! ## Invariants
//!
//! - The snapshot is never older than the checkpoint (the writer writes it
//!   first), so the log before the checkpoint is walked only when the
//!   snapshot is missing or damaged: every trusted sealed segment whose
//!   newest batch is within the producer expiry, and the active segment up
//!   to its resume point, in order, so that no live producer is forgotten
//!   and a retry is never appended twice. What follows the checkpoint is
//!   replayed by the scans that check it.
//! - Only batches at or after the snapshot's offset are applied to it.
//! - Once every segment is open, what the state remembers at or past the
//!   recovered end is forgotten ([`Log::open`](crate::log::Log::open)): a
//!   retry of a batch recovery cut is appended again, not answered with
//!   offsets the log does not hold.
//!
//! ## Crash story
//!
//! Nothing here writes: a crash leaves the snapshot and the log as they
//! were. A read error fails the open; a damaged snapshot is rebuilt from
//! the log; damage in a segment ends its walk (producers after it are not
//! restored, and reads report the damage).

use std::path::Path;

use super::Opener;
use crate::io::{FileSystem, read_all};
use crate::log::error::{LogError, LogResult};
use crate::log::producers::{ProducerTable, SNAPSHOT_FILE};
use crate::log::segment::{BatchScanner, ScanStop, Segment};

impl Opener<'_> {
    /// Whether a trusted sealed segment must be walked to rebuild producer
    /// state: it holds batches past the snapshot (only when the snapshot is
    /// missing or damaged, as a snapshot is never older than the
    /// checkpoint), and batches of producers that have not expired.
    pub(super) fn needs_producer_walk(&self, segment: &Segment) -> bool {
        segment.next_offset() > self.producers_from
            && segment.max_timestamp() >= self.producer_window_start
    }

    /// Replays the batch headers of `from..to` of a segment into the producer
    /// state (only needed when the snapshot is missing or older than the
    /// checkpoint: a first start, or a damaged snapshot). A read error fails
    /// the open; damage ends the walk of this segment (reads report it).
    pub(super) fn walk_producers(
        &mut self,
        segment: &Segment,
        from: u64,
        to: u64,
    ) -> LogResult<()> {
        let expected = if from == 0 {
            segment.base_offset
        } else {
            return Ok(());
        };
        let file = segment
            .file()
            .map_err(|e| LogError::io(format!("reading {}", segment.log_path.display()), e))?;
        let mut scanner = BatchScanner::new(file.as_ref(), from, to, expected);
        self.report.scanned_bytes += to - from;
        loop {
            match scanner.next_batch() {
                Ok(Some(batch)) => {
                    if batch.header.base_offset >= self.producers_from {
                        self.producers.apply(&batch.header);
                    }
                }
                Ok(None) => return Ok(()),
                Err(ScanStop::Damaged { position, reason }) => {
                    tracing::error!(
                        segment = %segment.log_path.display(), position, reason = %reason,
                        "corrupt batch while rebuilding producer state; producers after it are not restored"
                    );
                    return Ok(());
                }
                Err(stop) => {
                    return Err(stop.into_error(&segment.log_path, "rebuilding producer state"));
                }
            }
        }
    }
}

/// The producer snapshot of a partition: the offset it was taken at and
/// the table. `None` if missing or damaged (then the state is rebuilt by
/// walking the log); a read error is returned.
pub(super) fn read_producer_snapshot(
    fs: &dyn FileSystem,
    dir: &Path,
) -> std::io::Result<Option<(u64, ProducerTable)>> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match read_all(fs, &path, 256 << 20) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let decoded = ProducerTable::decode(&bytes);
    if decoded.is_none() {
        tracing::warn!(path = %path.display(), "producer snapshot is damaged; rebuilding producer state from the log");
    }
    Ok(decoded)
}
