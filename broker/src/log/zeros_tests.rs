//! Tests of the zeros a writer under `fsync=always` writes ahead of its
//! appends (see "Zeros ahead of the appends" in
//! [`writer::commit`](super::writer::commit)): where they are written and
//! where not, that a roll and a clean close cut them, and what a kill, a
//! torn write inside them or a failed write of them leaves after the next
//! open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pigeon_protocol::batch::{RecordBatch, records_of};

use super::writer::commit::{BUSY_WRITES_PER_SEC, WriteRate, ZEROS_AHEAD_BELOW, zeros_ahead_len};
use super::*;
use crate::io::{Fault, FaultPlan, FaultyFs, FileSystem, Op, StdFs};

const T0: i64 = 1_700_000_000_000;

/// Commits the tests make before they look (more than make a log busy,
/// though [`busy`] makes it so without racing the clock).
const BUSY: u64 = BUSY_WRITES_PER_SEC as u64 + 6;

/// Makes `log` busy: zeros are written ahead of its small commits.
fn busy(log: &mut Log) {
    log.small_writes = WriteRate::busy_for_an_hour();
}

fn batch(values: &[Vec<u8>]) -> RecordBatch {
    let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    super::tests::batch(&values)
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:06}").into_bytes()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: LogConfig,
}

impl Fixture {
    fn new(config: LogConfig) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        Fixture {
            _tmp: tmp,
            dir,
            config,
        }
    }

    fn open_on(&self, fs: Arc<dyn FileSystem>) -> Log {
        Log::open(
            fs,
            &self.dir,
            self.config.clone(),
            Arc::new(ManualClock::new(T0)),
        )
        .expect("open")
    }

    fn open(&self) -> Log {
        self.open_on(Arc::new(StdFs))
    }

    fn segment(&self, base: u64) -> PathBuf {
        self.dir.join(format!("{base:020}.log"))
    }
}

fn always() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        preallocate: true,
        ..LogConfig::default()
    }
}

/// Appends and commits one-record batches `first..first + n`.
fn append_n(log: &mut Log, first: u64, n: u64) {
    for i in first..first + n {
        log.append(&batch(&[value(i)])).expect("append");
        log.commit().expect("commit");
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

/// The values of every record from offset 0, in order, checking offsets.
fn values(log: &Log) -> Vec<Vec<u8>> {
    let reader = log.reader();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let bytes = reader.read(offset, 1 << 20).expect("read").bytes;
        if bytes.is_empty() {
            return out;
        }
        for record in records_of(bytes).expect("records") {
            let record = record.expect("record");
            assert_eq!(record.offset, offset, "offsets are dense");
            out.push(record.value.to_vec());
            offset += 1;
        }
    }
}

/// A busy log (see [`busy`]) with `preallocate`, after [`BUSY`] small
/// commits: its segment ends in zeros.
fn busy_log() -> (Fixture, Log) {
    let fx = Fixture::new(always());
    let mut log = fx.open();
    busy(&mut log);
    append_n(&mut log, 0, BUSY);
    (fx, log)
}

fn expected(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(value).collect()
}

#[test]
fn small_synced_commits_leave_zeros_ahead_that_a_close_cuts() {
    let (fx, log) = busy_log();
    let (base, end) = log.end_position();
    let path = fx.segment(base);
    let len = file_len(&path);
    assert!(len > end, "zeros ahead of the data: {len} > {end}");
    assert!(len - end <= zeros_ahead_len(ZEROS_AHEAD_BELOW - 1), "{len}");
    let bytes = std::fs::read(&path).expect("read");
    assert!(bytes[end as usize..].iter().all(|&b| b == 0), "only zeros");
    assert_eq!(values(&log), expected(0..BUSY), "readers see the data only");
    log.close().expect("close");
    assert_eq!(file_len(&path), end, "a clean close cuts the zeros");
    let log = fx.open();
    let report = log.recovery_report();
    assert!(report.clean);
    assert_eq!((report.scanned_bytes, report.zero_bytes_cut), (0, 0));
    assert_eq!(values(&log), expected(0..BUSY));
}

/// Whether `commits` small commits on a log opened with `config` (made
/// busy first if `pinned_busy`) leave its file longer than its data.
fn zeros_after(config: LogConfig, pinned_busy: bool, commits: u64) -> bool {
    let fx = Fixture::new(config);
    let mut log = fx.open();
    if pinned_busy {
        busy(&mut log);
    }
    append_n(&mut log, 0, commits);
    let (base, end) = log.end_position();
    file_len(&fx.segment(base)) > end
}

#[test]
fn without_preallocate_a_busy_log_gets_no_zeros() {
    let off = LogConfig {
        preallocate: false,
        ..always()
    };
    assert!(!zeros_after(off, true, BUSY));
    assert!(zeros_after(always(), true, BUSY), "the same with it on");
}

#[test]
fn a_log_with_few_commits_gets_no_zeros() {
    assert!(!zeros_after(always(), false, BUSY - 10));
}

#[test]
fn large_commits_and_unsynced_policies_write_no_zeros() {
    let fx = Fixture::new(always());
    let mut log = fx.open();
    busy(&mut log);
    let big: Vec<Vec<u8>> = (0..100).map(|_| vec![7u8; 1024]).collect();
    log.append(&batch(&big)).expect("append");
    log.commit().expect("commit");
    let (base, end) = log.end_position();
    assert!(end >= ZEROS_AHEAD_BELOW);
    assert_eq!(
        file_len(&fx.segment(base)),
        end,
        "a large commit grows the file"
    );
    drop(log);

    for fsync in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(std::time::Duration::from_millis(1)),
    ] {
        let fx = Fixture::new(LogConfig { fsync, ..always() });
        let mut log = fx.open();
        busy(&mut log);
        append_n(&mut log, 0, BUSY);
        log.sync().expect("sync");
        let (base, end) = log.end_position();
        assert_eq!(file_len(&fx.segment(base)), end, "{fsync:?}");
    }
}

