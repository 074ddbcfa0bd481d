//! Power-cut tests of the partition log, disk faults that `tests.rs` does not
//! cover, and a bounded fuzz of recovery over arbitrary segment bytes.
//!
//! ## Power cuts
//!
//! Each case runs the log on a [`PowerCutFs`] through random appends (plain
//! and idempotent), commits, rolls, timer syncs, explicit syncs, idle
//! checkpoints, the jobs
//! of background seals (`fsync=never`/`interval`: a roll leaves the sealed
//! segment's sync to a job, which runs only when a step says so, so the
//! cut lands before, during or after it, and before or after the
//! checkpoint the next commit writes for it), clean restarts and
//! `kill -9` restarts, recording which appends were acknowledged (commit
//! returned `Ok`) and which the log claims are synced. Then the power is cut,
//! either between two calls or in the middle of one (the file system fails
//! every call after a random budget, so the cut can land inside a roll, a
//! checkpoint, a retention delete or a recovery), and the real files are
//! rewritten to what a power cut leaves (see [`crate::io::PowerCutFs`]). The
//! log is reopened with the plain [`StdFs`] and must:
//!
//! - open (recovery succeeds);
//! - serve offsets densely from its start to its end, every batch passing
//!   its CRC, every record byte-for-byte the value appended at that offset;
//! - keep everything the log reported as synced (`durable_position`), so the
//!   loss is at most the unsynced suffix: never a hole;
//! - under `fsync=always`, keep every acknowledged record;
//! - answer a retry of any surviving idempotent batch still in the producer
//!   cache as a duplicate with its original offsets, never append it twice.
//!
//! A case runs 1–3 rounds of "work, cut, check". Seeds: a random base seed is
//! printed; `PIGEON_TEST_SEED=<seed>` replays it. The long form:
//! `cargo test -p pigeon-broker --release power_cut_long -- --ignored --nocapture`
//! (`PIGEON_POWERCUT_CASES` sets the number of cases per policy).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pigeon_protocol::batch::{
    BatchBuilder, ProducerStamp, RecordBatch, read_prefix, records_of, verify_stored,
};

use super::producers::CACHED_BATCHES;
use super::*;
use proptest::prelude::*;

use crate::io::{Fault, FaultPlan, FaultyFs, FileSystem, Op, PowerCutFs, StdFs};

const T0: i64 = 1_700_000_000_000;
const PID: i64 = 7;

/// splitmix64, so a case replays exactly from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

fn base_seed() -> u64 {
    match std::env::var("PIGEON_TEST_SEED") {
        Ok(seed) => seed.trim().parse().expect("PIGEON_TEST_SEED must be a u64"),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Rng(nanos ^ u64::from(std::process::id())).next()
        }
    }
}

/// A temp dir in `/dev/shm` when there is one: the checks reopen the log
/// with the real [`StdFs`], whose fsyncs cost milliseconds on a disk and
/// nothing in memory (durability itself is simulated by [`PowerCutFs`]).
fn fast_tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

fn make_batch(values: &[Vec<u8>], producer: ProducerStamp) -> RecordBatch {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(None, value, &[]);
    }
    RecordBatch::validate(builder.build(producer, 0), 1 << 20).expect("valid batch")
}

fn stamp(sequence: i32) -> ProducerStamp {
    ProducerStamp {
        producer_id: PID,
        producer_epoch: 0,
        base_sequence: sequence,
    }
}

/// Every record from `from` to the end as `(offset, value)`, checking each
/// served batch's CRC.
fn read_records(reader: &LogReader, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let result = reader
            .read(offset, 4096)
            .unwrap_or_else(|e| panic!("read at {offset} failed: {e}"));
        if result.bytes.is_empty() {
            return out;
        }
        let mut bytes = &result.bytes[..];
        while !bytes.is_empty() {
            let (_, length) = read_prefix(bytes).expect("batch prefix");
            let total = 12 + length as usize;
            verify_stored(&bytes[..total], 1 << 20).expect("served batches verify");
            let records = records_of(Bytes::copy_from_slice(&bytes[..total])).expect("batch");
            for record in records {
                let record = record.expect("record");
                if record.offset >= offset {
                    out.push((record.offset, record.value.to_vec()));
                }
            }
            bytes = &bytes[total..];
        }
        offset = out.last().map_or(offset, |r| r.0 + 1);
    }
}

/// An idempotent batch that was appended (staged at least).
#[derive(Debug, Clone)]
struct IdemBatch {
    sequence: i32,
    base: u64,
    last: u64,
    values: Vec<Vec<u8>>,
}

/// Figures over a run.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    cases: u64,
    cuts: u64,
    cuts_mid_call: u64,
    cuts_in_recovery: u64,
    records_checked: u64,
    acked_checked: u64,
    acked_lost: u64,
    unsynced_lost: u64,
    torn: u64,
    vanished: u64,
    restored: u64,
    index_truncated: u64,
    index_pages_reverted: u64,
    index_pages_kept: u64,
    duplicates_checked: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.cases += o.cases;
        self.cuts += o.cuts;
        self.cuts_mid_call += o.cuts_mid_call;
        self.cuts_in_recovery += o.cuts_in_recovery;
        self.records_checked += o.records_checked;
        self.acked_checked += o.acked_checked;
        self.acked_lost += o.acked_lost;
        self.unsynced_lost += o.unsynced_lost;
        self.torn += o.torn;
        self.vanished += o.vanished;
        self.restored += o.restored;
        self.index_truncated += o.index_truncated;
        self.index_pages_reverted += o.index_pages_reverted;
        self.index_pages_kept += o.index_pages_kept;
        self.duplicates_checked += o.duplicates_checked;
    }
}

