//! Tests of the bound on open segment files and index maps
//! ([`super::open_segments`]): the cache closes cold files and reads reopen
//! them, reads racing the closing work, the count of open files and of
//! index maps stays bounded however many sealed segments there are, a
//! failed reopen is a clear error (a failed remap costs a scan, not a wrong
//! answer), and retention deletes segments whose files are open or closed.

use std::path::Path;
use std::sync::Arc;

use pigeon_protocol::batch::records_of_batches;

use super::tests::batch;
use super::*;
use crate::io::{Fault, FaultPlan, FaultyFs, FileSystem, Op, StdFs, read_full_at};

/// Segments of about five batches of about 150 bytes.
fn config(cache: &OpenSegments) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        fsync: FsyncPolicy::Always,
        open_segments: cache.clone(),
        ..LogConfig::default()
    }
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:06}-{}", "x".repeat(80)).into_bytes()
}

fn open(fs: Arc<dyn FileSystem>, dir: &Path, cache: &OpenSegments) -> Log {
    Log::open(fs, dir, config(cache), Arc::new(SystemClock)).expect("open")
}

/// Appends records `range`, one batch each, each committed.
fn fill(log: &mut Log, range: std::ops::Range<u64>) {
    for i in range {
        log.append(&batch(&[&value(i)])).expect("append");
        log.commit().expect("commit");
    }
}

/// Reads `offset` and checks that its record is the one appended.
fn check(reader: &LogReader, offset: u64) {
    let read = reader
        .read(offset, 4096)
        .unwrap_or_else(|e| panic!("read at {offset}: {e}"));
    let record = records_of_batches(read.bytes)
        .map(|r| r.expect("record"))
        .find(|r| r.offset == offset)
        .unwrap_or_else(|| panic!("offset {offset} was not served"));
    assert_eq!(
        record.value.to_vec(),
        value(offset),
        "the record at {offset}"
    );
}

/// Sealed segments (all but the last) whose `.log` is open now.
fn sealed_open(log: &Log) -> usize {
    let segments = log.shared.snapshot();
    segments[..segments.len() - 1]
        .iter()
        .filter(|s| s.file_is_open())
        .count()
}

/// This process's file descriptors open on files under `dir`.
fn fds_under(dir: &Path) -> usize {
    let dir = dir.canonicalize().expect("canonical dir");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count()
}

/// The index files under `dir` this process has memory-mapped now, one
/// per map.
fn index_maps_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().expect("canonical dir");
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with(&dir) && path.contains("index"))
        .map(str::to_owned)
        .collect()
}

/// The offset of the first record at or after each record's timestamp is
/// that record's (one record per batch, timestamps non-decreasing: the
/// first record with the timestamp).
fn check_time_lookups(reader: &LogReader, offsets: std::ops::Range<u64>) {
    for offset in offsets {
        let read = reader.read(offset, 4096).expect("read");
        let record = records_of_batches(read.bytes)
            .map(|r| r.expect("record"))
            .find(|r| r.offset == offset)
            .expect("served");
        let found = reader
            .offset_for_timestamp(record.timestamp)
            .expect("time lookup")
            .expect("an offset");
        assert!(found <= offset, "{found} for the timestamp of {offset}");
        let first = reader.read(found, 4096).expect("read");
        let first = records_of_batches(first.bytes)
            .map(|r| r.expect("record"))
            .find(|r| r.offset == found)
            .expect("served");
        assert_eq!(first.timestamp, record.timestamp, "at {found}");
    }
}

