//! Tests of what makes a restart cheap: the idle checkpoint (a log that
//! stops taking writes gets a checkpoint at its end, so a kill then finds
//! nothing to scan), the open that writes nothing when the checkpoint on
//! disk already says where the log ends (and the clean checkpoint so kept,
//! replaced before the first append), many logs opened side by side
//! (the first failure in order is the one reported), and the active
//! index opened without reading or dirtying its reserved tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch, records_of_batches};

use super::checkpoint::Checkpoint;
use super::read_tests::{evict, resident_pages};
use super::recovery::many::open_all;
use super::*;
use crate::io::{FaultPlan, FaultyFs, FileSystem, Op, StdFs};

const T0: i64 = 1_700_000_000_000;

fn record(i: u64) -> RecordBatch {
    let mut builder = BatchBuilder::new();
    builder.push(None, format!("value-{i:06}").as_bytes(), &[]);
    RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1 << 20).expect("valid batch")
}

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        index_interval_bytes: 256,
        idle_checkpoint_ms: 1000,
        ..LogConfig::default()
    }
}

fn open(fs: &Arc<dyn FileSystem>, dir: &Path, config: &LogConfig) -> Log {
    Log::open(
        fs.clone(),
        dir,
        config.clone(),
        Arc::new(ManualClock::new(T0)),
    )
    .expect("open")
}

fn append_n(log: &mut Log, first: u64, n: u64) {
    for i in first..first + n {
        log.append(&record(i)).expect("append");
        log.commit().expect("commit");
    }
}

/// The values the log serves, in order.
fn values(log: &Log) -> Vec<Vec<u8>> {
    let read = log.reader().read(0, 1 << 20).expect("read");
    records_of_batches(read.bytes)
        .map(|r| r.expect("record").value.to_vec())
        .collect()
}

fn expected(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("value-{i:06}").into_bytes())
        .collect()
}

/// Temp files opened to replace the checkpoint or the producer snapshot.
fn replaced(plan: &FaultPlan) -> usize {
    plan.calls(Op::Open, "checkpoint.tmp") + plan.calls(Op::Open, "producers.snapshot.tmp")
}

fn checkpoint(dir: &Path) -> Checkpoint {
    Checkpoint::read(&StdFs, dir)
        .expect("read the checkpoint")
        .expect("a checkpoint")
}

/// A log that takes no write for `idle_checkpoint_ms` gets a checkpoint at
/// its end, not before; a kill after that scans nothing, and the open
/// writes nothing.
#[test]
fn an_idle_log_is_checkpointed_at_its_end_and_a_kill_then_costs_no_scan() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("0");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let mut log = open(&fs, &dir, &config());
    assert_eq!(log.idle_checkpoint_at(), None, "nothing written yet");
    append_n(&mut log, 0, 50);
    let end = log.end_position().1;
    assert!(
        checkpoint(&dir).position < end,
        "50 small records are far below checkpoint_interval_bytes"
    );
    let due = log.idle_checkpoint_at().expect("due after the last write");
    assert!(due <= Instant::now() + Duration::from_millis(1000));
    assert!(
        !log.checkpoint_if_idle(due - Duration::from_millis(1)),
        "not before the idle period"
    );
    assert!(checkpoint(&dir).position < end);
    assert!(
        log.checkpoint_if_idle(due),
        "due at the end of the idle period"
    );
    let written = checkpoint(&dir);
    assert_eq!((written.position, written.next_offset), (end, 50));
    assert!(!written.clean);
    assert_eq!(log.idle_checkpoint_at(), None, "once per idle period");
    assert!(!log.checkpoint_if_idle(due + Duration::from_secs(60)));
    // A kill: the log is dropped unclosed.
    drop(log);

    let plan = FaultPlan::new();
    let counting: Arc<dyn FileSystem> = Arc::new(FaultyFs::new(plan.clone()));
    let log = open(&counting, &dir, &config());
    let report = log.recovery_report();
    assert!(!report.clean);
    assert_eq!(report.scanned_bytes, 0, "the checkpoint was at the end");
    assert_eq!(
        (replaced(&plan), plan.calls(Op::DirOp, "")),
        (0, 0),
        "the checkpoint on disk says where the log ends: nothing is replaced"
    );
    assert_eq!(
        plan.calls(Op::Sync, ""),
        0,
        "nothing is synced: every byte before the checkpoint was synced before it was written, and there is none after it"
    );
    assert_eq!(checkpoint(&dir), written);
    assert_eq!(values(&log), expected(50));
}

