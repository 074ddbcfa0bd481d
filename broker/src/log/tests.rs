//! Tests of the partition log: round trips, roll, retention, time lookups,
//! one named test per damage case, and injected disk faults.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use pigeon_protocol::batch::{
    BatchBuilder, ProducerStamp, Record, RecordBatch, records_of, verify_stored,
};

use super::*;
use crate::io::{Fault, FaultPlan, FaultyFs, FileSystem, Op, StdFs};

const T0: i64 = 1_700_000_000_000;

pub(crate) fn batch(values: &[&[u8]]) -> RecordBatch {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(None, value, &[]);
    }
    RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1 << 20).expect("valid batch")
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:06}").into_bytes()
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    clock: ManualClock,
    config: LogConfig,
}

impl Fixture {
    fn new(config: LogConfig) -> Fixture {
        Self::with_fs(config, Arc::new(StdFs))
    }

    fn with_fs(config: LogConfig, fs: Arc<dyn FileSystem>) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("topics").join("t").join("0");
        Fixture {
            _tmp: tmp,
            dir,
            fs,
            clock: ManualClock::new(T0),
            config,
        }
    }

    fn open(&self) -> Log {
        Log::open(
            self.fs.clone(),
            &self.dir,
            self.config.clone(),
            Arc::new(self.clock.clone()),
        )
        .expect("open log")
    }

    fn segment_path(&self, base: u64, kind: &str) -> PathBuf {
        self.dir.join(format!("{base:020}.{kind}"))
    }
}

/// Appends `n` one-record batches with values `value(first..first+n)`.
fn append_n(log: &mut Log, first: u64, n: u64) {
    for i in first..first + n {
        log.append(&batch(&[&value(i)])).expect("append");
        log.commit().expect("commit");
    }
}

/// Every record from `from` to the end, decoded.
fn read_all(reader: &LogReader, from: u64) -> Vec<Record> {
    let mut records = Vec::new();
    let mut offset = from;
    loop {
        let result = reader.read(offset, 1000).expect("read");
        if result.bytes.is_empty() {
            return records;
        }
        for record in decode(&result.bytes) {
            if record.offset >= offset {
                records.push(record);
            }
        }
        offset = records.last().map_or(offset, |r| r.offset + 1);
    }
}

fn decode(mut bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (_, length) = pigeon_protocol::batch::read_prefix(bytes).expect("prefix");
        let total = 12 + length as usize;
        verify_stored(&bytes[..total], 1 << 20).expect("served batches verify");
        let records = records_of(Bytes::copy_from_slice(&bytes[..total])).expect("records");
        out.extend(records.map(|r| r.expect("record")));
        bytes = &bytes[total..];
    }
    out
}

fn assert_values(records: &[Record], range: std::ops::Range<u64>) {
    let got: Vec<(u64, Vec<u8>)> = records
        .iter()
        .map(|r| (r.offset, r.value.to_vec()))
        .collect();
    let want: Vec<(u64, Vec<u8>)> = range.map(|i| (i, value(i))).collect();
    assert_eq!(got, want);
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(len)
        .expect("truncate");
}

fn flip_bit(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[position as usize] ^= 0x10;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn appended_batches_read_back_byte_for_byte() {
    let fx = Fixture::new(LogConfig::default());
    let mut log = fx.open();
    let first = log.append(&batch(&[b"a", b"b", b"c"])).expect("append");
    let second = log.append(&batch(&[b"d"])).expect("append");
    log.commit().expect("commit");
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    assert_eq!((second.base_offset, second.last_offset), (3, 3));
    let result = log.reader().read(0, 1 << 20).expect("read");
    assert_eq!(result.high_watermark, 4);
    let records = decode(&result.bytes);
    let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_ref()).collect();
    assert_eq!(values, [b"a", b"b", b"c", b"d"]);
    assert!(records.iter().all(|r| r.timestamp == T0));
    // Reading from the middle of a batch returns the whole batch.
    let middle = log.reader().read(1, 1 << 20).expect("read");
    assert_eq!(decode(&middle.bytes)[0].offset, 0);
}

#[test]
fn appends_are_invisible_until_committed() {
    let fx = Fixture::new(LogConfig::default());
    let mut log = fx.open();
    log.append(&batch(&[b"a"])).expect("append");
    assert_eq!(log.reader().end_offset(), 0);
    assert!(log.reader().read(0, 100).expect("read").bytes.is_empty());
    log.commit().expect("commit");
    assert_eq!(log.reader().end_offset(), 1);
}

#[test]
fn reads_respect_max_bytes_but_always_return_one_batch() {
    let fx = Fixture::new(LogConfig::default());
    let mut log = fx.open();
    append_n(&mut log, 0, 10);
    let one_batch_len = log.reader().read(0, 1).expect("read").bytes.len();
    assert!(
        one_batch_len > 1,
        "a batch larger than max_bytes is still served"
    );
    let two = log.reader().read(0, one_batch_len * 2 + 5).expect("read");
    assert_eq!(decode(&two.bytes).len(), 2);
}

#[test]
fn segments_roll_at_segment_bytes_and_reads_span_them() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 300);
    let reader = log.reader();
    assert!(
        reader.segment_count() > 3,
        "{} segments",
        reader.segment_count()
    );
    assert_values(&read_all(&reader, 0), 0..300);
    assert_values(&read_all(&reader, 137), 137..300);
    for entry in std::fs::read_dir(&fx.dir).expect("dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        assert!(
            name == "checkpoint"
                || name == "producers.snapshot"
                || name.len() == 20 + 1 + name.split('.').nth(1).map_or(0, str::len),
            "{name}"
        );
    }
    assert!(fx.segment_path(0, "log").exists());
    assert!(file_len(&fx.segment_path(0, "log")) <= 4096);
}

#[test]
fn segments_roll_after_segment_ms() {
    let fx = Fixture::new(LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    });
    let mut log = fx.open();
    append_n(&mut log, 0, 2);
    fx.clock.advance(1001);
    append_n(&mut log, 2, 1);
    assert_eq!(log.reader().segment_count(), 2);
    assert!(fx.segment_path(2, "log").exists());
}