struct Case {
    seed: u64,
    policy: FsyncPolicy,
    rng: Rng,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: LogConfig,
    clock: ManualClock,
    fs: PowerCutFs,
    /// Every value appended, by offset (offsets are reused only after a cut
    /// lost them).
    written: BTreeMap<u64, Vec<u8>>,
    /// Offsets below this were acknowledged.
    acked_end: u64,
    /// Offsets below this are covered by a completed fsync, as the log says.
    durable_end: u64,
    /// Log start offset last seen.
    start: u64,
    idem: Vec<IdemBatch>,
    next_sequence: i32,
    counter: u64,
    stats: Stats,
}

impl Case {
    fn new(seed: u64, policy: FsyncPolicy) -> Case {
        let mut rng = Rng(seed);
        let tmp = fast_tempdir();
        let dir = tmp.path().join("p");
        let segment_bytes = [1024, 2048, 4096][rng.below(3) as usize];
        // Half the cases write zeros ahead of every small commit (under
        // fsync=always): preallocate, and the log busy from the start.
        let preallocate = rng.chance(2);
        let config = LogConfig {
            segment_bytes,
            index_interval_bytes: 128,
            fsync: policy,
            preallocate,
            retention_ms: None,
            retention_bytes: rng.chance(3).then(|| segment_bytes * 3),
            checkpoint_interval_bytes: [512, 4096, 1 << 30][rng.below(3) as usize],
            ..LogConfig::default()
        };
        Case {
            seed,
            policy,
            rng,
            _tmp: tmp,
            dir,
            config,
            clock: ManualClock::new(T0),
            fs: PowerCutFs::new(),
            written: BTreeMap::new(),
            acked_end: 0,
            durable_end: 0,
            start: 0,
            idem: Vec::new(),
            next_sequence: 0,
            counter: 0,
            stats: Stats {
                cases: 1,
                ..Stats::default()
            },
        }
    }

    /// Opens the log; background seals run when a step says so (or when
    /// the log waits for one), so a cut lands before, during or after one.
    fn open_with(&self, fs: Arc<dyn FileSystem>) -> LogResult<Log> {
        Log::open(
            fs,
            &self.dir,
            self.config.clone(),
            Arc::new(self.clock.clone()),
        )
        .map(Log::with_manual_seals)
        .map(|mut log| {
            if self.config.preallocate {
                log.small_writes = super::writer::commit::WriteRate::busy_for_an_hour();
            }
            log
        })
    }

    fn open_cut(&self) -> LogResult<Log> {
        self.open_with(Arc::new(self.fs.clone()))
    }

    fn run(mut self) -> Stats {
        let rounds = 1 + self.rng.below(3);
        for _ in 0..rounds {
            self.round();
        }
        self.stats
    }

    /// Work until the power goes off or the steps run out, cut, check.
    fn round(&mut self) {
        if self.rng.chance(6) {
            // The cut lands inside the recovery of the previous cut.
            self.fs.fail_after(self.rng.below(25));
        }
        let mut log = match self.open_cut() {
            Ok(log) => Some(log),
            Err(e) => {
                assert!(self.fs.is_off(), "open failed without a power cut: {e}");
                self.stats.cuts_in_recovery += 1;
                None
            }
        };
        if let Some(log) = &log {
            self.note_durable(log);
        }
        if log.is_some() && self.rng.chance(2) {
            self.fs.fail_after(self.rng.below(300));
        }
        let steps = 5 + self.rng.below(80);
        for _ in 0..steps {
            let Some(next_before) = log.as_ref().map(Log::next_offset) else {
                break;
            };
            if self.fs.is_off() {
                break;
            }
            let result = self.step(&mut log, next_before);
            if let Err(e) = result {
                assert!(
                    self.fs.is_off(),
                    "a call failed without a power failure: {e}"
                );
                break;
            }
            if let Some(log) = &log {
                self.note_durable(log);
            }
        }
        if self.fs.is_off() {
            self.stats.cuts_mid_call += 1;
        } else if let Some(current) = log.as_mut().filter(|_| self.rng.chance(2)) {
            // The power goes while a group is written but not yet synced.
            let written = self.append(current).and_then(|()| current.flush_writes());
            if let Err(e) = written {
                assert!(
                    self.fs.is_off(),
                    "a call failed without a power failure: {e}"
                );
            }
            self.note_durable(current);
        }
        drop(log);
        let report = self.fs.power_cut(self.rng.next()).expect("power cut");
        self.stats.cuts += 1;
        self.stats.torn += report.torn as u64;
        self.stats.vanished += report.vanished as u64;
        self.stats.restored += report.restored as u64;
        self.stats.index_truncated += report.index_truncated as u64;
        self.stats.index_pages_reverted += report.pages_reverted as u64;
        self.stats.index_pages_kept += report.pages_kept as u64;
        self.check_after_cut();
    }

