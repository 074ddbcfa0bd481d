//! Tests of background sealing ([`super::writer::seal`]): the sealed
//! segment's sync off the append path, its checkpoint once it completed, a
//! failed background sync, and recovery of a sealed segment whose sync did
//! not complete. The power-cut suite (`powercut_tests.rs`) cuts the power
//! at every step of it at random; these pin each step by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch, records_of};

use super::checkpoint::Checkpoint;
use super::*;
use crate::io::{Fault, FaultPlan, FaultyFs, FileSystem, Op, PowerCutFs, StdFs};

const T0: i64 = 1_700_000_000_000;

fn batch(i: u64) -> RecordBatch {
    let mut builder = BatchBuilder::new();
    builder.push(None, format!("value-{i:06}").as_bytes(), &[]);
    RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1 << 20).expect("valid")
}

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        checkpoint_interval_bytes: 1 << 30,
        fsync,
        ..LogConfig::default()
    }
}

fn open(fs: Arc<dyn FileSystem>, dir: &Path, fsync: FsyncPolicy) -> Log {
    Log::open(fs, dir, config(fsync), Arc::new(ManualClock::new(T0))).expect("open")
}

/// Appends record `i` and commits it.
fn append(log: &mut Log, i: u64) -> LogResult<()> {
    let info = log.append(&batch(i))?;
    assert_eq!(info.base_offset, i);
    log.commit()
}

/// Appends from `from` until the log has rolled once; returns the offset
/// after the last append (the base of the new segment is before it).
fn append_until_roll(log: &mut Log, from: u64) -> u64 {
    let segments = log.reader().segment_count();
    let mut i = from;
    while log.reader().segment_count() == segments {
        append(log, i).expect("append");
        i += 1;
    }
    i
}

/// Every record's `(offset, value)` from the log start.
fn records(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let reader = log.reader();
    let mut out = Vec::new();
    let mut offset = reader.start_offset();
    loop {
        let bytes = reader.read(offset, 1 << 20).expect("read").bytes;
        if bytes.is_empty() {
            return out;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let total = 12 + pigeon_protocol::batch::read_prefix(rest).expect("prefix").1 as usize;
            for record in records_of(Bytes::copy_from_slice(&rest[..total])).expect("batch") {
                let record = record.expect("record");
                if record.offset >= offset {
                    out.push((record.offset, record.value.to_vec()));
                }
            }
            rest = &rest[total..];
        }
        offset = out.last().map_or(offset, |r| r.0 + 1);
    }
}

fn assert_dense(log: &Log, to: u64) {
    let got = records(log);
    let want: Vec<(u64, Vec<u8>)> = (0..to)
        .map(|i| (i, format!("value-{i:06}").into_bytes()))
        .collect();
    assert!(
        got == want,
        "the log does not hold exactly 0..{to}: {got:?}"
    );
}

fn checkpoint(dir: &Path) -> Checkpoint {
    Checkpoint::read(&StdFs, dir)
        .expect("read")
        .expect("a checkpoint")
}

fn segment_log(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

#[test]
fn under_fsync_never_a_roll_leaves_the_sealed_segments_sync_to_the_background() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let plan = FaultPlan::new();
    let fs = Arc::new(FaultyFs::new(plan.clone()));
    let mut log = open(fs, &dir, FsyncPolicy::Never).with_manual_seals();
    let first = ".log";
    let syncs = plan.calls(Op::Sync, first);
    let end = append_until_roll(&mut log, 0);
    let next_base = log.end_position().0;
    assert_eq!(
        plan.calls(Op::Sync, first),
        syncs,
        "the roll synced on the append path"
    );
    assert!(log.seal_pending());
    assert_eq!(
        checkpoint(&dir).segment_base,
        0,
        "nothing trusts the sealed segment yet"
    );
    assert_eq!(
        log.durable_position(),
        (0, 0),
        "nothing of it is durable yet"
    );
    // Appends go on while the seal is pending.
    append(&mut log, end).expect("append during the seal");
    assert!(log.run_seal_job(), "the job ran");
    assert!(
        plan.calls(Op::Sync, first) > syncs,
        "the job synced the sealed segment"
    );
    // The job wrote the checkpoint; the writer settles it at its next
    // commit.
    let written = checkpoint(&dir);
    assert_eq!(log.durable_position(), (0, 0), "not settled yet");
    log.commit().expect("the next commit settles it");
    assert!(!log.seal_pending());
    assert_eq!(
        (
            written.segment_base,
            written.position,
            written.next_offset,
            written.fence
        ),
        (next_base, 0, next_base, false),
        "the checkpoint names the new segment once the sealed one is synced"
    );
    assert_eq!(log.durable_position(), (next_base, 0));
    log.close().expect("close");
    let log = open(Arc::new(StdFs), &dir, FsyncPolicy::Never);
    assert!(log.recovery_report().clean);
    assert_dense(&log, end + 1);
}