#[test]
fn reads_by_timestamp_find_the_first_record_at_or_after() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    for i in 0..200u64 {
        fx.clock.advance(10);
        log.append(&batch(&[&value(i)])).expect("append");
        log.commit().expect("commit");
    }
    let reader = log.reader();
    // Record i was appended at T0 + 10 (i + 1).
    assert_eq!(reader.offset_for_timestamp(0).expect("lookup"), Some(0));
    assert_eq!(
        reader.offset_for_timestamp(T0 + 10).expect("lookup"),
        Some(0)
    );
    assert_eq!(
        reader.offset_for_timestamp(T0 + 11).expect("lookup"),
        Some(1)
    );
    assert_eq!(
        reader.offset_for_timestamp(T0 + 1000).expect("lookup"),
        Some(99)
    );
    assert_eq!(
        reader.offset_for_timestamp(T0 + 1995).expect("lookup"),
        Some(199)
    );
    assert_eq!(
        reader.offset_for_timestamp(T0 + 2001).expect("lookup"),
        None
    );
}

#[test]
fn timestamps_never_go_back_when_the_clock_does() {
    let fx = Fixture::new(LogConfig::default());
    let mut log = fx.open();
    let first = log.append(&batch(&[b"a"])).expect("append");
    fx.clock.advance(-5000);
    let second = log.append(&batch(&[b"b"])).expect("append");
    assert_eq!(second.timestamp, first.timestamp);
}

#[test]
fn batches_with_timestamp_deltas_are_refused() {
    let mut builder = BatchBuilder::new();
    builder.push(None, b"x", &[]);
    let mut bytes = builder.build(ProducerStamp::NONE, 0).to_vec();
    bytes[55] = 7; // the first record's timestamp delta (after length and attributes)
    let crc = crc32fast::hash(&bytes[16..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    let batch = RecordBatch::validate(Bytes::from(bytes), 1 << 20).expect("valid format");
    let fx = Fixture::new(LogConfig::default());
    let err = fx.open().append(&batch).expect_err("delta refused");
    assert!(matches!(err, LogError::TimestampDelta(7)), "{err}");
}

#[test]
fn retention_by_bytes_deletes_oldest_segments_and_moves_the_start() {
    let fx = Fixture::new(LogConfig {
        retention_bytes: Some(8192),
        ..small_config()
    });
    let mut log = fx.open();
    append_n(&mut log, 0, 500);
    let reader = log.reader();
    let start = reader.start_offset();
    assert!(start > 0, "retention deleted nothing");
    assert!(reader.size_bytes() <= 8192 + 4096);
    assert!(!fx.segment_path(0, "log").exists());
    assert!(!fx.segment_path(0, "index").exists());
    let err = reader.read(0, 100).expect_err("deleted");
    assert!(
        err.to_string().contains(&format!("earliest is {start}")),
        "{err}"
    );
    assert_values(&read_all(&reader, start), start..500);
}

#[test]
fn retention_by_time_deletes_segments_whose_newest_record_expired() {
    let fx = Fixture::new(LogConfig {
        retention_ms: Some(60_000),
        ..small_config()
    });
    let mut log = fx.open();
    append_n(&mut log, 0, 100);
    let segments = log.reader().segment_count();
    assert!(segments > 1);
    assert_eq!(log.enforce_retention().expect("retention"), 0);
    fx.clock.advance(60_001);
    assert_eq!(log.enforce_retention().expect("retention"), segments - 1);
    assert_eq!(log.reader().segment_count(), 1);
    // The log keeps going, and a restart finds the same start.
    append_n(&mut log, 100, 5);
    let start = log.reader().start_offset();
    log.close().expect("close");
    let log = fx.open();
    assert_eq!(log.reader().start_offset(), start);
    assert_eq!(log.next_offset(), 105);
}

#[test]
fn clean_restart_scans_nothing_and_keeps_everything() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 100);
    log.close().expect("close");
    let mut log = fx.open();
    let report = log.recovery_report();
    assert!(report.clean);
    assert_eq!(
        (
            report.scanned_bytes,
            report.truncated_bytes,
            report.rebuilt_indexes
        ),
        (0, 0, 0)
    );
    assert_values(&read_all(&log.reader(), 0), 0..100);
    append_n(&mut log, 100, 10);
    assert_values(&read_all(&log.reader(), 95), 95..110);
}

#[test]
fn unclean_restart_scans_only_the_tail_since_the_checkpoint() {
    let fx = Fixture::new(LogConfig {
        checkpoint_interval_bytes: 1 << 30,
        ..small_config()
    });
    let mut log = fx.open();
    append_n(&mut log, 0, 100); // several rolls, each writes a checkpoint
    let (base, _) = log.durable_position();
    drop(log); // crash: no clean checkpoint
    let log = fx.open();
    let report = log.recovery_report();
    assert!(!report.clean);
    assert_eq!(
        report.scanned_bytes,
        file_len(&fx.segment_path(base, "log"))
    );
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.rebuilt_indexes, 0);
    assert_values(&read_all(&log.reader(), 0), 0..100);
}

/// Opens the log after damaging it with `damage(last segment path, its size)`,
/// and returns the log and the number of records that survived. The
/// segment is first cut to its last batch (the zeros its writer wrote ahead
/// go): `damage` acts on the file's end as the end of the data.
fn reopen_after(damage: impl FnOnce(&Path, u64)) -> (Fixture, Log) {
    let fx = Fixture::new(LogConfig::default());
    let mut log = fx.open();
    append_n(&mut log, 0, 10);
    let (_, end) = log.end_position();
    drop(log);
    let path = fx.segment_path(0, "log");
    truncate(&path, end);
    damage(&path, file_len(&path));
    let log = fx.open();
    (fx, log)
}

#[test]
fn recovery_truncates_torn_last_batch_and_keeps_valid_prefix() {
    let (fx, mut log) = reopen_after(|path, len| truncate(path, len - 3));
    assert_eq!(log.next_offset(), 9);
    assert!(log.recovery_report().truncated_bytes > 0);
    assert_values(&read_all(&log.reader(), 0), 0..9);
    append_n(&mut log, 9, 2);
    drop(log);
    assert_values(&read_all(&fx.open().reader(), 0), 0..11);
}

#[test]
fn recovery_cuts_garbage_appended_after_the_last_batch() {
    let (fx, log) = reopen_after(|path, _| {
        let mut bytes = std::fs::read(path).expect("read");
        bytes.extend_from_slice(&[0xAB; 100]);
        std::fs::write(path, bytes).expect("write");
    });
    assert_eq!(log.next_offset(), 10);
    assert_eq!(log.recovery_report().truncated_bytes, 100);
    assert_values(&read_all(&log.reader(), 0), 0..10);
    drop(fx);
}

#[test]
fn recovery_drops_last_batch_with_a_flipped_bit() {
    let (_fx, log) = reopen_after(|path, len| flip_bit(path, len - 2));
    assert_eq!(log.next_offset(), 9);
    assert_values(&read_all(&log.reader(), 0), 0..9);
}

