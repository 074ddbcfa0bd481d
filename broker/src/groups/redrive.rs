//! DLQ redrive: moving parked messages back into the source topic, as new
//! records, without ever moving one twice.
//!
//! Each DLQ partition is redriven into the source partition with the same
//! number, in DLQ offset order, a batch at a time. A redriven record keeps
//! the parked record's key, value and original headers (the `pigeon.dlq.*`
//! ones are dropped) and gains `pigeon.redrive.dlq-offset` and
//! `pigeon.redrive.dlq-partition`.
//!
//! ## Crash story (file `redrive.json` in the group's directory)
//!
//! For every batch:
//! 1. Write an **intent** durably: the DLQ range `[from, to)` and the source
//!    partition's end offset before the append.
//! 2. Append the batch to the source partition (one batch: all or nothing)
//!    and wait until it is durable.
//! 3. Write the **cursor** `to` durably, clearing the intent.
//!
//! A crash after 1 leaves an intent: the next redrive looks for the batch in
//! the source partition from the recorded end offset (a record whose
//! `pigeon.redrive.dlq-offset` is `from`). Found: the batch landed, the
//! cursor moves past it. Not found: it is redriven again. So running redrive
//! twice, or crashing half-way, moves no message twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, Record, RecordBatch};
use serde::{Deserialize, Serialize};

use super::source::read_records;
use crate::io::{FileSystem, read_all, write_atomically};
use crate::log::PartitionLog;
use crate::topics::Topic;

/// File of the redrive state inside a group's directory.
pub const FILE_NAME: &str = "redrive.json";
/// Most messages moved per batch.
const BATCH: u64 = 256;

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
    /// First DLQ offset of the batch.
    pub from: u64,
    /// Offset after its last.
    pub to: u64,
    /// The source partition's end offset before the append.
    pub source_end: u64,
}

/// One redriven message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redriven {
    /// Its DLQ offset.
    pub dlq_offset: u64,
    /// The source partition it went to.
    pub partition: u32,
    /// Its new offset there (0 on a dry run).
    pub new_offset: u64,
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
    write_atomically(fs, &dir.join(FILE_NAME), &bytes)
        .map_err(|e| format!("saving the redrive state: {e}"))
}

/// Whether the source partition holds, from `from_offset` on, the redrive
/// of DLQ offset `dlq_offset` of DLQ partition `dlq_partition`.
fn landed(
    source: &Topic,
    partition: u32,
    from_offset: u64,
    dlq_partition: u32,
    dlq_offset: u64,
) -> bool {
    let Some(log) = source.partition(partition) else {
        return false;
    };
    let reader = log.reader();
    let offsets: Vec<u64> = (from_offset.max(reader.start_offset())..reader.end_offset()).collect();
    let (want_offset, want_partition) = (dlq_offset.to_string(), dlq_partition.to_string());
    read_records(reader, &offsets).iter().any(|r| {
        r.header("pigeon.redrive.dlq-offset") == Some(want_offset.as_bytes())
            && r.header("pigeon.redrive.dlq-partition") == Some(want_partition.as_bytes())
    })
}

/// Redrives up to `max` messages (0: all) of `dlq` into `source`, at most
/// `rate_per_sec` a second (0: no limit); a dry run moves nothing and lists
/// what would move.
pub async fn redrive(
    fs: &dyn FileSystem,
    dir: &Path,
    source: &Topic,
    dlq: &Topic,
    max: u64,
    dry_run: bool,
    rate_per_sec: u32,
) -> Result<Vec<Redriven>, String> {
    let mut run = Run {
        fs,
        dir,
        source,
        dry_run,
        rate_per_sec,
        state: load(fs, dir)?,
        limit: if max == 0 { u64::MAX } else { max },
        out: Vec::new(),
    };
    for (p, dlq_log) in dlq.partitions.iter().enumerate() {
        let p = p as u32;
        if source.partition(p).is_none() {
            continue;
        }
        run.finish_intent(p)?;
        run.partition(p, dlq_log).await?;
    }
    Ok(run.out)
}