#[test]
fn index_maps_stay_bounded_however_many_sealed_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let cache = OpenSegments::new(2);
    let mut log = open(Arc::new(StdFs), &dir, &cache);
    fill(&mut log, 0..400);
    let reader = log.reader();
    let segments = reader.segment_count();
    assert!(segments >= 50, "{segments} segments");
    // Two maps a segment were kept before: now the active segment's two
    // and at most four (twice the cache's capacity) of sealed segments.
    let bound = 2 + 4;
    let maps = index_maps_under(&dir).len();
    assert!(maps <= bound, "{maps} index maps for {segments} segments");
    for offset in (0..400).rev() {
        check(&reader, offset);
    }
    check_time_lookups(&reader, 0..400);
    let maps = index_maps_under(&dir).len();
    assert!(maps <= bound, "{maps} index maps after reading them all");
    let (reopened, closed) = cache.maps_reopened_and_closed();
    assert!(
        reopened > 0 && closed > 0,
        "{reopened} remapped, {closed} unmapped"
    );
    assert!(cache.maps_len() <= 4);
    // After a restart too, once the log is open.
    drop(reader);
    log.close().expect("close");
    let log = open(Arc::new(StdFs), &dir, &cache);
    let maps = index_maps_under(&dir).len();
    assert!(maps <= bound, "{maps} index maps after the open");
    check(&log.reader(), 0);
    check_time_lookups(&log.reader(), 395..400);
}

#[test]
fn a_sealed_index_that_cannot_be_mapped_again_costs_a_scan_not_a_wrong_answer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let cache = OpenSegments::new(1);
    let mut log = open(Arc::new(StdFs), &dir, &cache);
    fill(&mut log, 0..60);
    let reader = log.reader();
    let segments = log.shared.snapshot();
    let first_end = segments[1].base_offset;
    assert!(
        first_end >= 3,
        "the first segment holds {first_end} records"
    );
    // Read the later segments: the first one's maps are unmapped.
    for offset in first_end..60 {
        check(&reader, offset);
    }
    assert!(!segments[0].index.0.is_mapped());
    for kind in ["index", "timeindex"] {
        std::fs::remove_file(dir.join(format!("00000000000000000000.{kind}"))).expect("remove");
    }
    for offset in 0..first_end {
        check(&reader, offset);
    }
    check_time_lookups(&reader, 0..first_end);
    assert!(!segments[0].index.0.is_mapped(), "nothing to map");
}

#[test]
fn the_cache_closes_cold_files_and_a_read_reopens_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let plan = FaultPlan::new();
    let cache = OpenSegments::new(2);
    let mut log = open(Arc::new(FaultyFs::new(plan.clone())), &dir, &cache);
    fill(&mut log, 0..80);
    let reader = log.reader();
    let sealed = reader.segment_count() - 1;
    assert!(sealed >= 8, "{sealed} sealed segments");
    assert!(
        sealed_open(&log) <= 2,
        "released at each roll, at most two stay open"
    );
    // The oldest segments were closed: reading them reopens them, one by
    // one, and closes others.
    let first = "00000000000000000000.log";
    let opens = plan.calls(Op::Open, first);
    for offset in 0..80 {
        check(&reader, offset);
    }
    assert_eq!(
        plan.calls(Op::Open, first),
        opens + 1,
        "the first segment was reopened once for its reads"
    );
    assert!(
        cache.reopened() >= sealed as u64 - 2,
        "{}",
        cache.reopened()
    );
    assert!(sealed_open(&log) <= 2, "{} open", sealed_open(&log));
    assert!(cache.len() <= 2);
    // Read again from the start: closed again, reopened again.
    check(&reader, 0);
    assert_eq!(plan.calls(Op::Open, first), opens + 2);
    // The active segment is never closed.
    let active = log.shared.snapshot().last().cloned().expect("active");
    assert!(active.file_is_open());
}