#[test]
fn recovery_cuts_a_zero_filled_preallocated_tail() {
    let (_fx, log) = reopen_after(|path, len| truncate(path, len + 64 * 1024));
    assert_eq!(log.next_offset(), 10);
    assert_eq!(log.recovery_report().zero_bytes_cut, 64 * 1024);
    assert_eq!(log.recovery_report().truncated_bytes, 0);
    assert_values(&read_all(&log.reader(), 0), 0..10);
}

#[test]
fn flipped_bit_in_a_sealed_segment_is_reported_on_read_and_never_served() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 200);
    log.close().expect("close");
    let victim = fx.segment_path(0, "log");
    flip_bit(&victim, 1500);
    let log = fx.open();
    let reader = log.reader();
    // Some offset of the first segment hits the damaged batch.
    let errors: Vec<LogError> = (0..40).filter_map(|o| reader.read(o, 64).err()).collect();
    assert!(!errors.is_empty(), "the damaged batch was served");
    let message = errors[0].to_string();
    assert!(
        message.contains("00000000000000000000.log") && message.contains("at byte"),
        "{message}"
    );
    // Every record served verified, and later segments still read fine.
    let second_base = reader.read(199, 64).expect("read").bytes;
    assert!(!second_base.is_empty());
    let tail_start = 100;
    assert_values(&read_all(&reader, tail_start), tail_start..200);
}

#[test]
fn missing_index_files_are_rebuilt() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 200);
    log.close().expect("close");
    std::fs::remove_file(fx.segment_path(0, "index")).expect("rm");
    std::fs::remove_file(fx.segment_path(0, "timeindex")).expect("rm");
    let log = fx.open();
    assert_eq!(log.recovery_report().rebuilt_indexes, 1);
    assert!(file_len(&fx.segment_path(0, "index")) > 0);
    assert_values(&read_all(&log.reader(), 0), 0..200);
    assert_eq!(
        log.reader().offset_for_timestamp(T0).expect("lookup"),
        Some(0)
    );
}

#[test]
fn truncated_index_file_is_rebuilt() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 200);
    log.close().expect("close");
    let index = fx.segment_path(0, "index");
    truncate(&index, file_len(&index) - 3);
    let log = fx.open();
    assert_eq!(log.recovery_report().rebuilt_indexes, 1);
    assert_eq!(file_len(&index) % 8, 0);
    assert_values(&read_all(&log.reader(), 0), 0..200);
}

#[test]
fn missing_active_index_is_rebuilt_on_unclean_restart() {
    let fx = Fixture::new(LogConfig {
        checkpoint_interval_bytes: 1 << 30,
        ..LogConfig::default()
    });
    let mut log = fx.open();
    append_n(&mut log, 0, 300);
    drop(log);
    std::fs::remove_file(fx.segment_path(0, "index")).expect("rm");
    let log = fx.open();
    assert_values(&read_all(&log.reader(), 0), 0..300);
    assert_values(&read_all(&log.reader(), 250), 250..300);
}

/// Issue 12, defect 6: `max_batch_bytes` limits new appends only. Before,
/// lowering it made recovery cut the active segment at the first stored
/// batch above the new limit, and reads refused the larger batches of
/// sealed segments as corrupt.
#[test]
fn lowering_max_batch_bytes_keeps_and_serves_stored_larger_batches() {
    let mut fx = Fixture::new(LogConfig {
        checkpoint_interval_bytes: 1 << 30,
        ..small_config()
    });
    let big = |i: u64| vec![b'a' + i as u8; 1500];
    let mut log = fx.open();
    for i in 0..7 {
        log.append(&batch(&[&big(i)])).expect("append");
        log.commit().expect("commit");
    }
    assert!(
        log.reader().segment_count() > 2,
        "sealed segments and a tail"
    );
    drop(log); // crash: the active segment's tail is scanned at open
    fx.config.max_batch_bytes = 1024;
    let mut log = fx.open();
    assert_eq!(log.recovery_report().truncated_bytes, 0);
    assert_eq!(log.next_offset(), 7);
    let records = read_all(&log.reader(), 0);
    let values: Vec<Vec<u8>> = records.iter().map(|r| r.value.to_vec()).collect();
    assert_eq!(values, (0..7).map(big).collect::<Vec<_>>());
    let err = log
        .append(&batch(&[&big(7)]))
        .expect_err("new batches above the limit are refused");
    assert!(matches!(err, LogError::InvalidBatch(_)), "{err}");
    append_n(&mut log, 7, 1);
    assert_eq!(log.next_offset(), 8);
}

/// Issue 12, defect 9: index files of a rebuild that was killed before it
/// wrote its entries are the right size and all zeros. Before, they passed
/// the plausibility check, the zero time entry made the segment's largest
/// timestamp 0, and time retention deleted data appended a moment ago.
#[test]
fn zeroed_sealed_indexes_are_rebuilt_and_keep_time_retention_right() {
    let fx = Fixture::new(LogConfig {
        retention_ms: Some(60_000),
        ..small_config()
    });
    let mut log = fx.open();
    append_n(&mut log, 0, 150);
    log.close().expect("close");
    let capacity = fx.config.index_capacity();
    std::fs::write(fx.segment_path(0, "index"), vec![0u8; capacity * 8]).expect("zero index");
    std::fs::write(fx.segment_path(0, "timeindex"), vec![0u8; capacity * 12])
        .expect("zero time index");
    let mut log = fx.open();
    assert_eq!(log.recovery_report().rebuilt_indexes, 1);
    assert_eq!(
        log.enforce_retention().expect("retention"),
        0,
        "nothing is older than the retention time"
    );
    assert_values(&read_all(&log.reader(), 0), 0..150);
    assert_eq!(
        log.reader().offset_for_timestamp(T0).expect("lookup"),
        Some(0)
    );
}