#[test]
fn under_fsync_always_a_roll_syncs_and_checkpoints_before_the_next_segment_takes_appends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let mut log = open(Arc::new(StdFs), &dir, FsyncPolicy::Always).with_manual_seals();
    append_until_roll(&mut log, 0);
    assert!(!log.seal_pending(), "fsync=always seals in the foreground");
    assert_eq!(checkpoint(&dir).segment_base, log.end_position().0);
}

#[test]
fn a_failed_background_sync_stops_the_partition_at_the_sealed_segments_last_sync() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let plan = FaultPlan::new();
    let fs = Arc::new(FaultyFs::new(plan.clone()));
    let mut log = open(fs, &dir, FsyncPolicy::Never).with_manual_seals();
    for i in 0..3 {
        append(&mut log, i).expect("append");
    }
    log.sync().expect("an explicit sync");
    let synced = log.durable_position();
    let end = append_until_roll(&mut log, 3);
    let next_base = log.end_position().0;
    append(&mut log, end).expect("append to the new segment");
    // The sealed segment's fdatasync fails in the background.
    plan.inject(Op::Sync, &format!("{:020}.log", 0), Fault::Io, 0, Some(1));
    assert!(log.run_seal_job());
    let err = log
        .append(&batch(end + 1))
        .and_then(|_| log.commit())
        .expect_err("the partition stops");
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
    assert!(
        err.to_string().contains("fdatasync of")
            && err.to_string().contains("00000000000000000000.log"),
        "{err}"
    );
    assert_eq!(log.durable_position(), synced);
    assert_eq!(
        log.reader().end_offset(),
        3,
        "readers no longer see what may never reach the disk"
    );
    assert_dense(&log, 3);
    let again = log.append(&batch(3)).expect_err("still refused");
    assert!(again.to_string().contains("restart the broker"), "{again}");
    let fence = checkpoint(&dir);
    assert!(fence.fence && fence.segment_base == 0 && fence.position == synced.1);
    // Closing writes nothing over the fence.
    log.close().expect("close");
    assert_eq!(checkpoint(&dir), fence);
    // The next start removes the segment after the fence and cuts at it.
    let mut log = open(Arc::new(StdFs), &dir, FsyncPolicy::Never);
    assert!(
        !segment_log(&dir, next_base).exists(),
        "the later segment is removed"
    );
    assert_dense(&log, 3);
    append(&mut log, 3).expect("appends work after the restart");
    assert_dense(&log, 4);
}

#[test]
fn a_failed_index_seal_in_the_background_turns_the_partition_read_only_and_a_restart_rebuilds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let plan = FaultPlan::new();
    let fs = Arc::new(FaultyFs::new(plan.clone()));
    let mut log = open(fs, &dir, FsyncPolicy::Never).with_manual_seals();
    let end = append_until_roll(&mut log, 0);
    plan.inject(Op::Sync, &format!("{:020}.index", 0), Fault::Io, 0, Some(1));
    assert!(log.run_seal_job());
    let err = log.commit().expect_err("read-only");
    assert!(
        err.to_string().contains("sealing a segment failed"),
        "{err}"
    );
    assert_dense(&log, end);
    drop(log);
    let log = open(Arc::new(StdFs), &dir, FsyncPolicy::Never);
    assert!(log.recovery_report().rebuilt_indexes >= 1);
    assert_dense(&log, end);
}

#[test]
fn a_sealed_segment_whose_sync_did_not_complete_is_cut_and_what_follows_it_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let fs = PowerCutFs::new();
    let mut log = open(Arc::new(fs.clone()), &dir, FsyncPolicy::Never).with_manual_seals();
    for i in 0..3 {
        append(&mut log, i).expect("append");
    }
    log.sync().expect("sync");
    let end = append_until_roll(&mut log, 3);
    let next_base = log.end_position().0;
    for i in end..end + 5 {
        append(&mut log, i).expect("append to the new segment");
    }
    // The new segment's own bytes are synced; the sealed one's are not.
    log.sync_active()
        .expect("the interval policy's sync of the new segment");
    drop(log);
    fs.power_cut(7).expect("power cut");
    let log = open(Arc::new(StdFs), &dir, FsyncPolicy::Never);
    let next = log.next_offset();
    assert!(
        (3..next_base).contains(&next),
        "the log ends inside the sealed segment, after its synced part: {next}"
    );
    assert_dense(&log, next);
    assert!(
        !segment_log(&dir, next_base).exists(),
        "the segment after the lost tail is removed"
    );
    assert_eq!(log.reader().segment_count(), 1);
}