/// Writes after an idle checkpoint move its due time; a kill after them
/// scans from the idle checkpoint and loses nothing acknowledged.
#[test]
fn writes_after_an_idle_checkpoint_are_recovered_from_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("0");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let mut log = open(&fs, &dir, &config());
    append_n(&mut log, 0, 20);
    let first = log.idle_checkpoint_at().expect("due");
    assert!(log.checkpoint_if_idle(first));
    let at = log.end_position().1;
    append_n(&mut log, 20, 30);
    let second = log
        .idle_checkpoint_at()
        .expect("due again after new writes");
    assert!(second >= first);
    let end = log.end_position().1;
    drop(log);

    let plan = FaultPlan::new();
    let counting: Arc<dyn FileSystem> = Arc::new(FaultyFs::new(plan.clone()));
    let mut log = open(&counting, &dir, &config());
    let report = log.recovery_report();
    assert_eq!(
        report.scanned_bytes,
        end - at,
        "scanned from the idle checkpoint"
    );
    assert_eq!(
        plan.calls(Op::Sync, ".log"),
        1,
        "the recovered tail is synced before it is served"
    );
    assert_eq!(values(&log), expected(50));
    // The checkpoint on disk stays true; the new one is the idle
    // checkpoint's, one to two idle periods after the open.
    assert_eq!(checkpoint(&dir).position, at, "kept at open");
    let due = log.idle_checkpoint_at().expect("the recovered tail is due");
    assert!(due >= Instant::now() + Duration::from_millis(900));
    assert!(due <= Instant::now() + Duration::from_millis(2000));
    assert!(log.checkpoint_if_idle(due));
    assert_eq!(checkpoint(&dir).position, end);
    drop(log);
    let log = open(&fs, &dir, &config());
    assert_eq!(log.recovery_report().scanned_bytes, 0);
    assert_eq!(values(&log), expected(50));
}

/// With the idle checkpoint off, a recovered tail gets its checkpoint at
/// open, as there is nothing to write it later.
#[test]
fn without_idle_checkpoints_recovery_writes_its_checkpoint_at_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("0");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let off = LogConfig {
        idle_checkpoint_ms: 0,
        ..config()
    };
    let mut log = open(&fs, &dir, &off);
    append_n(&mut log, 0, 20);
    let end = log.end_position().1;
    drop(log);
    let log = open(&fs, &dir, &off);
    assert!(log.recovery_report().scanned_bytes > 0);
    assert_eq!(checkpoint(&dir).position, end);
    assert_eq!(values(&log), expected(20));
}

/// No idle checkpoint when it is turned off, nor under `fsync=never`
/// while the tail is unsynced (it adds no sync).
#[test]
fn no_idle_checkpoint_when_off_or_unsynced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let off = LogConfig {
        idle_checkpoint_ms: 0,
        ..config()
    };
    let mut log = open(&fs, &tmp.path().join("off"), &off);
    append_n(&mut log, 0, 5);
    assert_eq!(log.idle_checkpoint_at(), None);
    let never = LogConfig {
        fsync: FsyncPolicy::Never,
        ..config()
    };
    let mut log = open(&fs, &tmp.path().join("never"), &never);
    append_n(&mut log, 0, 5);
    assert_eq!(log.idle_checkpoint_at(), None, "the tail is not synced");
    log.sync().expect("sync");
    assert!(log.idle_checkpoint_at().is_some(), "synced now");
}