/// Issue 12, defect 11: a sealed segment that holds offsets the next
/// segment begins with (two copies of the same offsets) is refused with an
/// error naming both files. Before, it was trusted without a look, and
/// reads served the overlapping offsets from both copies.
#[test]
fn overlapping_segments_are_refused_not_served() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 150);
    let bases: Vec<u64> = log
        .shared
        .snapshot()
        .iter()
        .map(|s| s.base_offset)
        .collect();
    log.close().expect("close");
    assert!(bases.len() > 2);
    // The first batch of the second segment, also at the end of the first.
    let second = std::fs::read(fx.segment_path(bases[1], "log")).expect("read");
    let (_, length) = pigeon_protocol::batch::read_prefix(&second).expect("prefix");
    let first_batch = &second[..12 + length as usize];
    let mut first = std::fs::read(fx.segment_path(0, "log")).expect("read");
    first.extend_from_slice(first_batch);
    std::fs::write(fx.segment_path(0, "log"), first).expect("write");
    let err = Log::open(
        fx.fs.clone(),
        &fx.dir,
        fx.config.clone(),
        Arc::new(fx.clock.clone()),
    )
    .expect_err("overlapping segments are refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{:020}.log", 0))
            && text.contains(&format!("{:020}.log", bases[1]))
            && text.contains("overlap"),
        "{text}"
    );
}

/// Issue 12, defect 11: a sealed segment that ends before the next one
/// begins (its last batch is lost) is opened; reads of the missing offsets
/// fail naming them and where to go on, every other offset is served.
#[test]
fn a_gap_between_segments_is_reported_with_the_missing_offsets() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 150);
    let second = log.shared.snapshot()[1].base_offset;
    log.close().expect("close");
    let path = fx.segment_path(0, "log");
    let bytes = std::fs::read(&path).expect("read");
    let mut last_start = 0;
    let mut at = 0;
    while at < bytes.len() {
        let (_, length) = pigeon_protocol::batch::read_prefix(&bytes[at..]).expect("prefix");
        last_start = at;
        at += 12 + length as usize;
    }
    truncate(&path, last_start as u64);
    let log = fx.open();
    let reader = log.reader();
    let err = reader.read(second - 1, 100).expect_err("the lost batch");
    let text = err.to_string();
    assert!(
        text.contains(&format!("offset {} is missing", second - 1))
            && text.contains(&format!("read from {second} on")),
        "{text}"
    );
    let mut before_gap = Vec::new();
    while (before_gap.len() as u64) < second - 1 {
        let from = before_gap.len() as u64;
        let served = decode(&reader.read(from, 1000).expect("read").bytes);
        before_gap.extend(served.into_iter().filter(|r| r.offset >= from));
    }
    assert_values(&before_gap, 0..second - 1);
    assert_values(&read_all(&reader, second), second..150);
}

/// Issue 12, defects 9 and 11: the checks of trusted sealed segments at
/// open read about one index interval (plus the last batch) per segment,
/// however large the log.
#[test]
fn opening_reads_about_one_index_interval_per_sealed_segment() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 600);
    let sealed = log.reader().segment_count() as u64 - 1;
    log.close().expect("close");
    let report = fx.open().recovery_report();
    let batch_len = batch(&[&value(0)]).bytes().len() as u64;
    let bound = sealed * (u64::from(fx.config.index_interval_bytes) + batch_len);
    assert!(sealed > 5, "{sealed} sealed segments");
    assert!(
        report.checked_tail_bytes > 0 && report.checked_tail_bytes <= bound,
        "{} bytes read for {sealed} sealed segments (bound {bound})",
        report.checked_tail_bytes
    );
}

/// Issue 12, defect 12: an index entry that points at a later batch than
/// its offset says must not make a read skip records. Before, the read
/// served from the later batch: the records in between were never seen.
#[test]
fn a_read_never_skips_records_when_an_index_entry_points_past_the_offset() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 150);
    log.close().expect("close");
    let path = fx.segment_path(0, "index");
    let mut index = std::fs::read(&path).expect("read index");
    assert!(index.len() >= 5 * 8, "a few entries");
    // Entry 2 keeps its offset but takes entry 3's position.
    let position_of_3: [u8; 4] = index[3 * 8 + 4..3 * 8 + 8].try_into().expect("4 bytes");
    index[2 * 8 + 4..2 * 8 + 8].copy_from_slice(&position_of_3);
    std::fs::write(&path, index).expect("write index");
    let log = fx.open();
    let reader = log.reader();
    for offset in 0..150 {
        let served = decode(&reader.read(offset, 1).expect("read").bytes);
        assert!(
            served[0].offset <= offset,
            "a read at {offset} started at {}",
            served[0].offset
        );
    }
    assert_values(&read_all(&reader, 0), 0..150);
}

/// Issue 12, defect 12, time reads: a time index entry whose offset lies
/// past batches at or after the timestamp asked for must not make the
/// lookup skip them.
#[test]
fn a_time_lookup_never_skips_records_when_a_time_entry_points_past_them() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    for i in 0..150u64 {
        fx.clock.advance(10);
        append_n(&mut log, i, 1);
    }
    log.close().expect("close");
    let path = fx.segment_path(0, "timeindex");
    let mut index = std::fs::read(&path).expect("read time index");
    assert!(index.len() >= 5 * 12, "a few entries");
    // Entry 2 keeps its timestamp but takes entry 3's offset.
    let offset_of_3: [u8; 4] = index[3 * 12 + 8..3 * 12 + 12].try_into().expect("4 bytes");
    index[2 * 12 + 8..2 * 12 + 12].copy_from_slice(&offset_of_3);
    std::fs::write(&path, index).expect("write time index");
    let log = fx.open();
    // Record i was appended at T0 + 10 (i + 1).
    for i in 0..150u64 {
        let at = T0 + 10 * (i as i64 + 1);
        assert_eq!(
            log.reader().offset_for_timestamp(at).expect("lookup"),
            Some(i),
            "lookup of {at}"
        );
    }
}

#[test]
fn leftover_temp_and_orphan_index_files_are_removed() {
    let fx = Fixture::new(LogConfig::default());
    let log = fx.open();
    drop(log);
    std::fs::write(fx.dir.join("checkpoint.tmp"), b"half").expect("write");
    std::fs::write(fx.segment_path(77, "index"), b"").expect("write");
    let _log = fx.open();
    assert!(!fx.dir.join("checkpoint.tmp").exists());
    assert!(!fx.segment_path(77, "index").exists());
}

#[test]
fn failed_fsync_turns_the_log_read_only() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 3);
    plan.inject(Op::Sync, ".log", Fault::Io, 0, Some(1));
    log.append(&batch(&[b"lost"])).expect("staged");
    let err = log.commit().expect_err("fsync fails");
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
    // The unsynced batch is never visible, and no retry pretends.
    assert_eq!(log.reader().end_offset(), 3);
    let err = log.append(&batch(&[b"more"])).expect_err("read-only");
    assert!(err.to_string().contains("restart the broker"), "{err}");
    assert_values(&read_all(&log.reader(), 0), 0..3);
}