#[test]
fn a_power_cut_at_each_step_of_the_background_seal_loses_only_what_was_not_synced() {
    // The job's steps: sync the sealed segment, seal its two indexes, sync
    // the directory, write the snapshot and the checkpoint (each a temp
    // file, its sync, a rename, a directory sync). The power goes after
    // `steps` of its calls, for every `steps` until the job completes.
    let mut completed = false;
    for steps in 0..40 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        let fs = PowerCutFs::new();
        let mut log = open(Arc::new(fs.clone()), &dir, FsyncPolicy::Never).with_manual_seals();
        let end = append_until_roll(&mut log, 0);
        let next_base = log.end_position().0;
        append(&mut log, end).expect("append");
        log.sync_active().expect("sync the new segment");
        fs.fail_after(steps);
        assert!(log.run_seal_job());
        let settled = log.commit();
        let whole = settled.is_ok() && !fs.is_off();
        drop(log);
        fs.power_cut(steps).expect("power cut");
        let log = open(Arc::new(StdFs), &dir, FsyncPolicy::Never);
        let next = log.next_offset();
        assert_dense(&log, next);
        if whole {
            // The job completed: the sealed segment, the new one's name
            // and the checkpoint are durable; the new segment was synced.
            assert_eq!(next, end + 1, "after {steps} steps");
            assert!(segment_log(&dir, next_base).exists());
            assert_eq!(checkpoint(&dir).segment_base, next_base);
            completed = true;
            break;
        }
        assert!(next <= end + 1, "after {steps} steps");
    }
    assert!(completed, "the job never completed within the budget");
}

#[test]
fn a_kill_during_the_background_sync_loses_nothing_and_recovery_syncs_the_sealed_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let fs = PowerCutFs::new();
    let mut log = open(Arc::new(fs.clone()), &dir, FsyncPolicy::Never).with_manual_seals();
    let end = append_until_roll(&mut log, 0);
    append(&mut log, end).expect("append");
    // kill -9: the page cache survives, the job never ran.
    drop(log);
    let log = open(Arc::new(fs.clone()), &dir, FsyncPolicy::Never);
    assert_dense(&log, end + 1);
    drop(log);
    // Recovery synced the sealed segment before trusting it: a power cut
    // now loses none of it.
    fs.power_cut(3).expect("power cut");
    let log = open(Arc::new(StdFs), &dir, FsyncPolicy::Never);
    assert_dense(&log, end + 1);
}

#[test]
fn retention_keeps_a_segment_until_its_background_sync_completed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let mut log = open(Arc::new(StdFs), &dir, FsyncPolicy::Never).with_manual_seals();
    append_until_roll(&mut log, 0);
    log.set_retention(None, Some(1));
    assert_eq!(log.enforce_retention().expect("retention"), 0);
    assert!(log.run_seal_job());
    log.commit().expect("settle");
    assert_eq!(log.enforce_retention().expect("retention"), 1);
}

/// Waits until `done`, for at most 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_thread_writes_the_checkpoint_once_the_background_sync_completed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let log = PartitionLog::open(
        Arc::new(StdFs),
        &dir,
        config(FsyncPolicy::Never),
        Arc::new(ManualClock::new(T0)),
    )
    .expect("open");
    let mut i = 0;
    while log.reader().segment_count() < 2 {
        log.append(batch(i)).await.expect("append");
        i += 1;
    }
    let next_base = log.reader().end_offset() - 1;
    // No more appends: the writer's timer settles the seal.
    eventually("the checkpoint names the new segment", || {
        Checkpoint::read(&StdFs, &dir)
            .ok()
            .flatten()
            .is_some_and(|c| c.segment_base >= next_base)
    })
    .await;
    log.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_sync_turns_a_running_partition_read_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let plan = FaultPlan::new();
    plan.inject(Op::Sync, &format!("{:020}.log", 0), Fault::Io, 0, None);
    let log = PartitionLog::open(
        Arc::new(FaultyFs::new(plan.clone())),
        &dir,
        config(FsyncPolicy::Interval(Duration::from_secs(3600))),
        Arc::new(ManualClock::new(T0)),
    )
    .expect("open");
    // The seal may fail (and stop the partition) while appends go on.
    let mut i = 0;
    while log.reader().segment_count() < 2 && log.append(batch(i)).await.is_ok() {
        i += 1;
    }
    eventually("the partition refuses writes", || {
        log.reader().read_only().is_some()
    })
    .await;
    let cause = log.reader().read_only().expect("read-only");
    assert!(cause.contains("fdatasync of"), "{cause}");
    let err = log.append(batch(i)).await.expect_err("refused");
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
    assert_eq!(log.reader().segment_count(), 1, "the new segment is gone");
}