/// One call of [`redrive`].
struct Run<'a> {
    fs: &'a dyn FileSystem,
    /// The group's directory, holding the redrive state.
    dir: &'a Path,
    source: &'a Topic,
    dry_run: bool,
    /// Messages a second (0: no limit).
    rate_per_sec: u32,
    state: RedriveState,
    /// Most messages moved in all.
    limit: u64,
    /// What was moved (or would be, on a dry run), so far.
    out: Vec<Redriven>,
}

impl Run<'_> {
    /// A batch of DLQ partition `p` interrupted by a crash: done (the cursor
    /// moves past it), or to do again.
    fn finish_intent(&mut self, p: u32) -> Result<(), String> {
        let Some(intent) = self.state.intents.get(&p).copied() else {
            return Ok(());
        };
        if landed(self.source, p, intent.source_end, p, intent.from) {
            self.state.cursors.insert(p, intent.to);
        }
        self.state.intents.remove(&p);
        if !self.dry_run {
            save(self.fs, self.dir, &self.state)?;
        }
        Ok(())
    }

    /// Redrives DLQ partition `p` from its cursor, a batch at a time, until
    /// the partition's end or the run's limit.
    async fn partition(&mut self, p: u32, dlq_log: &PartitionLog) -> Result<(), String> {
        let reader = dlq_log.reader();
        let mut cursor = self
            .state
            .cursors
            .get(&p)
            .copied()
            .unwrap_or(0)
            .max(reader.start_offset());
        while (self.out.len() as u64) < self.limit && cursor < reader.end_offset() {
            let take = BATCH
                .min(self.limit - self.out.len() as u64)
                .min(reader.end_offset() - cursor);
            let offsets: Vec<u64> = (cursor..cursor + take).collect();
            let parked = read_records(reader, &offsets);
            let to = cursor + take;
            if self.dry_run {
                self.out.extend(parked.iter().map(|r| Redriven {
                    dlq_offset: r.offset,
                    partition: p,
                    new_offset: 0,
                }));
            } else if !parked.is_empty() {
                self.move_batch(p, &parked, to).await?;
                self.pace(parked.len()).await;
            }
            cursor = to;
        }
        Ok(())
    }

    /// Moves `parked` (DLQ partition `p`, up to offset `to`) into the source
    /// partition `p` as one batch: intent, append, cursor (the module's
    /// crash story).
    async fn move_batch(&mut self, p: u32, parked: &[Record], to: u64) -> Result<(), String> {
        let log = self.source.partition(p).ok_or("source partition missing")?;
        let source_end = log.reader().end_offset();
        self.state.intents.insert(
            p,
            Intent {
                from: parked[0].offset,
                to,
                source_end,
            },
        );
        save(self.fs, self.dir, &self.state)?;
        let batch = redrive_batch(parked, p)?;
        let appended = log
            .append(batch)
            .await
            .map_err(|e| format!("appending to the source topic: {e}"))?;
        for (i, record) in parked.iter().enumerate() {
            self.out.push(Redriven {
                dlq_offset: record.offset,
                partition: p,
                new_offset: appended.base_offset + i as u64,
            });
        }
        self.state.intents.remove(&p);
        self.state.cursors.insert(p, to);
        save(self.fs, self.dir, &self.state)
    }

    /// Waits as long as `moved` messages take at the run's rate.
    async fn pace(&self, moved: usize) {
        if self.rate_per_sec > 0 {
            tokio::time::sleep(Duration::from_secs_f64(
                moved as f64 / f64::from(self.rate_per_sec),
            ))
            .await;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::io::StdFs;
    use crate::log::{LogConfig, SystemClock};
    use crate::topics::{NewTopic, Topics};

    async fn setup(tmp: &Path) -> (Topics, Arc<Topic>, Arc<Topic>) {
        let topics = Topics::open(
            Arc::new(StdFs),
            tmp,
            LogConfig::default(),
            Arc::new(SystemClock),
        )
        .expect("topics");
        let new = |name: &str| NewTopic {
            name: name.into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
        };
        let source = topics.create(new("t")).await.expect("source");
        let dlq = topics.create(new("t.g.dlq")).await.expect("dlq");
        for i in 0..3 {
            let mut b = BatchBuilder::new();
            b.push(
                None,
                format!("parked {i}").as_bytes(),
                &[("pigeon.dlq.reason", b"rejected")],
            );
            let batch =
                RecordBatch::validate(b.build(ProducerStamp::NONE, 0), usize::MAX).expect("batch");
            dlq.partitions[0].append(batch).await.expect("park");
        }
        (topics, source, dlq)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_landed_before_a_crash_is_not_moved_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_topics, source, dlq) = setup(tmp.path()).await;
        let group_dir = tmp.path().join("g");
        std::fs::create_dir_all(&group_dir).expect("dir");
        // The crash came after the append and before the cursor was saved.
        let parked = read_records(dlq.partitions[0].reader(), &[0, 1, 2]);
        let intent = Intent {
            from: 0,
            to: 3,
            source_end: source.partitions[0].reader().end_offset(),
        };
        let state = RedriveState {
            cursors: BTreeMap::new(),
            intents: [(0, intent)].into(),
        };
        save(&StdFs, &group_dir, &state).expect("save");
        source.partitions[0]
            .append(redrive_batch(&parked, 0).expect("batch"))
            .await
            .expect("append");
        let moved = redrive(&StdFs, &group_dir, &source, &dlq, 0, false, 0)
            .await
            .expect("redrive");
        assert!(moved.is_empty(), "moved again: {moved:?}");
        assert_eq!(source.partitions[0].reader().end_offset(), 3);
        assert_eq!(
            load(&StdFs, &group_dir).expect("load").cursors.get(&0),
            Some(&3)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_redriven_twice_is_found_by_its_latest_redrive_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_topics, source, _dlq) = setup(tmp.path()).await;
        // Redriven once from DLQ offset 7, parked again, redriven again from
        // DLQ offset 1: the first link is still among its headers.
        let mut b = BatchBuilder::new();
        b.push(
            None,
            b"twice",
            &[
                ("pigeon.redrive.dlq-offset", b"7"),
                ("pigeon.redrive.dlq-partition", b"0"),
                ("pigeon.redrive.dlq-offset", b"1"),
                ("pigeon.redrive.dlq-partition", b"0"),
            ],
        );
        let batch =
            RecordBatch::validate(b.build(ProducerStamp::NONE, 0), usize::MAX).expect("batch");
        source.partitions[0].append(batch).await.expect("append");
        assert!(landed(&source, 0, 0, 0, 1), "the latest link counts");
        assert!(!landed(&source, 0, 0, 0, 7), "an earlier link is history");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_did_not_land_before_a_crash_is_moved_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_topics, source, dlq) = setup(tmp.path()).await;
        let group_dir = tmp.path().join("g");
        std::fs::create_dir_all(&group_dir).expect("dir");
        let intent = Intent {
            from: 0,
            to: 3,
            source_end: 0,
        };
        save(
            &StdFs,
            &group_dir,
            &RedriveState {
                cursors: BTreeMap::new(),
                intents: [(0, intent)].into(),
            },
        )
        .expect("save");
        let moved = redrive(&StdFs, &group_dir, &source, &dlq, 0, false, 0)
            .await
            .expect("redrive");
        assert_eq!(
            moved
                .iter()
                .map(|m| (m.dlq_offset, m.new_offset))
                .collect::<Vec<_>>(),
            vec![(0, 0), (1, 1), (2, 2)]
        );
        let again = redrive(&StdFs, &group_dir, &source, &dlq, 0, false, 0)
            .await
            .expect("again");
        assert!(again.is_empty());
    }
}