/// Appends one batch whose fdatasync fails: its bytes stay in the page cache
/// (with a valid CRC) although the disk may never get them.
fn fail_an_fsync(plan: &FaultPlan, log: &mut Log, batch: &RecordBatch) {
    plan.inject(Op::Sync, ".log", Fault::Io, 0, Some(1));
    log.append(batch).expect("staged");
    let err = log.commit().expect_err("fsync fails");
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
}

#[test]
fn fsync_failure_then_restart_serves_nothing_past_the_synced_position() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 3);
    fail_an_fsync(&plan, &mut log, &batch(&[b"never synced"]));
    // A process restart, not a power cut: the page cache still holds the
    // batch, and a new descriptor's fsync would "succeed".
    drop(log);
    let log = fx.open();
    assert_eq!(
        log.reader().end_offset(),
        3,
        "the batch whose fsync failed is not served after a restart"
    );
    assert_values(&read_all(&log.reader(), 0), 0..3);
}

#[test]
fn fsync_failure_then_restart_does_not_answer_a_retry_as_duplicate() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_idempotent(&mut log, 0, 2);
    fail_an_fsync(&plan, &mut log, &idempotent_batch(&[&value(2)], 7, 0, 2));
    drop(log);
    let mut log = fx.open();
    let retry = log
        .append(&idempotent_batch(&[&value(2)], 7, 0, 2))
        .expect("retry after restart");
    assert!(
        !retry.duplicate,
        "a batch that was never durable is appended again, not acknowledged as a duplicate"
    );
    log.commit().expect("commit");
    assert_eq!(retry.base_offset, 2);
    assert_values(&read_all(&log.reader(), 0), 0..3);
}

#[test]
fn fsync_failure_whose_cut_also_fails_is_fenced_by_the_checkpoint() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 3);
    // The file cannot be cut back either: only the persisted marker is left
    // to tell recovery where the durable data ends.
    plan.inject(Op::SetLen, ".log", Fault::Io, 0, None);
    fail_an_fsync(&plan, &mut log, &batch(&[b"never synced"]));
    drop(log);
    plan.clear();
    let log = fx.open();
    assert_eq!(log.reader().end_offset(), 3);
    assert!(
        log.recovery_report().truncated_bytes > 0,
        "recovery cut the unsynced tail at the marker"
    );
    assert_values(&read_all(&log.reader(), 0), 0..3);
    drop(log);
    // The marker was consumed: a later restart keeps the log as it is.
    let log = fx.open();
    assert_values(&read_all(&log.reader(), 0), 0..3);
}

#[test]
fn a_fence_is_replaced_before_the_first_append_after_the_restart() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 3);
    plan.inject(Op::SetLen, ".log", Fault::Io, 0, None);
    fail_an_fsync(&plan, &mut log, &batch(&[b"never synced"]));
    drop(log);
    plan.clear();
    // The restart honours the fence but cannot replace it yet.
    plan.inject(Op::Open, "checkpoint.tmp", Fault::NoSpace, 0, None);
    let mut log = fx.open();
    assert_values(&read_all(&log.reader(), 0), 0..3);
    let err = log
        .append(&batch(&[&value(3)]))
        .expect_err("an append while the fence stands would be cut at the next start");
    assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("fence"), "{err}");
    plan.clear();
    append_n(&mut log, 3, 2);
    drop(log); // crash
    let log = fx.open();
    assert_values(&read_all(&log.reader(), 0), 0..5);
}

#[test]
fn fsync_failure_under_the_interval_policy_takes_back_unsynced_appends() {
    let plan = FaultPlan::new();
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
        ..LogConfig::default()
    };
    let fx = Fixture::with_fs(config, Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 3);
    log.sync().expect("sync");
    append_n(&mut log, 3, 2);
    assert_eq!(log.reader().end_offset(), 5, "visible before any sync");
    plan.inject(Op::Sync, ".log", Fault::Io, 0, Some(1));
    let err = log.sync().expect_err("fsync fails");
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
    assert_eq!(
        log.reader().end_offset(),
        3,
        "readers no longer see what may never reach the disk"
    );
    assert_values(&read_all(&log.reader(), 0), 0..3);
    assert_eq!(log.sync_due_at(), None, "no timed sync keeps failing");
    drop(log);
    let log = fx.open();
    assert_values(&read_all(&log.reader(), 0), 0..3);
}

#[test]
fn disk_full_on_append_fails_cleanly_and_service_resumes() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 3);
    // Half the batch reaches the disk, then the disk is full.
    plan.inject(Op::Write, ".log", Fault::ShortWrite(20), 0, Some(1));
    plan.inject(Op::Write, ".log", Fault::NoSpace, 0, None);
    log.append(&batch(&[b"x"])).expect("staged");
    let err = log.commit().expect_err("disk full");
    assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
    assert!(err.is_retriable());
    assert_eq!(
        log.next_offset(),
        3,
        "the failed batch's offsets are reused"
    );
    plan.clear();
    append_n(&mut log, 3, 2);
    assert_values(&read_all(&log.reader(), 0), 0..5);
    drop(log);
    let log = fx.open();
    assert_eq!(
        log.recovery_report().truncated_bytes,
        0,
        "no partial batch was left behind"
    );
    assert_values(&read_all(&log.reader(), 0), 0..5);
}

#[test]
fn disk_full_on_roll_fails_the_append_and_keeps_the_log() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(small_config(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 5);
    plan.inject(Op::Open, ".index", Fault::NoSpace, 0, None);
    let mut failed = None;
    for i in 5..400 {
        match log.append(&batch(&[&value(i)])) {
            Ok(_) => log.commit().expect("commit"),
            Err(e) => {
                failed = Some((i, e));
                break;
            }
        }
    }
    let (at, err) = failed.expect("a roll was needed");
    assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
    assert_values(&read_all(&log.reader(), 0), 0..at);
    // Even a batch that would fit goes nowhere near the sealed segment:
    // the roll is retried first, and fails while the disk is full.
    let small = log
        .append(&batch(&[b"s"]))
        .expect_err("the sealed segment takes no appends");
    assert!(matches!(small, LogError::DiskFull { .. }), "{small}");
    plan.clear();
    append_n(&mut log, at, 3);
    assert_values(&read_all(&log.reader(), 0), 0..at + 3);
}

/// A tmpfs of a given size mounted on a directory; unmounted when dropped.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// Mounts one, or says why it cannot (needs root and `mount`).
    fn mount(dir: &Path, size: &str) -> Result<SmallTmpfs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(SmallTmpfs(dir.to_owned()))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// Writes a file until the file system has no page left.