    fn step(&mut self, log: &mut Option<Log>, next_before: u64) -> LogResult<()> {
        let current = log.as_mut().expect("open");
        match self.rng.below(28) {
            0..=11 => self.append(current),
            12..=17 => {
                current.commit()?;
                self.acked_end = current.next_offset();
                if self.policy == FsyncPolicy::Always {
                    assert_eq!(
                        current.durable_position(),
                        current.end_position(),
                        "fsync=always acknowledged unsynced bytes"
                    );
                }
                Ok(())
            }
            18 => current.roll(),
            // Written, not yet synced: what the writer does before its fsync.
            19 => current.flush_writes(),
            20 => match self.policy {
                // What the interval policy's timer does: the active
                // segment only, not waiting for a background seal.
                FsyncPolicy::Never => Ok(()),
                _ => current.sync_active(),
            },
            // An explicit sync (a journal before its snapshot): waits for
            // a background seal too.
            21 => current.sync(),
            // A background seal's job: sync the sealed segment and its
            // indexes; the next commit writes its checkpoint.
            23 | 24 => {
                current.run_seal_job();
                Ok(())
            }
            // The writer's idle checkpoint, as its timer writes it once the
            // log took no write for a while (a no-op unless everything
            // written is synced and the last checkpoint is behind).
            25 => {
                current.checkpoint_if_idle(Instant::now() + Duration::from_secs(3600));
                Ok(())
            }
            22 => {
                // Clean restart on the same (simulated) disk.
                let closing = log.take().expect("open");
                closing.close()?;
                self.durable_end = self.durable_end.max(next_before);
                *log = Some(self.open_cut()?);
                Ok(())
            }
            _ => {
                // kill -9 (a background seal's job dies with the process):
                // the page cache survives, staged appends do not.
                let written_end = {
                    let current = log.as_ref().expect("open");
                    current.reader().end_offset()
                };
                drop(log.take());
                let reopened = self.open_cut()?;
                assert!(
                    reopened.next_offset() >= written_end.max(self.acked_end),
                    "kill -9 lost written records: next {} < {}",
                    reopened.next_offset(),
                    written_end.max(self.acked_end)
                );
                // Appends staged but never written died with the process.
                self.forget_from(reopened.next_offset());
                *log = Some(reopened);
                Ok(())
            }
        }
    }

    fn append(&mut self, log: &mut Log) -> LogResult<()> {
        self.clock.advance(1 + self.rng.below(50) as i64);
        let count = 1 + self.rng.below(4) as usize;
        let values: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                self.counter += 1;
                let size = if self.rng.chance(8) {
                    300 + self.rng.below(700)
                } else {
                    self.rng.below(120)
                } as usize;
                let tag = (self.seed ^ self.counter).to_le_bytes();
                let mut value = self.counter.to_le_bytes().to_vec();
                value.extend((0..size).map(|i| tag[i % 8]));
                value
            })
            .collect();
        let idempotent = self.rng.chance(3);
        let producer = if idempotent {
            stamp(self.next_sequence)
        } else {
            ProducerStamp::NONE
        };
        let info = log.append(&make_batch(&values, producer))?;
        assert!(!info.duplicate, "a new batch was taken for a duplicate");
        for (i, value) in values.iter().enumerate() {
            self.written
                .insert(info.base_offset + i as u64, value.clone());
        }
        if idempotent {
            self.idem.push(IdemBatch {
                sequence: self.next_sequence,
                base: info.base_offset,
                last: info.last_offset,
                values,
            });
            self.next_sequence += count as i32;
        }
        Ok(())
    }

    /// Records what the log says is synced, and its start.
    fn note_durable(&mut self, log: &Log) {
        if log.durable_position() == log.end_position() {
            self.durable_end = self.durable_end.max(log.reader().end_offset());
        }
        // Retention moves the start in memory before deleting files: the
        // start after a cut may be earlier (deletes undone), never later.
        self.start = log.reader().start_offset();
    }

    fn check_after_cut(&mut self) {
        let mut log = self
            .open_with(Arc::new(StdFs))
            .unwrap_or_else(|e| panic!("recovery after a power cut failed: {e}"));
        let reader = log.reader();
        let start = reader.start_offset();
        let next = log.next_offset();
        assert!(
            start <= self.start,
            "the log starts at {start}, after {}: more was deleted than retention did",
            self.start
        );
        let records = read_records(&reader, start);
        let offsets: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert!(
            offsets.iter().copied().eq(start..next),
            "offsets are not dense from {start} to {next}: {offsets:?}"
        );
        for (offset, value) in &records {
            let want = self.written.get(offset);
            assert!(
                want == Some(value),
                "offset {offset} holds bytes that were never appended there"
            );
        }
        assert!(
            self.acked_end <= self.durable_end || self.policy != FsyncPolicy::Always,
            "fsync=always acknowledged up to {} but synced only up to {}",
            self.acked_end,
            self.durable_end
        );
        assert!(
            next >= self.durable_end,
            "records {next}..{} were reported synced and are gone",
            self.durable_end
        );
        if self.policy == FsyncPolicy::Always {
            assert!(
                next >= self.acked_end,
                "acknowledged records {next}..{} are gone",
                self.acked_end
            );
        }
        let written_end = self.written.keys().next_back().map_or(0, |o| o + 1);
        self.stats.records_checked += records.len() as u64;
        self.stats.acked_checked += self.acked_end.min(next).saturating_sub(start);
        self.stats.acked_lost += self.acked_end.saturating_sub(next);
        self.stats.unsynced_lost += written_end.saturating_sub(next);
        self.check_retries(&mut log, next);
        // The survivors are the new baseline.
        self.acked_end = self.acked_end.min(next);
        self.durable_end = next;
        self.start = start;
        if self.rng.chance(2) {
            log.close().expect("clean close after recovery");
        }
    }

    /// Forgets appends from offset `next` on: they did not survive, and
    /// their offsets and sequences will be used again.
    fn forget_from(&mut self, next: u64) {
        self.written.split_off(&next);
        self.idem.retain(|b| b.last < next);
        self.next_sequence = self
            .idem
            .last()
            .map_or(0, |b| b.sequence + (b.last - b.base) as i32 + 1);
    }

    /// Retries of surviving idempotent batches are answered as duplicates.
    fn check_retries(&mut self, log: &mut Log, next: u64) {
        self.forget_from(next);
        let cached = self.idem.len().saturating_sub(CACHED_BATCHES);
        for batch in &self.idem[cached..] {
            let info = log
                .append(&make_batch(&batch.values, stamp(batch.sequence)))
                .unwrap_or_else(|e| panic!("retry of sequence {}: {e}", batch.sequence));
            assert!(
                info.duplicate,
                "a retried batch was appended again (sequence {})",
                batch.sequence
            );
            assert_eq!(
                (info.base_offset, info.last_offset),
                (batch.base, batch.last),
                "a retry was answered with other offsets"
            );
            self.stats.duplicates_checked += 1;
        }
        if let Some(old) = cached.checked_sub(1).map(|i| self.idem[i].clone()) {
            // Too old to be answered: refused, and certainly not appended.
            let result = log.append(&make_batch(&old.values, stamp(old.sequence)));
            assert!(
                result.as_ref().is_err() || result.as_ref().is_ok_and(|i| i.duplicate),
                "an old retried batch was appended again: {result:?}"
            );
        }
        log.commit().expect("commit after retries");
        assert_eq!(log.next_offset(), next, "retries appended nothing");
    }
}

