//! DLQ redrive: moving a group's parked messages back into the source
//! topic, as new records, without ever moving one twice — a page at a
//! time, under the group's own lock, stoppable at any page.
//!
//! Each DLQ partition is redriven into the source partition with the same
//! number, in DLQ offset order, up to the partition's end offset when its
//! turn came (copies parked meanwhile wait for the next run). Only the
//! group's own copies move: a record moves when its `pigeon.dlq.source-topic`
//! and `pigeon.dlq.group` headers name the group being redriven; any other
//! record (another group's copies in a shared DLQ topic, something produced
//! into it) is skipped and stays. A redriven record keeps the parked
//! record's key, value and original headers (the `pigeon.dlq.*` ones are
//! dropped) and gains `pigeon.redrive.dlq-offset` and
//! `pigeon.redrive.dlq-partition`.
//!
//! ## Bounds
//!
//! - **Pages**: a page holds at most [`PAGE_MESSAGES`] messages to move and
//!   about [`PAGE_BYTES`] of them (at least one message), and scans at most
//!   [`PAGE_SCAN`] records; the DLQ is read one page at a time, never whole.
//! - **The answer** ([`RedriveReport`]) is counts and offset ranges per DLQ
//!   partition, not a line per message (except when a caller asks for the
//!   list, as a version 0 request does; it bounds `max` then).
//! - **Locking**: a redrive holds only its group's [`RedriveSlot`]: a second
//!   redrive of the same group waits for the first; nothing else of the
//!   broker (topic and group administration, other groups, deliveries)
//!   waits for it.
//! - **Stopping**: between pages (and during the pacing of
//!   `rate_per_sec`) the run checks its [`Stop`]: the broker shutting down,
//!   or the group being deleted, ends it with [`RedriveOutcome::Interrupted`]
//!   and what it moved so far; running it again goes on from there.
//!
//! ## Crash story (file `redrive.json` in the group's directory)
//!
//! For every page with something to move:
//! 1. Write an **intent** durably: the first DLQ offset moved, the page's
//!    end `to`, and the source partition's end offset before the append.
//! 2. Append the page's messages to the source partition (one batch: all or
//!    nothing) and wait until it is durable.
//! 3. Write the **cursor** `to` durably, clearing the intent.
//!
//! A crash after 1 leaves an intent: the next redrive looks for the batch in
//! the source partition from the recorded end offset (a record whose latest
//! `pigeon.redrive.dlq-offset` is the first DLQ offset moved). Found: the
//! batch landed, the cursor moves past it. Not found: it is redriven again.
//! So running redrive twice, or crashing half-way, moves no message twice.
//! A page with nothing to move writes nothing; the cursor past skipped
//! records is saved once at the end of the run.

mod page;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, Record, RecordBatch};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::source::{blocking, scan};
use crate::io::{FileSystem, read_all, write_atomically};
use crate::log::PartitionLog;
use crate::topics::Topic;
pub use page::{PAGE_BYTES, PAGE_MESSAGES, PAGE_SCAN, RedriveFilter};

/// File of the redrive state inside a group's directory.
pub const FILE_NAME: &str = "redrive.json";

/// Per DLQ partition: where redrive goes on, and a batch in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveState {
    /// DLQ partition → next DLQ offset to redrive.
    pub cursors: BTreeMap<u32, u64>,
    /// DLQ partition → a batch being redriven.
    pub intents: BTreeMap<u32, Intent>,
}

/// A batch whose append may or may not have happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// DLQ offset of the batch's first message.
    pub from: u64,
    /// Where the page ends: the cursor once it landed.
    pub to: u64,
    /// The source partition's end offset before the append.
    pub source_end: u64,
}

/// One redriven message (kept only when asked for: version 0 answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redriven {
    /// Its DLQ offset.
    pub dlq_offset: u64,
    /// The source partition it went to.
    pub partition: u32,
    /// Its new offset there (0 on a dry run).
    pub new_offset: u64,
}