fn fill_disk(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create filler");
    let page = [0x5au8; 4096];
    while file.write_all(&page).is_ok() {}
    let _ = file.sync_all();
}

/// A one-record batch of exactly `len` bytes.
fn batch_of_len(len: usize, tag: u64) -> RecordBatch {
    let overhead = batch(&[b""]).bytes().len();
    let mut value = format!("{tag:08}").into_bytes();
    value.resize(len - overhead, b'.');
    let batch = batch(&[&value]);
    assert_eq!(batch.bytes().len(), len, "value length varint grew");
    batch
}

/// The body of `index_writes_on_a_full_tmpfs_answer_disk_full_not_sigbus`,
/// run in a child process (a SIGBUS would kill the whole test binary) with
/// its data directory on a small tmpfs at `mount`.
fn full_tmpfs_scenario(mount: &Path) {
    let dir = mount.join("topics").join("t").join("0");
    let config = LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 64,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    };
    let clock = ManualClock::new(T0);
    let open = || {
        Log::open(
            Arc::new(StdFs),
            &dir,
            config.clone(),
            Arc::new(clock.clone()),
        )
    };
    let mut log = open().expect("open");
    // 100-byte batches: each gets an index entry, and the log's last page
    // is always partly used. Fill the first page of the offset index (512
    // entries of 8 bytes).
    let mut acked = 0u64;
    while log.active.segment.index.0.len() < 512 {
        log.append(&batch_of_len(100, acked)).expect("append");
        log.commit().expect("commit");
        acked += 1;
    }
    let room = 4096 - log.end_position().1 % 4096;
    assert!(room >= 100, "the next batch fits in the log's last page");
    fill_disk(&mount.join("filler"));
    // The next batch fits in the log's last page, so its write succeeds;
    // its index entry starts the index file's second page, which the full
    // disk cannot provide unless it was allocated up front.
    let disk_full = loop {
        let appended = log
            .append(&batch_of_len(100, acked))
            .and_then(|_| log.commit());
        match appended {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 10_000, "the disk never filled up");
    };
    assert!(
        matches!(disk_full, LogError::DiskFull { .. }),
        "{disk_full}"
    );
    let served = read_all(&log.reader(), 0).len() as u64;
    assert_eq!(served, acked, "everything acknowledged is served");
    // Recovery on the still-full disk (a crash, then a restart).
    drop(log);
    let mut log = open().expect("reopen on the full disk");
    assert_eq!(read_all(&log.reader(), 0).len() as u64, acked);
    // Space comes back; appends resume.
    std::fs::remove_file(mount.join("filler")).expect("free space");
    for _ in 0..600 {
        log.append(&batch_of_len(100, acked)).expect("append");
        log.commit().expect("commit");
        acked += 1;
    }
    assert_eq!(read_all(&log.reader(), 0).len() as u64, acked);
    log.close().expect("close");
}

#[test]
fn index_writes_on_a_full_tmpfs_answer_disk_full_not_sigbus() {
    const CHILD: &str = "PIGEON_FULL_TMPFS_DIR";
    if let Some(mount) = std::env::var_os(CHILD) {
        full_tmpfs_scenario(Path::new(&mount));
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mount = match SmallTmpfs::mount(&tmp.path().join("small"), "8m") {
        Ok(mount) => mount,
        Err(why) => {
            // The fault file system tests of `Op::Allocate` cover the
            // error path; only a real file system shows the signal.
            println!("index_writes_on_a_full_tmpfs NOT RUN: {why}");
            return;
        }
    };
    let exe = std::env::current_exe().expect("test binary");
    let output = std::process::Command::new(exe)
        .args([
            "log::tests::index_writes_on_a_full_tmpfs_answer_disk_full_not_sigbus",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &mount.0)
        .output()
        .expect("run the scenario in a child process");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        None,
        "the broker process was killed by signal {:?} (SIGBUS is {}) on a full disk:\n{said}",
        output.status.signal(),
        libc::SIGBUS
    );
    assert!(output.status.success(), "the scenario failed:\n{said}");
    assert!(
        said.contains("1 passed"),
        "the child ran the scenario:\n{said}"
    );
}

#[test]
fn no_space_to_allocate_index_files_is_disk_full_at_open_and_roll() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(small_config(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 20);
    log.close().expect("close"); // cuts the active indexes to their entries
    // The disk is full: the active index cannot grow back at open.
    plan.inject(Op::Allocate, "index", Fault::NoSpace, 0, None);
    let mut log = fx.open();
    assert_values(&read_all(&log.reader(), 0), 0..20);
    // Its next entry needs a roll, and the new segment's indexes cannot be
    // allocated either: a clear answer, nothing written through a map.
    let mut failed = None;
    for i in 20..400 {
        match log.append(&batch(&[&value(i)])) {
            Ok(_) => log.commit().expect("commit"),
            Err(e) => {
                failed = Some((i, e));
                break;
            }
        }
    }
    let (at, err) = failed.expect("a roll was needed");
    assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
    assert!(err.is_retriable());
    assert_values(&read_all(&log.reader(), 0), 0..at);
    plan.clear();
    append_n(&mut log, at, 300);
    assert!(log.reader().segment_count() > 2, "rolls resumed");
    assert_values(&read_all(&log.reader(), 0), 0..at + 300);
    drop(log);
    let log = fx.open();
    assert_values(&read_all(&log.reader(), 0), 0..at + 300);
}

#[test]
fn read_errors_are_reported_not_hidden() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_n(&mut log, 0, 3);
    plan.inject(Op::Read, ".log", Fault::Io, 0, Some(1));
    let err = log.reader().read(0, 100).expect_err("read error");
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    assert_values(&read_all(&log.reader(), 0), 0..3);
}

#[test]
fn out_of_range_reads_name_the_earliest_offset() {
    let fx = Fixture::new(LogConfig::default());
    let mut log = fx.open();
    append_n(&mut log, 0, 3);
    let err = log.reader().read(4, 100).expect_err("beyond end");
    assert_eq!(
        err.to_string(),
        "offset 4 is out of range: earliest is 0, next is 3"
    );
    assert!(log.reader().read(3, 100).expect("at end").bytes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_complete_after_them() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let log = PartitionLog::open(
        fx.fs.clone(),
        &fx.dir,
        fx.config.clone(),
        Arc::new(fx.clock.clone()),
    )
    .expect("open");
    let syncs_before = plan.calls(Op::Sync, ".log");
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(batch(&[&value(i)])).await })
        })
        .collect();
    let mut offsets = Vec::new();
    for task in tasks {
        offsets.push(task.await.expect("join").expect("append").base_offset);
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..200).collect::<Vec<_>>());
    let syncs = plan.calls(Op::Sync, ".log") - syncs_before;
    assert!(
        (1..200).contains(&syncs),
        "{syncs} fsyncs for 200 concurrent appends"
    );
    assert_eq!(log.reader().end_offset(), 200);
    log.close().await.expect("close");
    let reopened = fx.open();
    assert!(reopened.recovery_report().clean);
    assert_eq!(reopened.next_offset(), 200);
}