#[test]
fn open_files_stay_bounded_however_many_sealed_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let cache = OpenSegments::new(4);
    let mut log = open(Arc::new(StdFs), &dir, &cache);
    fill(&mut log, 0..400);
    let reader = log.reader();
    let segments = reader.segment_count();
    assert!(segments >= 50, "{segments} segments");
    // Three files a segment were open before: no index file is, and the
    // active `.log` plus at most four sealed ones.
    assert!(fds_under(&dir) <= 5, "{} fds open", fds_under(&dir));
    for offset in (0..400).rev() {
        check(&reader, offset);
    }
    let open_now = fds_under(&dir);
    assert!(
        open_now <= 5,
        "{open_now} fds open for {segments} segments after reading them all"
    );
    // After a restart too, once the log is open.
    drop(reader);
    log.close().expect("close");
    let log = open(Arc::new(StdFs), &dir, &cache);
    assert_eq!(log.reader().segment_count(), segments);
    assert!(fds_under(&dir) <= 5, "{} fds open", fds_under(&dir));
    check(&log.reader(), 0);
    check(&log.reader(), 399);
}

#[test]
fn opening_a_log_of_many_segments_holds_no_more_files_open_than_serving_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let cache = OpenSegments::new(2);
    let mut log = open(Arc::new(StdFs), &dir, &cache);
    fill(&mut log, 0..300);
    let segments = log.reader().segment_count();
    assert!(segments >= 40, "{segments} segments");
    log.close().expect("close");
    for clean in [true, false] {
        if !clean {
            // An unclean stop: the checkpoint names an earlier segment,
            // so the later sealed ones are scanned, not trusted.
            std::fs::remove_file(dir.join(crate::log::checkpoint::FILE_NAME)).expect("remove");
        }
        let plan = FaultPlan::new();
        let log = open(Arc::new(FaultyFs::new(plan.clone())), &dir, &cache);
        let (now, peak) = plan.open_files();
        // Each sealed segment went to the cache as it was opened: the
        // cache's two, the active segment's, and the few files an open
        // reads and closes (an index to map it, the checkpoint).
        assert!(
            peak <= 6,
            "{peak} files open at once opening {segments} segments (clean: {clean})"
        );
        assert!(now <= 3, "{now} open after the open");
        check(&log.reader(), 0);
        check(&log.reader(), 299);
        log.close().expect("close");
    }
}

#[test]
fn a_file_closed_by_the_cache_stays_usable_to_the_read_holding_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let cache = OpenSegments::new(1);
    let mut log = open(Arc::new(StdFs), &dir, &cache);
    fill(&mut log, 0..30);
    let segments = log.shared.snapshot();
    assert!(segments.len() >= 4);
    let first = &segments[0];
    let held = first.file().expect("open the first segment");
    for segment in &segments[1..segments.len() - 1] {
        segment.file().expect("open");
    }
    assert!(!first.file_is_open(), "closed in the cache");
    let mut buf = vec![0u8; 64];
    assert_eq!(
        read_full_at(held.as_ref(), &mut buf, 0).expect("read"),
        64,
        "the file held by the read is still open"
    );
    drop(held);
    check(&log.reader(), 0);
}

#[test]
fn reads_racing_the_closing_of_their_files_all_succeed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let cache = OpenSegments::new(1);
    let mut log = open(Arc::new(StdFs), &dir, &cache);
    fill(&mut log, 0..200);
    let reader = log.reader();
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let reader = reader.clone();
            scope.spawn(move || {
                for round in 0..3u64 {
                    for offset in ((thread + round) % 7..200).step_by(7) {
                        check(&reader, offset);
                    }
                }
            });
        }
    });
    assert!(cache.closed() > 0 && cache.reopened() > 0);
    assert!(
        sealed_open(&log) <= 1 + 4,
        "at most one, but for busy slots"
    );
    check(&reader, 0);
}