/// What a redrive is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedriveOptions {
    /// Most messages to move; 0: all.
    pub max: u64,
    /// Count what would move, move nothing.
    pub dry_run: bool,
    /// Most messages moved a second; 0: no limit.
    pub rate_per_sec: u32,
    /// Also list every message moved (memory: 24 bytes each; bound `max`).
    pub list: bool,
}

/// Why a redrive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedriveOutcome {
    /// Every DLQ partition was redriven to the end it had when its turn came.
    Done,
    /// `max` messages moved; more may wait.
    MaxReached,
    /// Stopped between pages: the broker is shutting down or the group is
    /// being deleted. What was moved stays moved; run it again for the rest.
    Interrupted,
}

/// What happened in one DLQ partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionReport {
    /// The DLQ partition (and the source partition its messages went to).
    pub partition: u32,
    /// First DLQ offset looked at.
    pub dlq_from: u64,
    /// Offset after the last DLQ record looked at.
    pub dlq_to: u64,
    /// The group's messages moved (would be, on a dry run).
    pub moved: u64,
    /// Records looked at that are not the group's (left in place).
    pub skipped: u64,
    /// The span of the new offsets in the source partition, `[first,
    /// last + 1)` (other producers' records may lie between pages); `None`
    /// when nothing moved or on a dry run.
    pub new_offsets: Option<(u64, u64)>,
}

/// The answer of a redrive: counts and ranges, bounded by the partition
/// count (plus the list, when asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveReport {
    /// Each DLQ partition where something was looked at, in order.
    pub partitions: Vec<PartitionReport>,
    /// Why it ended.
    pub outcome: RedriveOutcome,
    /// Every message moved, when [`RedriveOptions::list`] asked for it.
    pub messages: Vec<Redriven>,
}

impl RedriveReport {
    /// Messages moved (would be, on a dry run).
    pub fn moved(&self) -> u64 {
        self.partitions.iter().map(|p| p.moved).sum()
    }

    /// Records skipped as not the group's.
    pub fn skipped(&self) -> u64 {
        self.partitions.iter().map(|p| p.skipped).sum()
    }
}

/// One group's redrive turn: a second redrive waits for the first, and a
/// group being deleted cancels the running one.
#[derive(Debug, Default)]
pub struct RedriveSlot {
    /// Held for a whole redrive.
    pub turn: tokio::sync::Mutex<()>,
    /// Cancelled when the group is deleted.
    pub cancel: CancellationToken,
}

/// When a running redrive must stop: the broker shuts down, or its group
/// is deleted.
#[derive(Debug, Clone)]
pub struct Stop {
    shutdown: CancellationToken,
    group: CancellationToken,
}

impl Stop {
    /// Stops on either token.
    pub fn new(shutdown: CancellationToken, group: CancellationToken) -> Stop {
        Stop { shutdown, group }
    }

    /// Whether to stop now.
    pub fn is_set(&self) -> bool {
        self.shutdown.is_cancelled() || self.group.is_cancelled()
    }

    /// Completes when it is time to stop.
    pub async fn wait(&self) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = self.group.cancelled() => {}
        }
    }
}

fn load(fs: &dyn FileSystem, dir: &Path) -> Result<RedriveState, String> {
    let path = dir.join(FILE_NAME);
    if !fs.exists(&path) {
        return Ok(RedriveState::default());
    }
    let bytes =
        read_all(fs, &path, 16 << 20).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is damaged: {e}", path.display()))
}

fn save(fs: &dyn FileSystem, dir: &Path, state: &RedriveState) -> Result<(), String> {
    let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    blocking(|| write_atomically(fs, &dir.join(FILE_NAME), &bytes))
        .map_err(|e| format!("saving the redrive state: {e}"))
}