#[test]
fn a_kill_with_zeros_ahead_loses_nothing_and_later_appends_follow_the_last_batch() {
    let (fx, log) = busy_log();
    let (base, end) = log.end_position();
    let zeros = file_len(&fx.segment(base)) - end;
    assert!(zeros > 0);
    drop(log); // a kill: no clean close

    let mut log = fx.open();
    let report = log.recovery_report();
    assert!(!report.clean);
    assert_eq!(report.truncated_bytes, 0, "nothing torn");
    assert_eq!(report.zero_bytes_cut, zeros);
    assert_eq!(report.scanned_bytes, end, "the batches, not the zeros");
    assert_eq!(log.end_position(), (base, end));
    append_n(&mut log, BUSY, 10);
    drop(log);

    let log = fx.open();
    assert_eq!(
        values(&log),
        expected(0..BUSY + 10),
        "no gap where the zeros were"
    );
}

#[test]
fn a_roll_seals_the_segment_at_its_last_batch() {
    let fx = Fixture::new(LogConfig {
        segment_bytes: 64 * 1024,
        ..always()
    });
    let mut log = fx.open();
    busy(&mut log);
    let mut n = 0;
    while log.reader().segment_count() < 3 {
        append_n(&mut log, n, 1);
        n += 1;
    }
    let segments = log.shared.snapshot();
    for sealed in &segments[..segments.len() - 1] {
        assert_eq!(
            file_len(&sealed.log_path),
            sealed.size(),
            "a sealed segment ends with its last batch"
        );
        assert!(
            sealed.size() <= 64 * 1024,
            "no zeros past the segment limit"
        );
    }
    drop(log);
    let log = fx.open();
    assert_eq!(log.recovery_report().rebuilt_indexes, 0);
    assert_eq!(values(&log), expected(0..n));
}

#[test]
fn a_torn_batch_inside_the_zeros_is_cut_with_them() {
    let (fx, log) = busy_log();
    let (base, end) = log.end_position();
    drop(log);
    // A write of the next batch that a power cut left half done: its
    // first 30 bytes landed in the zeros, the rest did not.
    let path = fx.segment(base);
    let len = file_len(&path);
    let half = batch(&[value(BUSY)]);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&file, &half.bytes()[..30], end).expect("write");
    drop(file);

    let mut log = fx.open();
    let report = log.recovery_report();
    assert_eq!(
        report.truncated_bytes,
        len - end,
        "the torn batch and the zeros after it"
    );
    assert_eq!(report.zero_bytes_cut, 0);
    assert_eq!(log.end_position(), (base, end));
    assert_eq!(file_len(&path), end);
    append_n(&mut log, BUSY, 1);
    drop(log);
    assert_eq!(values(&fx.open()), expected(0..BUSY + 1));
}

#[test]
fn zeros_after_an_idle_checkpoint_are_cut_unread_and_unsynced() {
    let (fx, mut log) = busy_log();
    let due = log.idle_checkpoint_at().expect("an idle checkpoint is due");
    assert!(log.checkpoint_if_idle(due));
    let (base, end) = log.end_position();
    let zeros = file_len(&fx.segment(base)) - end;
    assert!(zeros > 0);
    drop(log);

    let plan = FaultPlan::new();
    let log = fx.open_on(Arc::new(FaultyFs::new(plan.clone())));
    let report = log.recovery_report();
    assert_eq!(
        (report.scanned_bytes, report.zero_bytes_cut),
        (0, zeros),
        "only the length field at the checkpoint is read"
    );
    assert_eq!(
        plan.calls(Op::Sync, ""),
        0,
        "the cut needs no sync of its own"
    );
    assert_eq!(file_len(&fx.segment(base)), end);
    assert_eq!(values(&log), expected(0..BUSY));
}

#[test]
fn a_failed_write_of_the_zeros_fails_no_commit() {
    let fx = Fixture::new(always());
    let plan = FaultPlan::new();
    let mut log = fx.open_on(Arc::new(FaultyFs::new(plan.clone())));
    busy(&mut log);
    // The first commit's second write to the segment is its zeros.
    plan.inject(Op::Write, ".log", Fault::NoSpace, 1, Some(1));
    append_n(&mut log, 0, 1);
    let (base, end) = log.end_position();
    assert_eq!(
        file_len(&fx.segment(base)),
        end,
        "the zeros were not written"
    );
    // The next commits grow the file, until they pass where the zeros
    // would have ended: then zeros are written again.
    let would_end = end + zeros_ahead_len(end);
    let mut n = 1;
    while log.end_position().1 <= would_end {
        append_n(&mut log, n, 1);
        n += 1;
    }
    assert!(file_len(&fx.segment(base)) > log.end_position().1);
    assert_eq!(values(&log), expected(0..n));
    let (base, end) = log.end_position();
    log.close().expect("close");
    assert_eq!(file_len(&fx.segment(base)), end);
    assert_eq!(values(&fx.open()), expected(0..n));
}