fn case_count(default: u64) -> u64 {
    std::env::var("PIGEON_POWERCUT_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` cases under `policy` and prints the figures.
fn run_cases(policy: FsyncPolicy, cases: u64) -> Stats {
    let seed = base_seed();
    println!(
        "power cut, fsync={policy}: base seed {seed} (replay: PIGEON_TEST_SEED={seed} cargo test -p pigeon-broker power_cut)"
    );
    let started = Instant::now();
    let mut total = Stats::default();
    for i in 0..cases {
        let case_seed = Rng(seed.wrapping_add(i)).next();
        let outcome = std::panic::catch_unwind(|| Case::new(case_seed, policy).run());
        match outcome {
            Ok(stats) => total.add(&stats),
            Err(panic) => {
                eprintln!(
                    "power cut case {i} failed: fsync={policy}, base seed {seed} (PIGEON_TEST_SEED={seed})"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    println!(
        "power cut, fsync={policy}: {} cases, {} cuts ({} inside a call, {} inside recovery) in {:.2} s; \
         {} records checked byte for byte, {} of them acknowledged; acknowledged lost: {}; \
         unsynced records lost: {}; torn writes: {}; entries vanished: {}, restored: {}; \
         index files cut: {}; unsynced index pages reverted: {}, kept: {}; duplicate retries checked: {}",
        total.cases,
        total.cuts,
        total.cuts_mid_call,
        total.cuts_in_recovery,
        started.elapsed().as_secs_f64(),
        total.records_checked,
        total.acked_checked,
        total.acked_lost,
        total.unsynced_lost,
        total.torn,
        total.vanished,
        total.restored,
        total.index_truncated,
        total.index_pages_reverted,
        total.index_pages_kept,
        total.duplicates_checked,
    );
    total
}

#[test]
fn power_cut_with_fsync_always_loses_no_acknowledged_record() {
    let stats = run_cases(FsyncPolicy::Always, case_count(200));
    assert_eq!(stats.acked_lost, 0);
    assert!(stats.torn > 0 && stats.cuts_mid_call > 0, "{stats:?}");
}

#[test]
fn power_cut_with_fsync_interval_loses_only_an_unsynced_suffix() {
    // The timer is driven by the test (`sync` steps), so a seed replays.
    let policy = FsyncPolicy::Interval(Duration::from_secs(3600));
    let stats = run_cases(policy, case_count(100));
    assert!(stats.cuts > 0, "{stats:?}");
}

#[test]
fn power_cut_with_fsync_never_loses_only_an_unsynced_suffix() {
    let stats = run_cases(FsyncPolicy::Never, case_count(100));
    assert!(
        stats.unsynced_lost > 0,
        "fsync=never should lose something: {stats:?}"
    );
}

#[test]
#[ignore = "long form: thousands of power cuts; run with --release -- --ignored"]
fn power_cut_long() {
    let cases = case_count(2000);
    let mut total = Stats::default();
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_secs(3600)),
        FsyncPolicy::Never,
    ] {
        total.add(&run_cases(policy, cases));
    }
    println!("power cut, all policies: {total:?}");
}

// ---------------------------------------------------------------------------
// Disk faults that `tests.rs` does not cover: a full disk while writing the
// checkpoint or the producer snapshot, and failures during recovery itself.
// ---------------------------------------------------------------------------

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:06}").into_bytes()
}

fn fault_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        checkpoint_interval_bytes: 512,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

fn open_faulty(dir: &std::path::Path, plan: &FaultPlan, config: &LogConfig) -> LogResult<Log> {
    Log::open(
        Arc::new(FaultyFs::new(plan.clone())),
        dir,
        config.clone(),
        Arc::new(ManualClock::new(T0)),
    )
}

/// Appends idempotent one-record batches `from..from + n` of producer 7.
fn append_values(log: &mut Log, from: u64, n: u64) {
    for i in from..from + n {
        let batch = make_batch(&[value(i)], stamp(i as i32));
        let info = log.append(&batch).expect("append");
        assert_eq!(info.base_offset, i);
        log.commit().expect("commit");
    }
}

fn assert_holds(log: &Log, n: u64) {
    let records = read_records(&log.reader(), 0);
    let want: Vec<(u64, Vec<u8>)> = (0..n).map(|i| (i, value(i))).collect();
    assert!(
        records == want,
        "the log does not hold exactly records 0..{n}"
    );
    assert_eq!(log.next_offset(), n);
}

#[test]
fn disk_full_while_writing_checkpoints_and_snapshots_keeps_the_log_working() {
    // Creating the temp file, writing it, and the rename's directory sync.
    let faults = [
        (Op::Write, "checkpoint.tmp"),
        (Op::Write, "producers.snapshot.tmp"),
        (Op::Open, "checkpoint.tmp"),
        (Op::Open, "producers.snapshot.tmp"),
        (Op::DirOp, "checkpoint"),
    ];
    for (op, path) in faults {
        let tmp = fast_tempdir();
        let dir = tmp.path().join("p");
        let plan = FaultPlan::new();
        let config = fault_config();
        let mut log = open_faulty(&dir, &plan, &config).expect("open");
        append_values(&mut log, 0, 10);
        plan.inject(op, path, Fault::NoSpace, 0, None);
        // Many checkpoints and several rolls come due; none can be written.
        append_values(&mut log, 10, 150);
        assert!(log.reader().segment_count() > 2, "rolls happened");
        assert_holds(&log, 160);
        // A crash while the disk is still full: recovery scans further back
        // (its own checkpoint fails too) and keeps everything.
        drop(log);
        if op == Op::DirOp {
            // The rule would also fail the removal of the leftover temp file
            // at open (a clear error); unlinks rarely need space.
            plan.clear();
        }
        let mut log = open_faulty(&dir, &plan, &config).expect("reopen on a full disk");
        assert_holds(&log, 160);
        let retry = log
            .append(&make_batch(&[value(159)], stamp(159)))
            .expect("retry");
        assert!(retry.duplicate, "{op:?} {path}: producer state survived");
        plan.clear();
        append_values(&mut log, 160, 5);
        log.close().expect("close");
        let log = open_faulty(&dir, &plan, &config).expect("reopen");
        assert!(log.recovery_report().clean, "{op:?} {path}");
        assert_holds(&log, 165);
        assert!(
            std::fs::read_dir(&dir).expect("list").all(|e| !e
                .expect("entry")
                .path()
                .to_string_lossy()
                .ends_with(".tmp")),
            "no temp file is left behind"
        );
    }
}

/// A log of `n` records whose active segment ends with half a batch.
fn torn_log(n: u64) -> (tempfile::TempDir, PathBuf, LogConfig) {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("p");
    let config = LogConfig {
        checkpoint_interval_bytes: 1 << 30,
        ..fault_config()
    };
    let mut log = open_faulty(&dir, &FaultPlan::new(), &config).expect("open");
    append_values(&mut log, 0, n);
    let (base, end) = log.end_position();
    drop(log);
    let path = dir.join(format!("{base:020}.log"));
    let mut bytes = std::fs::read(&path).expect("read");
    // Without the zeros written ahead of the appends: the file ends with
    // the half batch.
    bytes.truncate(end as usize);
    let half = make_batch(&[value(n)], ProducerStamp::NONE);
    bytes.extend_from_slice(&half.bytes()[..30]);
    assert_eq!(bytes.len() as u64, end + 30);
    std::fs::write(&path, bytes).expect("write");
    (tmp, dir, config)
}

#[test]
fn disk_full_while_recovery_cuts_a_torn_tail_fails_the_open_and_damages_nothing() {
    let (_tmp, dir, config) = torn_log(40);
    let plan = FaultPlan::new();
    plan.inject(Op::SetLen, ".log", Fault::NoSpace, 0, None);
    let err = open_faulty(&dir, &plan, &config).expect_err("cannot cut the tail");
    let text = err.to_string();
    assert!(text.contains("truncating the torn tail"), "{text}");
    assert!(matches!(err, LogError::DiskFull { .. }), "{text}");
    plan.clear();
    let log = open_faulty(&dir, &plan, &config).expect("open once space is back");
    assert_eq!(log.recovery_report().truncated_bytes, 30);
    assert_holds(&log, 40);
}

#[test]
fn failed_fsync_during_recovery_fails_the_open_and_damages_nothing() {
    let (_tmp, dir, config) = torn_log(40);
    let plan = FaultPlan::new();
    plan.inject(Op::Sync, ".log", Fault::Io, 0, Some(1));
    let err = open_faulty(&dir, &plan, &config).expect_err("sync fails");
    assert!(
        err.to_string().contains("syncing the recovered tail"),
        "{err}"
    );
    let log = open_faulty(&dir, &plan, &config).expect("open when the disk works");
    assert_holds(&log, 40);
}

#[test]
fn disk_full_while_recovery_rebuilds_an_index_fails_the_open_and_damages_nothing() {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("p");
    let config = fault_config();
    let mut log = open_faulty(&dir, &FaultPlan::new(), &config).expect("open");
    append_values(&mut log, 0, 120);
    log.close().expect("close");
    std::fs::remove_file(dir.join(format!("{:020}.index", 0))).expect("remove index");
    let plan = FaultPlan::new();
    plan.inject(Op::SetLen, ".index", Fault::NoSpace, 0, None);
    let err = open_faulty(&dir, &plan, &config).expect_err("cannot rebuild");
    assert!(err.to_string().contains("index"), "{err}");
    plan.clear();
    // The failed attempt leaves only temp files (removed at the next open,
    // which rebuilds the index again), never a partial index.
    let log = open_faulty(&dir, &plan, &config).expect("open once space is back");
    assert_holds(&log, 120);
    assert_eq!(read_records(&log.reader(), 60)[0], (60, value(60)));
}

/// The `.log` file of the last segment in `dir`.
fn last_segment(dir: &std::path::Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

/// Issue 12, defect 2: a read error while scanning the unclean tail is not
/// damage. Before, the scan stopped at the error and recovery cut the
/// segment there, dropping acknowledged batches and reusing their offsets.
#[test]
fn a_read_error_in_the_tail_scan_fails_the_open_and_cuts_nothing() {
    let (_tmp, dir, config) = torn_log(40);
    let active = last_segment(&dir);
    let len = std::fs::metadata(&active).expect("meta").len();
    let name = active
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let plan = FaultPlan::new();
    plan.inject(Op::Read, &name, Fault::Io, 0, Some(1));
    let err = open_faulty(&dir, &plan, &config).expect_err("a read error fails the open");
    let text = err.to_string();
    assert!(matches!(err, LogError::Io { .. }), "{text}");
    assert!(
        text.contains(&name) && text.contains("nothing was cut"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&active).expect("meta").len(),
        len,
        "the segment was not truncated"
    );
    plan.clear();
    let log = open_faulty(&dir, &plan, &config).expect("open when the disk reads again");
    assert_eq!(
        log.recovery_report().truncated_bytes,
        30,
        "only the torn half batch"
    );
    assert_holds(&log, 40);
}

/// Issue 12, defect 2: a read error while rebuilding a sealed segment's
/// indexes fails the open. Before, it was logged as "corrupt batch inside a
/// sealed segment" and the segment was opened with indexes (and a largest
/// timestamp) covering only the part read before the error.
#[test]
fn a_read_error_while_rebuilding_a_sealed_index_fails_the_open() {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("p");
    let config = fault_config();
    let mut log = open_faulty(&dir, &FaultPlan::new(), &config).expect("open");
    append_values(&mut log, 0, 120);
    log.close().expect("close");
    std::fs::remove_file(dir.join(format!("{:020}.index", 0))).expect("remove index");
    let plan = FaultPlan::new();
    plan.inject(Op::Read, &format!("{:020}.log", 0), Fault::Io, 0, Some(1));
    let err = open_faulty(&dir, &plan, &config).expect_err("a read error fails the open");
    let text = err.to_string();
    assert!(matches!(err, LogError::Io { .. }), "{text}");
    assert!(text.contains(&format!("{:020}.log", 0)), "{text}");
    plan.clear();
    let log = open_faulty(&dir, &plan, &config).expect("open when the disk reads again");
    assert_holds(&log, 120);
}

/// Issue 12, defect 9: a rebuild of a sealed segment's indexes cut short
/// (here: the time index cannot be cut to size) must not leave an index
/// that a later open trusts. Before, the rebuild wrote in place: the time
/// index was left at its preallocated size with a zero last entry, the next
/// open took 0 as the segment's largest timestamp, and time retention
/// deleted the segment although its records had just been written.
#[test]
fn an_index_rebuild_cut_short_leaves_no_index_to_trust() {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("p");
    let config = LogConfig {
        retention_ms: Some(60_000),
        ..fault_config()
    };
    let mut log = open_faulty(&dir, &FaultPlan::new(), &config).expect("open");
    append_values(&mut log, 0, 120);
    log.close().expect("close");
    let first = format!("{:020}", 0);
    std::fs::remove_file(dir.join(format!("{first}.index"))).expect("remove index");
    std::fs::remove_file(dir.join(format!("{first}.timeindex"))).expect("remove time index");
    let plan = FaultPlan::new();
    // Creating the time index sets its length twice; sealing it is the third.
    plan.inject(
        Op::SetLen,
        &format!("{first}.timeindex"),
        Fault::Io,
        2,
        Some(1),
    );
    let err = open_faulty(&dir, &plan, &config).expect_err("the rebuild fails");
    assert!(err.to_string().contains("sealing the indexes"), "{err}");
    let mut log = open_faulty(&dir, &plan, &config).expect("open when the disk works");
    assert_eq!(log.recovery_report().rebuilt_indexes, 1, "rebuilt again");
    assert_eq!(
        log.enforce_retention().expect("retention"),
        0,
        "nothing is older than the retention time"
    );
    assert_holds(&log, 120);
}

#[test]
fn a_failed_roll_does_not_leave_a_sealed_segment_taking_appends() {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("p");
    let clock = ManualClock::new(T0);
    // No index entries (a huge interval): the stale-index path is shown
    // without writing through a map past the end of a sealed index file.
    let config = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 1 << 30,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    };
    let plan = FaultPlan::new();
    let fs: Arc<dyn FileSystem> = Arc::new(FaultyFs::new(plan.clone()));
    let open = || Log::open(fs.clone(), &dir, config.clone(), Arc::new(clock.clone()));
    let mut log = open().expect("open");
    let big = vec![b'x'; 300];
    while log.end_position().1 + 2 * 400 <= 1024 {
        clock.advance(10);
        log.append(&make_batch(std::slice::from_ref(&big), ProducerStamp::NONE))
            .expect("append");
        log.commit().expect("commit");
    }
    // The next big batch needs a roll; creating the new segment fails.
    plan.inject(Op::Open, ".index", Fault::NoSpace, 0, Some(1));
    clock.advance(10);
    let err = log
        .append(&make_batch(
            &[big.clone(), big.clone()],
            ProducerStamp::NONE,
        ))
        .expect_err("roll fails");
    assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
    // A small batch still fits in the old segment.
    clock.advance(1000);
    let small = log
        .append(&make_batch(&[b"late".to_vec()], ProducerStamp::NONE))
        .expect("small append");
    log.commit().expect("commit");
    // Space is back; the next big batch rolls for real.
    clock.advance(10);
    log.append(&make_batch(
        &[big.clone(), big.clone()],
        ProducerStamp::NONE,
    ))
    .expect("append after the roll");
    log.commit().expect("commit");
    let live = log
        .reader()
        .offset_for_timestamp(small.timestamp)
        .expect("lookup");
    log.close().expect("close");
    let log = open().expect("reopen");
    let after_restart = log
        .reader()
        .offset_for_timestamp(small.timestamp)
        .expect("lookup");
    assert_eq!(live, Some(small.base_offset), "before the restart");
    assert_eq!(
        after_restart,
        Some(small.base_offset),
        "after the restart, the time lookup of the batch appended after the failed roll"
    );
}

#[test]
fn a_half_failed_seal_leaves_the_partition_read_only_not_writable_over_a_cut_index() {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("p");
    let clock = ManualClock::new(T0);
    // No index entries (a huge interval), so that today's code, appending
    // over the cut index, shows it without writing through the map past
    // the end of the file.
    let config = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 1 << 30,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    };
    let plan = FaultPlan::new();
    let fs: Arc<dyn FileSystem> = Arc::new(FaultyFs::new(plan.clone()));
    let open = || Log::open(fs.clone(), &dir, config.clone(), Arc::new(clock.clone()));
    let mut log = open().expect("open");
    let big = vec![b'x'; 300];
    let mut acknowledged = Vec::new();
    while log.end_position().1 + 2 * 400 <= 1024 {
        clock.advance(10);
        let info = log
            .append(&make_batch(std::slice::from_ref(&big), ProducerStamp::NONE))
            .expect("append");
        log.commit().expect("commit");
        acknowledged.push(info.base_offset);
    }
    // The next big batch needs a roll; the seal cuts the index file to its
    // entries, then its fsync fails.
    plan.inject(Op::Sync, ".index", Fault::Io, 0, Some(1));
    clock.advance(10);
    let err = log
        .append(&make_batch(
            &[big.clone(), big.clone()],
            ProducerStamp::NONE,
        ))
        .expect_err("the seal fails");
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("sealing"), "{err}");
    // A small batch would fit in the segment whose index was cut: refused.
    let small = log
        .append(&make_batch(&[b"late".to_vec()], ProducerStamp::NONE))
        .expect_err("no append over a cut index");
    assert!(matches!(small, LogError::ReadOnly { .. }), "{small}");
    assert!(small.to_string().contains("restart the broker"), "{small}");
    let served: Vec<u64> = read_records(&log.reader(), 0)
        .into_iter()
        .map(|(offset, _)| offset)
        .collect();
    assert_eq!(served, acknowledged, "reads keep working");
    // A restart recovers, and the log takes appends again.
    drop(log);
    let mut log = open().expect("reopen");
    let served: Vec<u64> = read_records(&log.reader(), 0)
        .into_iter()
        .map(|(offset, _)| offset)
        .collect();
    assert_eq!(served, acknowledged, "acknowledged data survives");
    clock.advance(10);
    let after = log
        .append(&make_batch(
            &[big.clone(), big.clone()],
            ProducerStamp::NONE,
        ))
        .expect("append after the restart");
    log.commit().expect("commit");
    assert_eq!(after.base_offset, acknowledged.len() as u64);
    assert!(log.reader().segment_count() >= 2, "the roll happened");
}