/// A command sent to a log while it closes is answered: appended, or
/// `Closed`. One queued just after the writer took its Close stays in the
/// channel forever (the handles keep the channel alive), so its caller
/// must learn from the writer stopping, not from its reply being dropped.
/// Before, such an append or close hung (about one round in ten of a
/// group's stop followed by a close of its journal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_racing_the_close_is_answered_not_left_waiting() {
    for round in 0..200 {
        let fx = Fixture::new(LogConfig::default());
        let log = PartitionLog::open(
            fx.fs.clone(),
            &fx.dir,
            fx.config.clone(),
            Arc::new(fx.clock.clone()),
        )
        .expect("open");
        let closing = tokio::spawn({
            let log = log.clone();
            async move { log.close().await }
        });
        let raced = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let appended = log.append(batch(&[b"late"])).await;
            let closed_again = log.close().await;
            (appended, closed_again)
        })
        .await;
        let (appended, closed_again) =
            raced.unwrap_or_else(|_| panic!("round {round}: a command racing the close hung"));
        assert!(
            matches!(appended, Ok(_) | Err(LogError::Closed)),
            "round {round}: {appended:?}"
        );
        let first_close = closing.await.expect("join");
        // Whichever close reaches the writer first closes the log; the
        // other is told it is closed.
        assert!(
            matches!(
                (&first_close, &closed_again),
                (Ok(()), Ok(()) | Err(LogError::Closed)) | (Err(LogError::Closed), Ok(()))
            ),
            "round {round}: {first_close:?}, {closed_again:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_end_reports_new_data() {
    let fx = Fixture::new(LogConfig::default());
    let log = PartitionLog::open(
        fx.fs.clone(),
        &fx.dir,
        fx.config.clone(),
        Arc::new(fx.clock.clone()),
    )
    .expect("open");
    let mut end = log.watch_end();
    assert_eq!(*end.borrow(), 0);
    log.append(batch(&[b"a"])).await.expect("append");
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        end.wait_for(|e| *e == 1),
    )
    .await
    .expect("notified in time")
    .expect("watch open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_policy_syncs_by_itself() {
    let plan = FaultPlan::new();
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(std::time::Duration::from_millis(20)),
        ..LogConfig::default()
    };
    let fx = Fixture::with_fs(config, Arc::new(FaultyFs::new(plan.clone())));
    let log = PartitionLog::open(
        fx.fs.clone(),
        &fx.dir,
        fx.config.clone(),
        Arc::new(fx.clock.clone()),
    )
    .expect("open");
    let before = plan.calls(Op::Sync, ".log");
    log.append(batch(&[b"a"])).await.expect("append");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while plan.calls(Op::Sync, ".log") == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no timed fsync happened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn idempotent_batch(values: &[&[u8]], producer_id: i64, epoch: i16, sequence: i32) -> RecordBatch {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(None, value, &[]);
    }
    let stamp = ProducerStamp {
        producer_id,
        producer_epoch: epoch,
        base_sequence: sequence,
    };
    RecordBatch::validate(builder.build(stamp, 0), 1 << 20).expect("valid batch")
}

/// Sends batches 0..n of producer 7 (one record each), committing each.
fn append_idempotent(log: &mut Log, from: i32, n: i32) -> Vec<AppendInfo> {
    (from..from + n)
        .map(|seq| {
            let info = log
                .append(&idempotent_batch(&[&value(seq as u64)], 7, 0, seq))
                .expect("append");
            log.commit().expect("commit");
            info
        })
        .collect()
}

#[test]
fn a_retried_idempotent_batch_gets_its_original_offsets() {
    let fx = Fixture::new(LogConfig::default());
    let mut log = fx.open();
    let first = append_idempotent(&mut log, 0, 3);
    let retry = log
        .append(&idempotent_batch(&[&value(1)], 7, 0, 1))
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.timestamp),
        (first[1].base_offset, first[1].timestamp)
    );
    assert_eq!(log.next_offset(), 3, "nothing was appended");
    let gap = log
        .append(&idempotent_batch(&[b"x"], 7, 0, 9))
        .expect_err("gap");
    assert!(
        matches!(
            gap,
            LogError::Sequence(producers::SequenceError::OutOfOrder { expected: 3, .. })
        ),
        "{gap}"
    );
}

#[test]
fn producer_state_survives_a_crash_without_a_full_scan() {
    let fx = Fixture::new(LogConfig {
        checkpoint_interval_bytes: 1 << 30,
        ..small_config()
    });
    let mut log = fx.open();
    let first = append_idempotent(&mut log, 0, 120); // rolls several times
    drop(log); // crash
    let mut log = fx.open();
    let report = log.recovery_report();
    let (active_base, _) = log.end_position();
    assert_eq!(
        report.scanned_bytes,
        file_len(&fx.segment_path(active_base, "log")),
        "only the tail was scanned"
    );
    let retry = log
        .append(&idempotent_batch(&[&value(119)], 7, 0, 119))
        .expect("retry after crash");
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, first[119].base_offset);
    append_idempotent(&mut log, 120, 1);
    assert_values(&read_all(&log.reader(), 0), 0..121);
}

#[test]
fn producer_state_survives_a_clean_restart_and_retention() {
    let fx = Fixture::new(LogConfig {
        retention_bytes: Some(4096),
        ..small_config()
    });
    let mut log = fx.open();
    let first = append_idempotent(&mut log, 0, 150);
    assert!(
        log.reader().start_offset() > 0,
        "retention deleted the segments the producer wrote first"
    );
    log.close().expect("close");
    let mut log = fx.open();
    assert!(log.recovery_report().clean);
    let retry = log
        .append(&idempotent_batch(&[&value(149)], 7, 0, 149))
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, first[149].base_offset);
    assert!(
        !log.append(&idempotent_batch(&[b"next"], 7, 0, 150))
            .expect("next")
            .duplicate
    );
}