/// Whether the source partition holds, from `from_offset` on, the redrive
/// of DLQ offset `dlq_offset` of DLQ partition `dlq_partition` (its latest
/// redrive link: a message redriven, parked and redriven again carries
/// both). Read a page at a time.
fn landed(
    source: &Topic,
    partition: u32,
    from_offset: u64,
    dlq_partition: u32,
    dlq_offset: u64,
) -> Result<bool, String> {
    let Some(log) = source.partition(partition) else {
        return Ok(false);
    };
    let reader = log.reader();
    let (want_offset, want_partition) = (dlq_offset.to_string(), dlq_partition.to_string());
    let mut found = false;
    blocking(|| {
        scan(reader, from_offset, reader.end_offset(), PAGE_BYTES, |r| {
            found = r.header("pigeon.redrive.dlq-offset") == Some(want_offset.as_bytes())
                && r.header("pigeon.redrive.dlq-partition") == Some(want_partition.as_bytes());
            !found
        })
    })
    .map_err(|e| format!("looking for an interrupted redrive batch in the source topic: {e}"))?;
    Ok(found)
}

/// Redrives the messages of `filter`'s group from `dlq` into `source` as
/// `options` say, until done, `max`, or `stop`. `dir` is the group's
/// directory (its `redrive.json`).
pub async fn redrive(
    fs: &dyn FileSystem,
    dir: &Path,
    source: &Topic,
    dlq: &Topic,
    filter: &RedriveFilter,
    options: RedriveOptions,
    stop: &Stop,
) -> Result<RedriveReport, String> {
    let mut run = Run {
        fs,
        dir,
        source,
        filter,
        options,
        stop,
        state: load(fs, dir)?,
        limit: if options.max == 0 {
            u64::MAX
        } else {
            options.max
        },
        moved: 0,
        report: RedriveReport {
            partitions: Vec::new(),
            outcome: RedriveOutcome::Done,
            messages: Vec::new(),
        },
    };
    for (p, dlq_log) in dlq.partitions.iter().enumerate() {
        let p = p as u32;
        if source.partition(p).is_none() {
            continue;
        }
        run.finish_intent(p)?;
        let outcome = run.partition(p, dlq_log).await?;
        if outcome != RedriveOutcome::Done {
            run.report.outcome = outcome;
            break;
        }
    }
    Ok(run.report)
}

/// One call of [`redrive`].
struct Run<'a> {
    fs: &'a dyn FileSystem,
    /// The group's directory, holding the redrive state.
    dir: &'a Path,
    source: &'a Topic,
    /// Which records are the group's.
    filter: &'a RedriveFilter,
    options: RedriveOptions,
    stop: &'a Stop,
    state: RedriveState,
    /// Most messages moved in all.
    limit: u64,
    /// Messages moved so far (would be, dry run).
    moved: u64,
    /// The answer so far.
    report: RedriveReport,
}