// ---------------------------------------------------------------------------
// Bounded fuzz: recovery over arbitrary segment bytes never panics, never
// serves a damaged batch, and keeps exactly the valid prefix.
// ---------------------------------------------------------------------------

/// `(offset, value)` of each record.
type Records = Vec<(u64, Vec<u8>)>;

/// Stamped batches at offsets 0.. as a segment would hold them, their
/// records, and where each batch ends.
fn valid_segment(batches: &[Vec<Vec<u8>>]) -> (Vec<u8>, Records, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut records = Vec::new();
    let mut ends = Vec::new();
    let mut offset = 0u64;
    for values in batches {
        let batch = make_batch(values, ProducerStamp::NONE);
        let start = bytes.len();
        bytes.extend_from_slice(batch.bytes());
        pigeon_protocol::batch::stamp(&mut bytes[start..], offset, T0, T0, batch.records_crc());
        for value in values {
            records.push((offset, value.clone()));
            offset += 1;
        }
        ends.push(bytes.len());
    }
    (bytes, records, ends)
}

#[derive(Debug, Clone)]
enum Damage {
    /// Arbitrary bytes appended.
    Append(Vec<u8>),
    /// Bytes overwritten at fractions of the length.
    Overwrite(Vec<(f64, u8)>),
    /// Cut at a fraction of the length.
    Cut(f64),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..300).prop_map(Damage::Append),
        proptest::collection::vec((0.0..1.0f64, any::<u8>()), 1..6).prop_map(Damage::Overwrite),
        (0.0..1.0f64).prop_map(Damage::Cut),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The active segment: recovery keeps exactly the batches before the
    /// first damaged one.
    #[test]
    fn recovery_of_a_damaged_active_segment_keeps_the_valid_prefix(
        batches in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 1..4), 0..6),
        damage in damage(),
        index in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
    ) {
        let (mut bytes, records, ends) = valid_segment(&batches);
        let intact_to = match &damage {
            Damage::Append(garbage) => { bytes.extend_from_slice(garbage); bytes.len() }
            Damage::Overwrite(edits) => {
                let mut first = bytes.len();
                for &(at, b) in edits {
                    if bytes.is_empty() { break; }
                    let at = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
                    if bytes[at] != b { first = first.min(at); }
                    bytes[at] = b;
                }
                first
            }
            Damage::Cut(at) => { let cut = (bytes.len() as f64 * at) as usize; bytes.truncate(cut); cut }
        };
        // Batches entirely before the first damaged byte must survive.
        let kept_batches = ends.iter().filter(|&&end| end <= intact_to).count();
        let kept_records: usize = batches[..kept_batches].iter().map(Vec::len).sum();
        let tmp = fast_tempdir();
        let dir = tmp.path().join("p");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("{:020}.log", 0)), &bytes).expect("write segment");
        if let Some(index) = &index {
            std::fs::write(dir.join(format!("{:020}.index", 0)), index).expect("write index");
        }
        let log = Log::open(Arc::new(StdFs), &dir, LogConfig::default(), Arc::new(ManualClock::new(T0)))
            .expect("recovery of an active segment always succeeds");
        let got = read_records(&log.reader(), 0);
        let next = log.next_offset();
        prop_assert!(got.iter().map(|r| r.0).eq(0..next), "dense offsets");
        prop_assert!(got.len() >= kept_records, "lost intact batches: {} < {kept_records}", got.len());
        prop_assert!(got.len() <= records.len());
        prop_assert!(got[..] == records[..got.len()], "served bytes differ from the batches written");
    }

    /// A damaged sealed segment followed by an active one: opening and
    /// reading everything never panics, and what is served is what was written.
    #[test]
    fn damaged_sealed_segments_never_panic_or_serve_damage(
        sealed in proptest::collection::vec(any::<u8>(), 0..400),
        edits in proptest::collection::vec((0.0..1.0f64, any::<u8>()), 0..4),
        sealed_index in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        active in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let (mut first, records, _) = valid_segment(&[vec![b"a".to_vec(), b"b".to_vec()], vec![b"c".to_vec()]]);
        first.extend_from_slice(&sealed);
        for (at, b) in edits {
            let at = ((first.len() as f64 * at) as usize).min(first.len() - 1);
            first[at] = b;
        }
        let tmp = fast_tempdir();
        let dir = tmp.path().join("p");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("{:020}.log", 0)), &first).expect("write");
        if let Some(index) = &sealed_index {
            std::fs::write(dir.join(format!("{:020}.index", 0)), index).expect("write");
        }
        std::fs::write(dir.join(format!("{:020}.log", 3)), &active).expect("write");
        let Ok(log) = Log::open(Arc::new(StdFs), &dir, LogConfig::default(), Arc::new(ManualClock::new(T0))) else {
            return Ok(());
        };
        let reader = log.reader();
        for offset in reader.start_offset()..log.next_offset() {
            let Ok(result) = reader.read(offset, 1 << 16) else { continue };
            let mut bytes = &result.bytes[..];
            while !bytes.is_empty() {
                let (_, length) = read_prefix(bytes).expect("prefix");
                let total = 12 + length as usize;
                prop_assert!(verify_stored(&bytes[..total], 1 << 20).is_ok(), "a damaged batch was served");
                for record in records_of(Bytes::copy_from_slice(&bytes[..total])).expect("batch") {
                    let record = record.expect("record");
                    if let Some((_, want)) = records.iter().find(|r| r.0 == record.offset) {
                        prop_assert_eq!(&record.value[..], &want[..]);
                    }
                }
                bytes = &bytes[total..];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Hostile input found by `cargo fuzz` (target `record_batch`); the input is
// kept in `fuzz/regressions/record_batch/`.
// ---------------------------------------------------------------------------

/// The fuzzer's input: a batch header whose base offset is
/// 0xFFFF_FFFF_FFFF_FF08, followed by records.
const FUZZ_RECORD_BATCH_OVERFLOW: [u8; 66] = [
    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x34, 0x00, 0x00, 0x02, 0x00, 0x00, 0x34, 0x00,
    0x85, 0x00, 0x00, 0xa3, 0x85, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x39, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0xc8, 0x35, 0x01, 0x00, 0x00, 0x00, 0x00, 0x85,
    0x00, 0x85,
];

#[test]
fn batches_whose_offsets_pass_u64_max_are_refused_not_a_panic() {
    let walk = |bytes: Vec<u8>| {
        std::panic::catch_unwind(move || {
            records_of(Bytes::from(bytes)).map(|records| records.collect::<Vec<_>>())
        })
    };
    // The fuzzer's input (no valid CRC; `records_of` is the decoder of
    // fetched batches).
    let fuzzed = walk(FUZZ_RECORD_BATCH_OVERFLOW.to_vec());
    assert!(fuzzed.is_ok(), "records_of panicked on the fuzzer's input");
    // A batch whose CRC is right (the base offset is outside the CRC), as a
    // damaged or hostile server could send it.
    let values = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
    let batch = make_batch(&values, ProducerStamp::NONE);
    let mut bytes = batch.bytes().to_vec();
    pigeon_protocol::batch::stamp(&mut bytes, u64::MAX - 1, T0, T0, batch.records_crc());
    assert!(
        verify_stored(&bytes, 1 << 20).is_err(),
        "the envelope check refuses offsets past u64::MAX"
    );
    let decoded = walk(bytes).expect("decoding never panics");
    let accepted = decoded.is_ok_and(|records| records.iter().all(Result::is_ok));
    assert!(!accepted, "records at offsets past u64::MAX were accepted");
}