/// A clean stop's checkpoint is kept by the next open (nothing written),
/// and replaced by an unclean one before the first append: a kill after
/// that append recovers it like any tail.
#[test]
fn a_clean_checkpoint_is_kept_at_open_and_replaced_before_the_first_append() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("0");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let mut log = open(&fs, &dir, &config());
    append_n(&mut log, 0, 30);
    log.close().expect("close");
    let clean = checkpoint(&dir);
    assert!(clean.clean);

    let plan = FaultPlan::new();
    let counting: Arc<dyn FileSystem> = Arc::new(FaultyFs::new(plan.clone()));
    let log = open(&counting, &dir, &config());
    assert!(log.recovery_report().clean);
    assert_eq!(
        (
            replaced(&plan),
            plan.calls(Op::DirOp, ""),
            plan.calls(Op::Sync, "")
        ),
        (0, 0, 0),
        "a clean open writes and syncs nothing"
    );
    assert_eq!(checkpoint(&dir), clean, "kept until the first append");
    // Closed unwritten: nothing to do, the clean checkpoint is still true.
    log.close().expect("close");
    assert_eq!(
        (replaced(&plan), plan.calls(Op::Sync, "")),
        (0, 0),
        "closing an unwritten log writes nothing"
    );
    let mut log = open(&counting, &dir, &config());
    assert!(log.recovery_report().clean);
    assert_eq!(values(&log), expected(30));
    append_n(&mut log, 30, 1);
    let replaced = checkpoint(&dir);
    assert!(!replaced.clean, "replaced before the first append");
    assert_eq!(replaced.position, clean.position);
    append_n(&mut log, 31, 19);
    drop(log);

    let log = open(&fs, &dir, &config());
    assert!(!log.recovery_report().clean);
    assert!(log.recovery_report().scanned_bytes > 0);
    assert_eq!(values(&log), expected(50));
}