#[test]
fn a_failed_reopen_fails_the_read_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let plan = FaultPlan::new();
    let cache = OpenSegments::new(1);
    let mut log = open(Arc::new(FaultyFs::new(plan.clone())), &dir, &cache);
    fill(&mut log, 0..30);
    let reader = log.reader();
    let segments = log.shared.snapshot();
    let last_sealed = segments[segments.len() - 2].base_offset;
    check(&reader, last_sealed);
    assert!(!segments[0].file_is_open());
    let first = "00000000000000000000.log";
    plan.inject(Op::Open, first, Fault::Io, 0, None);
    for err in [
        reader.read(0, 4096).expect_err("the reopen fails"),
        reader
            .offset_for_timestamp(i64::MIN)
            .expect_err("the reopen fails"),
    ] {
        assert!(matches!(err, LogError::Io { .. }), "{err}");
        assert!(err.is_retriable());
        let shown = err.to_string();
        assert!(
            shown.starts_with("I/O error while reading") && shown.contains(first),
            "{shown}"
        );
    }
    plan.clear();
    check(&reader, 0);
    // Deleted behind the log's back while closed: the read says so.
    check(&reader, last_sealed);
    assert!(!segments[0].file_is_open());
    std::fs::remove_file(dir.join(first)).expect("remove");
    let err = reader.read(0, 4096).expect_err("the file is gone");
    let LogError::Io { source, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(first), "{err}");
    // The rest of the log is served.
    check(&reader, last_sealed);
    check(&reader, 29);
}

#[test]
fn retention_deletes_segments_whether_their_files_are_open_or_closed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let cache = OpenSegments::new(2);
    let mut log = open(Arc::new(StdFs), &dir, &cache);
    fill(&mut log, 0..100);
    let reader = log.reader();
    for offset in 0..100 {
        check(&reader, offset);
    }
    let segments = log.shared.snapshot();
    let sealed = &segments[..segments.len() - 1];
    let open_before = sealed.iter().filter(|s| s.file_is_open()).count();
    assert!(open_before >= 1 && open_before < sealed.len());
    let bases: Vec<u64> = sealed.iter().map(|s| s.base_offset).collect();
    drop(segments);
    log.set_retention(None, Some(1));
    assert_eq!(log.enforce_retention().expect("retention"), bases.len());
    for base in bases {
        assert!(!dir.join(format!("{base:020}.log")).exists(), "{base}");
    }
    assert_eq!(reader.segment_count(), 1);
    fill(&mut log, 100..110);
    for offset in reader.start_offset()..110 {
        check(&reader, offset);
    }
    assert!(
        fds_under(&dir) <= 3,
        "the active segment's file and at most two sealed ones: {}",
        fds_under(&dir)
    );
}

#[test]
fn indexes_rebuilt_under_temp_names_are_sealed_there_and_serve_after_the_rename() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let cache = OpenSegments::new(2);
    let mut log = open(Arc::new(StdFs), &dir, &cache);
    fill(&mut log, 0..40);
    log.close().expect("close");
    let index = dir.join("00000000000000000000.index");
    let expected = std::fs::metadata(&index).expect("index").len();
    assert!(expected > 0, "the first segment has offset entries");
    for kind in ["index", "timeindex"] {
        std::fs::remove_file(dir.join(format!("00000000000000000000.{kind}"))).expect("remove");
    }
    let log = open(Arc::new(StdFs), &dir, &cache);
    assert_eq!(log.recovery_report().rebuilt_indexes, 1);
    assert_eq!(
        std::fs::metadata(&index).expect("rebuilt").len(),
        expected,
        "rebuilt, cut to its entries, renamed"
    );
    let leftovers = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0, "no temp index left");
    for offset in 0..40 {
        check(&log.reader(), offset);
    }
    // Once unmapped, the rebuilt indexes are mapped again by their real
    // names, not the temp names they were sealed under.
    let first = dir
        .join("00000000000000000000.index")
        .canonicalize()
        .expect("path");
    let first = first.to_string_lossy().into_owned();
    assert!(
        !index_maps_under(&dir).contains(&first),
        "unmapped by the reads after it"
    );
    check(&log.reader(), 0);
    assert!(
        index_maps_under(&dir).contains(&first),
        "mapped again: {:?}",
        index_maps_under(&dir)
    );
    log.close().expect("close");
    let log = open(Arc::new(StdFs), &dir, &cache);
    assert_eq!(
        log.recovery_report().rebuilt_indexes,
        0,
        "the renamed indexes are trusted"
    );
    for offset in 0..40 {
        check(&log.reader(), offset);
    }
}