#[test]
fn producer_state_is_rebuilt_from_the_log_when_the_snapshot_is_lost() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    let first = append_idempotent(&mut log, 0, 60);
    log.close().expect("close");
    std::fs::write(fx.dir.join("producers.snapshot"), b"garbage").expect("damage snapshot");
    let mut log = fx.open();
    let retry = log
        .append(&idempotent_batch(&[&value(59)], 7, 0, 59))
        .expect("retry");
    assert!(retry.duplicate, "state was rebuilt by walking the log");
    assert_eq!(retry.base_offset, first[59].base_offset);
}

/// Issue 12, defect 2: after recovery cuts a damaged tail, the producer
/// state must not remember the batches that were cut. Before, the snapshot
/// (taken when the batch was whole) answered a retry of the cut batch as a
/// duplicate, with offsets the log no longer holds: the batch was lost.
#[test]
fn a_cut_tail_drops_producer_state_past_the_recovered_end() {
    let fx = Fixture::new(LogConfig::default());
    let mut log = fx.open();
    append_idempotent(&mut log, 0, 5);
    log.close().expect("close");
    let segment = fx.segment_path(0, "log");
    flip_bit(&segment, file_len(&segment) - 2);
    // Without the checkpoint the whole segment is scanned and the damaged
    // last batch is cut; the producer snapshot still has it.
    std::fs::remove_file(fx.dir.join("checkpoint")).expect("remove checkpoint");
    let mut log = fx.open();
    assert_eq!(log.next_offset(), 4);
    let retry = log
        .append(&idempotent_batch(&[&value(4)], 7, 0, 4))
        .expect("the cut batch is sent again");
    assert!(!retry.duplicate, "the cut batch was answered as stored");
    assert_eq!(retry.base_offset, 4);
    log.commit().expect("commit");
    assert_values(&read_all(&log.reader(), 0), 0..5);
}

/// Issue 12, defect 10: with the producer snapshot lost, a producer whose
/// batches all lie in older, sealed segments must still be known. Before,
/// only the active segment was walked: its retry was refused as an unknown
/// producer, and a retry of its first batch (sequence 0) was appended twice.
#[test]
fn producer_state_is_restored_from_sealed_segments_when_the_snapshot_is_lost() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    let first = append_idempotent(&mut log, 0, 3);
    append_n(&mut log, 3, 150);
    assert!(
        log.reader().segment_count() > 2,
        "the producer's batches are sealed"
    );
    log.close().expect("close");
    std::fs::write(fx.dir.join("producers.snapshot"), b"garbage").expect("damage snapshot");
    let mut log = fx.open();
    for seq in [0, 2] {
        let retry = log
            .append(&idempotent_batch(&[&value(seq as u64)], 7, 0, seq))
            .expect("retry");
        assert!(retry.duplicate, "sequence {seq} was appended again");
        assert_eq!(retry.base_offset, first[seq as usize].base_offset);
    }
    assert_eq!(log.next_offset(), 153, "nothing was appended twice");
}

/// Issue 12, defect 10: the walk that rebuilds lost producer state reads
/// only the segments that can hold an unexpired producer's batches.
#[test]
fn the_producer_walk_skips_segments_older_than_the_producer_expiry() {
    let mut fx = Fixture::new(small_config());
    fx.config.producer_expiry_ms = 60_000;
    let mut log = fx.open();
    append_idempotent(&mut log, 0, 3);
    append_n(&mut log, 3, 150);
    fx.clock.advance(120_000);
    log.roll().expect("roll");
    append_n(&mut log, 153, 5);
    let (active_base, _) = log.end_position();
    log.close().expect("close");
    std::fs::write(fx.dir.join("producers.snapshot"), b"garbage").expect("damage snapshot");
    let log = fx.open();
    assert_eq!(
        log.recovery_report().scanned_bytes,
        file_len(&fx.segment_path(active_base, "log")),
        "only the segment newer than the expiry was walked"
    );
    assert!(log.producers().is_empty(), "producer 7 has expired");
}

#[test]
fn a_failed_write_does_not_advance_a_producers_sequence() {
    let plan = FaultPlan::new();
    let fx = Fixture::with_fs(LogConfig::default(), Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    append_idempotent(&mut log, 0, 2);
    plan.inject(Op::Write, ".log", Fault::NoSpace, 0, Some(1));
    log.append(&idempotent_batch(&[b"lost"], 7, 0, 2))
        .expect("staged");
    assert!(log.commit().is_err());
    // The same sequence is accepted again (as new, not as a duplicate).
    let again = log
        .append(&idempotent_batch(&[b"again"], 7, 0, 2))
        .expect("append");
    assert!(!again.duplicate);
    log.commit().expect("commit");
    assert_eq!(again.base_offset, 2);
}

#[test]
fn fsync_never_does_not_sync_on_the_append_path_until_a_roll() {
    let plan = FaultPlan::new();
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        checkpoint_interval_bytes: 1024,
        ..LogConfig::default()
    };
    let fx = Fixture::with_fs(config, Arc::new(FaultyFs::new(plan.clone())));
    let mut log = fx.open();
    let before = plan.calls(Op::Sync, ".log");
    append_n(&mut log, 0, 500); // far past the checkpoint interval
    assert_eq!(
        plan.calls(Op::Sync, ".log"),
        before,
        "fsync=never synced on the append path"
    );
    assert_eq!(
        log.reader().end_offset(),
        500,
        "appends are visible without a sync"
    );
    log.roll().expect("roll");
    // The sealed segment is synced in the background; a sync waits for it.
    log.sync().expect("sync");
    assert!(
        plan.calls(Op::Sync, ".log") > before,
        "the sealed segment is synced"
    );
}

#[test]
fn trim_before_deletes_only_segments_wholly_below_the_offset() {
    let fx = Fixture::new(small_config());
    let mut log = fx.open();
    append_n(&mut log, 0, 300);
    let bases: Vec<u64> = log
        .shared
        .snapshot()
        .iter()
        .map(|s| s.base_offset)
        .collect();
    assert!(bases.len() > 3);
    // An offset inside the third segment: the first two go.
    let deleted = log.trim_before(bases[2] + 1);
    assert_eq!(deleted, 2);
    assert_eq!(log.reader().start_offset(), bases[2]);
    assert!(!fx.segment_path(bases[0], "log").exists());
    assert_eq!(
        log.trim_before(u64::MAX),
        bases.len() - 3,
        "never the active segment"
    );
    assert_values(
        &read_all(&log.reader(), log.reader().start_offset()),
        *bases.last().expect("bases")..300,
    );
}