/// Through the writer pool: a partition log whose writes stop gets its
/// idle checkpoint from the pool's timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_writes_the_idle_checkpoint_of_a_partition_whose_writes_stopped() {
    let pool = pool::WriterPool::fixed(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("0");
    let config = LogConfig {
        idle_checkpoint_ms: 20,
        ..config()
    };
    let log = open(&(Arc::new(StdFs) as Arc<dyn FileSystem>), &dir, &config);
    let partition = PartitionLog::start_on(pool, log);
    for i in 0..10 {
        partition.append(record(i)).await.expect("append");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(&dir).next_offset < 10 {
        assert!(
            Instant::now() < deadline,
            "no idle checkpoint within 30 s of the last write"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !checkpoint(&dir).clean,
        "an ordinary checkpoint, not a close"
    );
    partition.close().await.expect("close");
}

/// Many logs opened side by side: every log, in order; and when some
/// cannot be opened, the first of them in order, with the error its own
/// open gives.
#[test]
fn many_logs_open_side_by_side_and_the_first_failure_in_order_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let dirs: Vec<PathBuf> = (0..40).map(|i| tmp.path().join(i.to_string())).collect();
    for (i, dir) in dirs.iter().enumerate() {
        let mut log = open(&fs, dir, &config());
        append_n(&mut log, 0, i as u64 % 7 + 1);
        // Killed: each is recovered at the next open.
    }
    let logs: Vec<_> = dirs.iter().map(|d| (d.clone(), config())).collect();
    let opened = open_all(&fs, &clock, &logs, 8).expect("every log opens");
    assert_eq!(opened.len(), 40);
    for (i, log) in opened.iter().enumerate() {
        assert_eq!(log.dir(), dirs[i], "in the order given");
        assert_eq!(values(log), expected(i as u64 % 7 + 1));
    }
    drop(opened);

    // Two broken logs: a directory where the checkpoint file should be
    // cannot be read.
    for broken in [31, 17] {
        let path = dirs[broken].join("checkpoint");
        std::fs::remove_file(&path).expect("remove");
        std::fs::create_dir(&path).expect("mkdir");
    }
    for threads in [1, 3, 8, 64] {
        let (at, error) = open_all(&fs, &clock, &logs, threads).expect_err("two are broken");
        assert_eq!(at, 17, "the first broken one in order ({threads} threads)");
        let alone = Log::open(fs.clone(), &dirs[17], config(), clock.clone())
            .expect_err("broken alone too");
        assert_eq!(error.to_string(), alone.to_string());
    }
}

/// Whether the file system says the file at `path` holds no data from
/// `pos` on (`SEEK_DATA`): space reserved and never written reads as
/// zeros without being read.
fn no_data_after(path: &Path, pos: u64) -> bool {
    let file = StdFs.open(path, crate::io::OpenMode::Read).expect("open");
    file.data_after(pos).expect("SEEK_DATA").is_none()
}

/// Writing entries through the map of a new index, and opening the active
/// index after a restart, touch only the pages that hold entries: the
/// preallocated tail (640 KiB per partition with the defaults) is not read
/// around the first entry's page fault (which made all of it page-cache
/// data for `SEEK_DATA`), not read at the open (which filled the page
/// cache with zeros), and not zeroed through the map (which dirtied every
/// page of it, and the disk then wrote them all). At 10,000 partitions
/// that was most of the restart. The entries the open drops are still
/// zeroed, also one after a hole. (On a file system that cannot tell
/// reserved space from data only the zeroing is checked.)
#[test]
fn opening_the_active_index_reads_and_dirties_only_the_pages_holding_entries() {
    use super::index::{MappedIndex, OffsetIndex, decode_offset_entry};
    let tmp = tempfile::tempdir().expect("tempdir");
    // Whether this file system tells reserved space from data.
    let probe = tmp.path().join("probe");
    StdFs
        .open(&probe, crate::io::OpenMode::Create)
        .and_then(|f| f.allocate(1 << 20))
        .expect("allocate");
    let can_tell = no_data_after(&probe, 0);
    let path = tmp.path().join("00000000000000000000.index");
    // 128 pages of entries.
    let capacity = 64 * 1024;
    let index = OffsetIndex(MappedIndex::create(&StdFs, &path, capacity).expect("create"));
    for (rel, pos) in [(1, 100), (2, 200), (3, 300), (4, 400)] {
        assert!(index.push(rel, pos));
    }
    index.0.flush().expect("flush");
    drop(index);
    if can_tell {
        assert!(
            no_data_after(&path, 4096),
            "the page fault of the first entry read no page around it"
        );
    }
    // A stale entry after a hole (page 1 never written; page 2 written
    // back out of order before a power cut): not kept, but zeroed.
    let stale_slot = 1100u64;
    {
        let file = StdFs
            .open(&path, crate::io::OpenMode::ReadWrite)
            .expect("open");
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&5u32.to_le_bytes());
        entry[4..].copy_from_slice(&500u32.to_le_bytes());
        crate::io::write_all_at(file.as_ref(), &entry, stale_slot * 8).expect("write");
        file.sync_data().expect("sync");
    }
    evict(&path);
    assert_eq!(resident_pages(&path).0, 0, "evicted");

    let keep_below_250 = |e: &[u8; 8], _: Option<&[u8; 8]>| decode_offset_entry(e).1 < 250;
    let reopened = OffsetIndex(
        MappedIndex::open_active(&StdFs, &path, capacity, keep_below_250).expect("open"),
    );
    assert_eq!(reopened.0.len(), 2, "the accepted prefix");
    let (resident, pages) = resident_pages(&path);
    if can_tell {
        assert!(
            resident <= 3,
            "{resident} of {pages} pages were read or written; only the three up to the stale entry should be"
        );
    }
    reopened.0.flush().expect("flush");
    drop(reopened);
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(bytes.len(), capacity * 8);
    assert!(
        bytes[16..].iter().all(|&b| b == 0),
        "every dropped entry is zeroed, the one after the hole too"
    );
    let again =
        OffsetIndex(MappedIndex::open_active(&StdFs, &path, capacity, |_, _| true).expect("open"));
    assert_eq!(again.0.len(), 2);
    drop(again);

    // The time index: 12-byte entries, so one straddles the end of the
    // written page. Reading it whole read the next page, which the page
    // cache then held as data for `SEEK_DATA`, and so on to the end.
    let path = tmp.path().join("00000000000000000000.timeindex");
    let index = MappedIndex::<12>::create(&StdFs, &path, capacity).expect("create");
    for i in 0..400u32 {
        let mut entry = [0u8; 12];
        entry[..8].copy_from_slice(&(T0 + i64::from(i)).to_le_bytes());
        entry[8..].copy_from_slice(&(i + 1).to_le_bytes());
        assert!(index.push(entry));
    }
    index.flush().expect("flush");
    drop(index);
    evict(&path);
    let reopened =
        MappedIndex::<12>::open_active(&StdFs, &path, capacity, |_, _| true).expect("open");
    assert_eq!(reopened.len(), 400, "every entry kept");
    let (resident, pages) = resident_pages(&path);
    if can_tell {
        assert!(
            resident <= 4,
            "{resident} of {pages} pages of the time index were read or written"
        );
    }
}

/// Opening a log is mostly waiting (file opens, the `fdatasync` of its
/// tail), so many are opened at once even on a machine of 2 CPUs: 32 at
/// once started 10,000 partitions in 1.1–1.5 s where 8 took 1.8–1.9 s.
#[test]
fn at_least_32_logs_are_opened_at_once() {
    let threads = super::recovery::many::open_threads();
    assert!((32..=64).contains(&threads), "{threads}");
}