impl Run<'_> {
    /// A batch of DLQ partition `p` interrupted by a crash: done (the cursor
    /// moves past it), or to do again.
    fn finish_intent(&mut self, p: u32) -> Result<(), String> {
        let Some(intent) = self.state.intents.get(&p).copied() else {
            return Ok(());
        };
        if landed(self.source, p, intent.source_end, p, intent.from)? {
            self.state.cursors.insert(p, intent.to);
        }
        self.state.intents.remove(&p);
        if !self.options.dry_run {
            save(self.fs, self.dir, &self.state)?;
        }
        Ok(())
    }

    /// Redrives DLQ partition `p` from its cursor, a page at a time, to the
    /// end it has now, unless `max` or the stop comes first.
    async fn partition(
        &mut self,
        p: u32,
        dlq_log: &PartitionLog,
    ) -> Result<RedriveOutcome, String> {
        let reader = dlq_log.reader();
        let saved = self.state.cursors.get(&p).copied().unwrap_or(0);
        let mut cursor = saved.max(reader.start_offset());
        let end = reader.end_offset();
        let mut report = PartitionReport {
            partition: p,
            dlq_from: cursor,
            dlq_to: cursor,
            moved: 0,
            skipped: 0,
            new_offsets: None,
        };
        let mut outcome = RedriveOutcome::Done;
        while cursor < end {
            if self.moved >= self.limit {
                outcome = RedriveOutcome::MaxReached;
                break;
            }
            if self.stop.is_set() {
                outcome = RedriveOutcome::Interrupted;
                break;
            }
            let want = PAGE_MESSAGES.min(self.limit - self.moved);
            let page = blocking(|| page::read(reader, cursor, end, want, self.filter))?;
            if page.to <= cursor {
                // Nothing readable up to `end` (the log moved under us).
                break;
            }
            report.skipped += page.skipped;
            if !page.records.is_empty() {
                self.take(p, &page.records, page.to, &mut report).await?;
                self.pace(page.records.len()).await;
            }
            cursor = page.to;
            report.dlq_to = cursor;
        }
        if !self.options.dry_run && cursor > saved && self.state.cursors.get(&p) != Some(&cursor) {
            // Past records that were skipped only.
            self.state.cursors.insert(p, cursor);
            save(self.fs, self.dir, &self.state)?;
        }
        if report.dlq_to > report.dlq_from {
            self.report.partitions.push(report);
        }
        Ok(outcome)
    }

    /// Moves (or, dry run, counts) the page `records` of DLQ partition `p`,
    /// which ends at `to`.
    async fn take(
        &mut self,
        p: u32,
        records: &[Record],
        to: u64,
        report: &mut PartitionReport,
    ) -> Result<(), String> {
        let count = records.len() as u64;
        let new_base = if self.options.dry_run {
            None
        } else {
            Some(self.move_batch(p, records, to).await?)
        };
        if let Some(base) = new_base {
            let (first, end) = report.new_offsets.unwrap_or((base, base));
            report.new_offsets = Some((first.min(base), end.max(base + count)));
        }
        if self.options.list {
            self.report
                .messages
                .extend(records.iter().enumerate().map(|(i, r)| Redriven {
                    dlq_offset: r.offset,
                    partition: p,
                    new_offset: new_base.map_or(0, |base| base + i as u64),
                }));
        }
        report.moved += count;
        self.moved += count;
        Ok(())
    }

    /// Moves `parked` (DLQ partition `p`, a page ending at `to`) into the
    /// source partition `p` as one batch: intent, append, cursor (the
    /// module's crash story). Returns the batch's first new offset.
    async fn move_batch(&mut self, p: u32, parked: &[Record], to: u64) -> Result<u64, String> {
        let log = self.source.partition(p).ok_or("source partition missing")?;
        let intent = Intent {
            from: parked[0].offset,
            to,
            source_end: log.reader().end_offset(),
        };
        self.state.intents.insert(p, intent);
        save(self.fs, self.dir, &self.state)?;
        let batch = redrive_batch(parked, p)?;
        let appended = log
            .append(batch)
            .await
            .map_err(|e| format!("appending to the source topic: {e}"))?;
        self.state.intents.remove(&p);
        self.state.cursors.insert(p, to);
        save(self.fs, self.dir, &self.state)?;
        Ok(appended.base_offset)
    }

    /// Waits as long as `moved` messages take at the run's rate, or until
    /// the stop.
    async fn pace(&self, moved: usize) {
        if self.options.rate_per_sec > 0 {
            let wait = Duration::from_secs_f64(moved as f64 / f64::from(self.options.rate_per_sec));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.wait() => {}
            }
        }
    }
}

/// One batch holding the parked records, as new records of the source.
fn redrive_batch(parked: &[Record], dlq_partition: u32) -> Result<RecordBatch, String> {
    let mut builder = BatchBuilder::new();
    for record in parked {
        let links = [
            ("pigeon.redrive.dlq-offset", record.offset.to_string()),
            ("pigeon.redrive.dlq-partition", dlq_partition.to_string()),
        ];
        let mut headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .filter(|h| !h.name.starts_with("pigeon.dlq."))
            .map(|h| (h.name.as_str(), h.value.as_ref()))
            .collect();
        headers.extend(links.iter().map(|(n, v)| (*n, v.as_bytes())));
        builder.push(record.key.as_deref(), &record.value, &headers);
    }
    RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), usize::MAX)
        .map_err(|e| e.to_string())
}
