//! Benchmarks of the partition log (`pigeon_broker::log`), each measured
//! next to a raw baseline in the same run, so that the ratio does not depend
//! on how busy the machine was on another day. `docs/benchmarks.md` quotes
//! the figures.
//!
//! Run: `cargo bench --bench log` (add a criterion filter after `--` to run
//! part of it, e.g. `-- append_never`). Data goes to a temporary directory
//! under `$PIGEON_BENCH_DIR` (default: the system temp dir) and is deleted
//! afterwards; the recovery group needs about 2.2 GiB free there.
//!
//! | group | ours | raw baseline |
//! | --- | --- | --- |
//! | `append_never`, `append_always` | one `append` + one `commit` per batch | `write_all_at` of the same bytes at increasing positions (+ `sync_data` for `always`) |
//! | `read` | a pass over a 256 MiB log with `reader().read(offset, 1 MiB)` | `read_exact_at` of the same lengths from a plain file of the same size |
//! | `recovery_1GiB` | `Log::open` after a crash with a 1 GiB unchecked tail | reading the same 1 GiB file in 1 MiB chunks |
//! | `roll_stall` | the latency of every append + commit under `fsync=never` across many segment rolls (not a criterion group: run with the filter `roll_stall`) | none: the figure is the distribution's tail |
//! | `commit_overlap` | none: a model of one log's group commit at W3's rate (10,000 appends/s of 1 KiB), the syncs one after another against up to 2 or 4 overlapping and answered in order; the time from each append to its answer, next to a 4 KiB append + fdatasync probe every 10 ms on another file (not a criterion group: run with the filter `commit_overlap`) | the probe's p99: W3's floor |
//! | `zeros_ahead` | none: the disk alone. 1 KiB appends + `fdatasync` into bytes already written as zeros (and synced), as a busy partition's commits under `fsync=always` go (not a criterion group: run with the filter `zeros_ahead`) | the same appends growing the file, in the same run, alternating |
//! | `cpu_stalls` | none: the machine's own stalls. A thread that only reads the clock counts the gaps between its readings (≥ 1, 5 and 10 ms) alone, then beside a thread appending 1 KiB + `fdatasync` back to back, then paced to about 1,000 syncs/s; with the CPU time the hypervisor took (`steal` in `/proc/stat`) over each row (not a criterion group: run with the filter `cpu_stalls`) | the row without syncs |
//! | `fsync_threads` | none: the disk alone. 1, 4, 16, 64 and 256 threads each append 4 KiB + `fdatasync` to a file of its own, as partition logs do; syncs per second and latency (not a criterion group: run with the filter `fsync_threads`) | the same with 1 thread |
//!
//! Besides criterion's own report, each group prints a markdown table of
//! medians (stderr), and the run starts by printing the fsync latency of the
//! disk.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use pigeon_broker::io::StdFs;
use pigeon_broker::log::{FsyncPolicy, Log, LogConfig, SystemClock};
use pigeon_client::batch::{BatchBuilder, ProducerStamp, RecordBatch};
use tempfile::TempDir;

/// Criterion samples per benchmark (its minimum).
const SAMPLES: usize = 10;
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// The log and the raw file are both thrown away and started afresh (untimed)
/// after this many bytes, so a run never fills the disk and both sides pay
/// the same file-growth costs.
const RESET_BYTES: u64 = 256 * MIB;
/// Size of the log the read benchmark reads.
const READ_LOG_BYTES: u64 = 256 * MIB;
/// `max_bytes` of each read.
const READ_CHUNK: usize = MIB as usize;
/// Size of the unchecked tail the recovery benchmark scans.
const RECOVERY_TAIL: u64 = GIB;

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then every benchmark runs once as a smoke test.
    let measuring = std::env::args().any(|a| a == "--bench");
    let root = std::env::var_os("PIGEON_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    std::fs::create_dir_all(&root).expect("creating the benchmark directory");
    let rec = Recorder::default();
    if measuring {
        fsync_latency(&root);
    }
    append(&mut c, &root, &rec, FsyncPolicy::Never);
    append(&mut c, &root, &rec, FsyncPolicy::Always);
    read(&mut c, &root, &rec);
    recovery(&mut c, &root, &rec);
    c.final_summary();
    if wants("roll_stall", measuring) {
        roll_stall(&root, measuring);
    }
    if wants("fsync_threads", measuring) {
        fsync_threads(&root, measuring);
    }
    if wants("commit_overlap", measuring) {
        commit_overlap(&root, measuring);
    }
    if wants("zeros_ahead", measuring) {
        zeros_ahead(&root, measuring);
    }
    if wants("cpu_stalls", measuring) {
        cpu_stalls(&root, measuring);
    }
}

// ---------------------------------------------------------------------------
// Recording medians for the summary tables.

/// Every call of every `iter_custom` routine, by benchmark id. Criterion
/// calls a routine during warm-up first, then once per sample: the last
/// [`SAMPLES`] calls are the measured samples.
#[derive(Default)]
struct Recorder(RefCell<BTreeMap<String, Vec<Sample>>>);

/// `(iterations, time they took)` of one call.
type Sample = (u64, Duration);

impl Recorder {
    fn record(&self, id: &str, iters: u64, took: Duration) {
        self.0
            .borrow_mut()
            .entry(id.to_owned())
            .or_default()
            .push((iters, took));
    }

    /// Median over the measured samples of the time per iteration.
    fn median(&self, id: &str) -> Option<Duration> {
        let calls = self.0.borrow();
        let calls = calls.get(id)?;
        let samples = &calls[calls.len().saturating_sub(SAMPLES)..];
        let mut per_iter: Vec<f64> = samples
            .iter()
            .map(|(iters, took)| took.as_secs_f64() / *iters as f64)
            .collect();
        per_iter.sort_by(f64::total_cmp);
        let n = per_iter.len();
        let median = if n % 2 == 1 {
            per_iter[n / 2]
        } else {
            (per_iter[n / 2 - 1] + per_iter[n / 2]) / 2.0
        };
        Some(Duration::from_secs_f64(median))
    }
}

fn mib_per_s(bytes: u64, per_iter: Duration) -> f64 {
    bytes as f64 / MIB as f64 / per_iter.as_secs_f64()
}

/// `1234567.8` as `1,234,568`.
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

// ---------------------------------------------------------------------------
// fsync latency of the disk.

/// One probe round: `block` written at `pos`, then `fdatasync`; how long
/// the two took together (the `fsync_latency`, `fsync_threads` and
/// `commit_overlap` probes all time this).
fn probe_round(file: &File, block: &[u8], pos: u64) -> Duration {
    let start = Instant::now();
    file.write_all_at(block, pos).expect("probe write");
    file.sync_data().expect("probe fdatasync");
    start.elapsed()
}

/// Times 1000 × (4 KiB positioned write + `sync_data`) on a plain file and
/// prints the distribution: the floor of every `fsync=always` figure.
fn fsync_latency(root: &Path) {
    const ROUNDS: usize = 1000;
    let dir = tempfile::tempdir_in(root).expect("temp dir");
    let file = File::create(dir.path().join("fsync-probe")).expect("probe file");
    let block = vec![0xa5u8; 4096];
    let mut took = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        took.push(probe_round(&file, &block, (i * block.len()) as u64));
    }
    took.sort();
    let total: Duration = took.iter().sum();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    eprintln!("\n### fsync latency (4 KiB write + fdatasync, {ROUNDS} rounds)\n");
    eprintln!("| median | mean | p90 | p99 | max |\n| --- | --- | --- | --- | --- |");
    eprintln!(
        "| {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |\n",
        us(took[ROUNDS / 2]),
        us(total / ROUNDS as u32),
        us(took[ROUNDS * 9 / 10]),
        us(took[ROUNDS * 99 / 100]),
        us(took[ROUNDS - 1]),
    );
}

// ---------------------------------------------------------------------------
// Appends.

/// One batch shape: `records` records of `value_len` bytes each, no key, no
/// headers.
#[derive(Clone, Copy)]
struct Shape {
    records: u32,
    value_len: usize,
}

impl Shape {
    fn label(&self) -> String {
        let value = if self.value_len.is_multiple_of(1024) {
            format!("{}KiB", self.value_len / 1024)
        } else {
            format!("{}B", self.value_len)
        };
        format!("{}x{value}", self.records)
    }

    fn batch(&self) -> RecordBatch {
        let mut builder = BatchBuilder::new();
        // Not all zeros, in case a file system or disk compresses.
        let mut value = vec![0u8; self.value_len];
        let mut x = 0x9e37_79b9_u32;
        for i in 0..self.records {
            for byte in value.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *byte = x as u8;
            }
            value[0] = i as u8;
            builder.push(None, &value, &[]);
        }
        let bytes = builder.build(ProducerStamp::NONE, 0);
        RecordBatch::validate(bytes, 8 * MIB as usize).expect("the built batch is valid")
    }
}

const SHAPES: [Shape; 6] = [
    Shape {
        records: 1,
        value_len: 100,
    },
    Shape {
        records: 100,
        value_len: 100,
    },
    Shape {
        records: 1000,
        value_len: 100,
    },
    Shape {
        records: 1,
        value_len: 1024,
    },
    Shape {
        records: 100,
        value_len: 1024,
    },
    Shape {
        records: 1000,
        value_len: 1024,
    },
];

/// Something batches are written to, one per iteration.
trait Target {
    fn write_batch(&mut self);
}

/// The log: one append and one commit per batch.
struct Ours<'a> {
    log: Log,
    batch: &'a RecordBatch,
}

impl Target for Ours<'_> {
    fn write_batch(&mut self) {
        self.log.append(self.batch).expect("append");
        self.log.commit().expect("commit");
    }
}

/// A plain file: the same bytes at increasing positions.
struct Raw<'a> {
    file: File,
    pos: u64,
    bytes: &'a [u8],
    sync: bool,
}

impl Target for Raw<'_> {
    fn write_batch(&mut self) {
        self.file
            .write_all_at(self.bytes, self.pos)
            .expect("raw write");
        self.pos += self.bytes.len() as u64;
        if self.sync {
            self.file.sync_data().expect("raw fdatasync");
        }
    }
}

/// Writes `iters` batches of `batch_len` bytes to targets made by `open`
/// in fresh directories, a new one every [`RESET_BYTES`]; only the writes
/// are timed. The target is dropped without a clean close (for the log, a
/// crash: the next open would scan), and its directory deleted.
fn time_writes<T: Target>(
    root: &Path,
    iters: u64,
    batch_len: u64,
    mut open: impl FnMut(&Path) -> T,
) -> Duration {
    let per_window = (RESET_BYTES / batch_len).max(1);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let dir = tempfile::tempdir_in(root).expect("temp dir");
        let mut target = open(dir.path());
        let n = per_window.min(iters - done);
        let start = Instant::now();
        for _ in 0..n {
            target.write_batch();
        }
        total += start.elapsed();
        done += n;
        drop(target);
        drop(dir);
    }
    total
}

fn open_log(dir: &Path, config: LogConfig) -> Log {
    Log::open(Arc::new(StdFs), dir, config, Arc::new(SystemClock)).expect("opening the log")
}

/// The `append_never` or `append_always` group.
fn append(c: &mut Criterion, root: &Path, rec: &Recorder, fsync: FsyncPolicy) {
    let name = format!("append_{fsync}");
    let always = fsync == FsyncPolicy::Always;
    let mut group = c.benchmark_group(&name);
    // Under `always` every iteration waits for the disk: keep those short.
    group.measurement_time(Duration::from_secs(if always { 2 } else { 3 }));
    let config = LogConfig {
        fsync,
        ..LogConfig::default()
    };
    // `never` also runs without the syncs the log does on its own at each
    // checkpoint (64 MiB) and roll (128 MiB): a checkpoint interval and a
    // segment size above RESET_BYTES never come due. This isolates the CPU
    // cost of the log from the cost of those syncs.
    let no_periodic_sync = LogConfig {
        segment_bytes: 2 * GIB,
        checkpoint_interval_bytes: 2 * GIB,
        ..config.clone()
    };
    let mut rows = Vec::new();
    for shape in SHAPES {
        let batch = shape.batch();
        let len = batch.bytes().len() as u64;
        let label = shape.label();
        group.throughput(Throughput::ElementsAndBytes {
            elements: u64::from(shape.records),
            bytes: len,
        });
        let ours_id = format!("{name}/ours/{label}");
        group.bench_function(format!("ours/{label}"), |b| {
            b.iter_custom(|iters| {
                let took = time_writes(root, iters, len, |dir| Ours {
                    log: open_log(dir, config.clone()),
                    batch: &batch,
                });
                rec.record(&ours_id, iters, took);
                took
            })
        });
        let raw_id = format!("{name}/raw/{label}");
        group.bench_function(format!("raw/{label}"), |b| {
            b.iter_custom(|iters| {
                let took = time_writes(root, iters, len, |dir| Raw {
                    file: File::create(dir.join("00000000000000000000.log")).expect("raw file"),
                    pos: 0,
                    bytes: batch.bytes(),
                    sync: always,
                });
                rec.record(&raw_id, iters, took);
                took
            })
        });
        rows.push((format!("{fsync}"), shape, len, ours_id, raw_id.clone()));
        if !always && shape.records == 1000 {
            let id = format!("{name}/ours-no-periodic-sync/{label}");
            group.bench_function(format!("ours-no-periodic-sync/{label}"), |b| {
                b.iter_custom(|iters| {
                    let took = time_writes(root, iters, len, |dir| Ours {
                        log: open_log(dir, no_periodic_sync.clone()),
                        batch: &batch,
                    });
                    rec.record(&id, iters, took);
                    took
                })
            });
            rows.push((
                format!("{fsync}, no periodic sync"),
                shape,
                len,
                id.clone(),
                raw_id,
            ));
        }
    }
    group.finish();
    let mut lines = Vec::new();
    for (policy, shape, len, ours_id, raw_id) in rows {
        let (Some(ours), Some(raw)) = (rec.median(&ours_id), rec.median(&raw_id)) else {
            continue;
        };
        lines.push(format!(
            "| {policy} | {} × {} B | {len} | {:.1} | {} | {:.1} | {:.2} |",
            shape.records,
            shape.value_len,
            mib_per_s(len, ours),
            grouped(f64::from(shape.records) / ours.as_secs_f64()),
            mib_per_s(len, raw),
            raw.as_secs_f64() / ours.as_secs_f64(),
        ));
    }
    if lines.is_empty() {
        return;
    }
    eprintln!("\n### {name}: one batch per commit (medians)\n");
    eprintln!(
        "| fsync | batch | batch bytes | ours MiB/s | ours msgs/s | raw MiB/s | ours / raw |"
    );
    eprintln!("| --- | --- | --- | --- | --- | --- | --- |");
    eprintln!("{}\n", lines.join("\n"));
}

// ---------------------------------------------------------------------------
// Reads.

/// A 256 MiB log of 1,000-record batches of 100 B values, and a plain file
/// of the same size.
struct ReadFixture {
    _dir: TempDir,
    log: Log,
    raw: File,
    /// `(offset, length)` of each read of a sequential pass.
    reads: Vec<(u64, usize)>,
}

const READ_SHAPE: Shape = Shape {
    records: 1000,
    value_len: 100,
};

impl ReadFixture {
    /// `(bytes, records)` of the log.
    fn size() -> (u64, u64) {
        let len = READ_SHAPE.batch().bytes().len() as u64;
        let count = READ_LOG_BYTES / len;
        (count * len, count * u64::from(READ_SHAPE.records))
    }

    fn new(root: &Path) -> ReadFixture {
        let dir = tempfile::tempdir_in(root).expect("temp dir");
        let shape = READ_SHAPE;
        let batch = shape.batch();
        let len = batch.bytes().len() as u64;
        let config = LogConfig {
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        };
        let mut log = open_log(&dir.path().join("log"), config);
        let raw = File::create_new(dir.path().join("raw")).expect("raw file");
        let count = READ_LOG_BYTES / len;
        for i in 0..count {
            log.append(&batch).expect("append");
            log.commit().expect("commit");
            raw.write_all_at(batch.bytes(), i * len).expect("raw write");
        }
        // One pass to learn what each read returns; the raw side replays it.
        let reader = log.reader();
        let mut reads = Vec::new();
        let mut offset = 0;
        let mut bytes = 0;
        loop {
            let got = reader.read(offset, READ_CHUNK).expect("read");
            if got.bytes.is_empty() {
                break;
            }
            let n = got.bytes.len();
            assert_eq!(n as u64 % len, 0, "reads return whole batches");
            reads.push((offset, n));
            offset += n as u64 / len * u64::from(shape.records);
            bytes += n as u64;
        }
        assert_eq!(
            (bytes, offset),
            ReadFixture::size(),
            "one pass reads the whole log"
        );
        ReadFixture {
            _dir: dir,
            log,
            raw,
            reads,
        }
    }
}

fn read(c: &mut Criterion, root: &Path, rec: &Recorder) {
    let fixture: RefCell<Option<ReadFixture>> = RefCell::new(None);
    let with_fixture = |f: &mut dyn FnMut(&ReadFixture)| {
        let mut slot = fixture.borrow_mut();
        f(slot.get_or_insert_with(|| ReadFixture::new(root)));
    };
    let mut group = c.benchmark_group("read");
    group.sampling_mode(SamplingMode::Flat);
    // What one pass reads, known before the fixture is built (lazily, so
    // that a filtered run skipping this group does not write 256 MiB).
    let (pass_bytes, pass_records) = ReadFixture::size();
    group.throughput(Throughput::ElementsAndBytes {
        elements: pass_records,
        bytes: pass_bytes,
    });
    group.bench_function("ours/1MiB", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            with_fixture(&mut |f| {
                let start = Instant::now();
                for _ in 0..iters {
                    let reader = f.log.reader();
                    for &(offset, len) in &f.reads {
                        let got = reader.read(offset, READ_CHUNK).expect("read");
                        assert_eq!(got.bytes.len(), len);
                    }
                }
                took = start.elapsed();
            });
            rec.record("read/ours", iters, took);
            took
        })
    });
    group.bench_function("raw/1MiB", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            with_fixture(&mut |f| {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut pos = 0;
                    for &(_, len) in &f.reads {
                        // A fresh buffer per read, as the log hands out one.
                        let mut buf = vec![0u8; len];
                        f.raw.read_exact_at(&mut buf, pos).expect("raw read");
                        std::hint::black_box(&buf);
                        pos += len as u64;
                    }
                }
                took = start.elapsed();
            });
            rec.record("read/raw", iters, took);
            took
        })
    });
    group.finish();
    drop(fixture);
    if let (Some(ours), Some(raw)) = (rec.median("read/ours"), rec.median("read/raw")) {
        eprintln!(
            "\n### read: sequential pass over {} MiB, 1,000 × 100 B batches, reads of ≤ 1 MiB, page cache warm (medians)\n",
            pass_bytes / MIB
        );
        eprintln!(
            "| ours MiB/s | ours msgs/s | raw MiB/s | ours / raw |\n| --- | --- | --- | --- |"
        );
        eprintln!(
            "| {:.0} | {} | {:.0} | {:.2} |\n",
            mib_per_s(pass_bytes, ours),
            grouped(pass_records as f64 / ours.as_secs_f64()),
            mib_per_s(pass_bytes, raw),
            raw.as_secs_f64() / ours.as_secs_f64(),
        );
    }
}

// ---------------------------------------------------------------------------
// Recovery.

/// A log whose only segment holds a 1 GiB tail that no checkpoint covers.
struct RecoveryFixture {
    _dir: TempDir,
    log_dir: PathBuf,
    config: LogConfig,
    /// The segment's `.log` file.
    segment: PathBuf,
}

impl RecoveryFixture {
    fn new(root: &Path) -> RecoveryFixture {
        let dir = tempfile::tempdir_in(root).expect("temp dir");
        let log_dir = dir.path().join("log");
        let config = LogConfig {
            fsync: FsyncPolicy::Never,
            // All of the tail in one segment, and no checkpoint inside it.
            segment_bytes: RECOVERY_TAIL + 64 * MIB,
            checkpoint_interval_bytes: 2 * GIB,
            ..LogConfig::default()
        };
        let batch = READ_SHAPE.batch();
        let mut log = open_log(&log_dir, config.clone());
        while log.reader().size_bytes() < RECOVERY_TAIL {
            log.append(&batch).expect("append");
            log.commit().expect("commit");
        }
        assert_eq!(log.reader().segment_count(), 1);
        drop(log); // A crash: no clean checkpoint.
        // The first recovery also fsyncs the tail (it was never synced);
        // the timed ones find it clean on disk, as after a real crash.
        let log = open_log(&log_dir, config.clone());
        assert!(log.recovery_report().scanned_bytes >= RECOVERY_TAIL);
        drop(log);
        let segment = std::fs::read_dir(&log_dir)
            .expect("listing the log")
            .map(|e| e.expect("directory entry").path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("the segment file");
        RecoveryFixture {
            _dir: dir,
            log_dir,
            config,
            segment,
        }
    }

    /// Back to the state right after the crash: each open writes a new
    /// checkpoint (making the next open instant); without one, the whole
    /// last segment is scanned.
    fn restore_crash_state(&self) {
        std::fs::remove_file(self.log_dir.join("checkpoint")).expect("removing the checkpoint");
    }

    /// Drops the (clean) segment's pages from the page cache, as after a
    /// reboot.
    fn evict(&self) {
        let file = File::open(&self.segment).expect("opening the segment");
        // SAFETY: a plain syscall on a file descriptor we own.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise(DONTNEED) failed");
    }

    /// Timed open of the crashed log; returns the time and bytes scanned.
    fn recover(&self) -> (Duration, u64) {
        self.restore_crash_state();
        let start = Instant::now();
        let log = open_log(&self.log_dir, self.config.clone());
        let took = start.elapsed();
        let scanned = log.recovery_report().scanned_bytes;
        drop(log);
        (took, scanned)
    }

    /// Timed sequential read of the segment file in 1 MiB chunks.
    fn read_raw(&self) -> Duration {
        let file = File::open(&self.segment).expect("opening the segment");
        let len = file.metadata().expect("segment size").len();
        let mut buf = vec![0u8; MIB as usize];
        let start = Instant::now();
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(MIB) as usize;
            file.read_exact_at(&mut buf[..n], pos).expect("raw read");
            std::hint::black_box(&buf);
            pos += n as u64;
        }
        start.elapsed()
    }
}

fn recovery(c: &mut Criterion, root: &Path, rec: &Recorder) {
    let fixture: RefCell<Option<RecoveryFixture>> = RefCell::new(None);
    let scanned = RefCell::new(Vec::new());
    let with_fixture = |f: &mut dyn FnMut(&RecoveryFixture)| {
        let mut slot = fixture.borrow_mut();
        f(slot.get_or_insert_with(|| RecoveryFixture::new(root)));
    };
    let mut group = c.benchmark_group("recovery_1GiB");
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(RECOVERY_TAIL));
    for cold in [false, true] {
        let cache = if cold { "cold" } else { "warm" };
        let ours_id = format!("recovery/ours/{cache}");
        group.bench_function(format!("ours/{cache}"), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                with_fixture(&mut |f| {
                    for _ in 0..iters {
                        if cold {
                            f.evict();
                        }
                        let (t, bytes) = f.recover();
                        assert!(bytes >= RECOVERY_TAIL, "scanned only {bytes} bytes");
                        scanned.borrow_mut().push(bytes);
                        took += t;
                    }
                });
                rec.record(&ours_id, iters, took);
                took
            })
        });
        let raw_id = format!("recovery/raw/{cache}");
        group.bench_function(format!("raw-read/{cache}"), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                with_fixture(&mut |f| {
                    for _ in 0..iters {
                        if cold {
                            f.evict();
                        }
                        took += f.read_raw();
                    }
                });
                rec.record(&raw_id, iters, took);
                took
            })
        });
    }
    group.finish();
    drop(fixture);
    let scanned = scanned.into_inner();
    let (Some(&min), Some(&max)) = (scanned.iter().min(), scanned.iter().max()) else {
        return;
    };
    eprintln!(
        "\n### recovery_1GiB: `Log::open` after a crash, tail of {min}..={max} bytes scanned per open (medians)\n"
    );
    eprintln!(
        "| page cache | open (recovery) | scan rate MiB/s | raw read of the file | raw MiB/s | ours / raw |"
    );
    eprintln!("| --- | --- | --- | --- | --- | --- |");
    for cache in ["warm", "cold"] {
        let (Some(ours), Some(raw)) = (
            rec.median(&format!("recovery/ours/{cache}")),
            rec.median(&format!("recovery/raw/{cache}")),
        ) else {
            continue;
        };
        eprintln!(
            "| {cache} | {:.0} ms | {:.0} | {:.0} ms | {:.0} | {:.2} |",
            ours.as_secs_f64() * 1e3,
            mib_per_s(min, ours),
            raw.as_secs_f64() * 1e3,
            mib_per_s(min, raw),
            raw.as_secs_f64() / ours.as_secs_f64(),
        );
    }
    eprintln!();
}

// ---------------------------------------------------------------------------
// Append latency across segment rolls.

/// Whether to run `name` ([`roll_stall`], [`fsync_threads`]): asked for by
/// name (`-- roll_stall`), or once, small, as a smoke test under
/// `cargo test --benches`.
fn wants(name: &str, measuring: bool) -> bool {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && !a.is_empty());
    match filter {
        Some(filter) => name.contains(filter.as_str()) && measuring,
        None => !measuring,
    }
}

/// Times every `append` + `commit` of 1 KiB × 100 batches (103,353 B)
/// under `fsync=never` with 32 MiB segments: 512 MiB in all, so 15 rolls,
/// each of which used to `fdatasync` the segment it sealed on the append
/// path. The appends are paced at `PIGEON_ROLL_STALL_MIBS` MiB/s (default
/// 64, below what the disk writes, so that the disk keeps up and what is
/// measured is the append path, not back-pressure from a full disk
/// queue); each append is timed from when it starts. Prints the latency
/// distribution and the rate reached.
fn roll_stall(root: &Path, measuring: bool) {
    let rate: f64 = std::env::var("PIGEON_ROLL_STALL_MIBS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(64.0);
    let (segment_bytes, total) = if measuring {
        (32 * MIB, 512 * MIB)
    } else {
        (MIB, 4 * MIB)
    };
    let shape = Shape {
        records: 100,
        value_len: 1024,
    };
    let batch = shape.batch();
    let len = batch.bytes().len() as u64;
    let dir = tempfile::tempdir_in(root).expect("temp dir");
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes,
        ..LogConfig::default()
    };
    let mut log = open_log(&dir.path().join("log"), config);
    let count = (total / len) as usize;
    let mut took = Vec::with_capacity(count);
    let start = Instant::now();
    let every = Duration::from_secs_f64(len as f64 / (rate * MIB as f64));
    for i in 0..count {
        if let Some(wait) = (start + every * i as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let at = Instant::now();
        log.append(&batch).expect("append");
        log.commit().expect("commit");
        took.push(at.elapsed());
    }
    let elapsed = start.elapsed();
    let segments = log.reader().segment_count();
    drop(log);
    took.sort();
    let at = |q: f64| took[((count as f64 * q) as usize).min(count - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let slow = took
        .iter()
        .filter(|d| **d >= Duration::from_millis(10))
        .count();
    eprintln!(
        "\n### roll_stall: {count} appends of {}, fsync=never, segment_bytes {} MiB, {segments} segments, paced at {rate} MiB/s\n",
        shape.label(),
        segment_bytes / MIB
    );
    eprintln!(
        "| p50 | p99 | p99.9 | max | appends ≥ 10 ms | MiB/s |\n| --- | --- | --- | --- | --- | --- |"
    );
    eprintln!(
        "| {:.3} ms | {:.3} ms | {:.3} ms | {:.1} ms | {slow} | {:.0} |\n",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(took[count - 1]),
        mib_per_s(count as u64 * len, elapsed),
    );
}

// ---------------------------------------------------------------------------
// How many fdatasyncs the disk completes when several files sync at once.

/// For 1, 4, 16, 64 and 256 threads, each appending 4 KiB + `fdatasync`
/// for a few seconds, first each to a file of its own (as partition logs
/// under `fsync=always` do), then all to one file (as one log's commits
/// would if they overlapped): the syncs completed per second in all and
/// the latency of each. The first row is the baseline: when the rate
/// stops growing with the threads, the syncs complete one after another,
/// and every commit queues behind the others.
fn fsync_threads(root: &Path, measuring: bool) {
    let run_for = if measuring {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(50)
    };
    for shared in [false, true] {
        let files = if shared {
            "all threads on one file"
        } else {
            "each thread on a file of its own"
        };
        eprintln!("\n### fsync_threads: 4 KiB append + fdatasync, {files}, {run_for:?} per row\n");
        eprintln!(
            "| threads | syncs/s (all) | vs 1 thread | median | p99 |\n| --- | --- | --- | --- | --- |"
        );
        let mut baseline = None;
        for threads in [1usize, 4, 16, 64, 256] {
            let (rate, took) = sync_rounds(root, threads, shared, run_for);
            let base = *baseline.get_or_insert(rate);
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            eprintln!(
                "| {threads} | {rate:.0} | {:.2}× | {:.0} µs | {:.0} µs |",
                rate / base,
                us(took[took.len() / 2]),
                us(took[took.len() * 99 / 100]),
            );
        }
    }
    eprintln!();
}

/// `threads` threads appending 4 KiB + `fdatasync` for `run_for` (at least
/// one round each), to files of their own or to one `shared` file (each
/// at positions of its own); returns the syncs per second in all and
/// every round's latency, sorted.
fn sync_rounds(
    root: &Path,
    threads: usize,
    shared: bool,
    run_for: Duration,
) -> (f64, Vec<Duration>) {
    const BLOCK: u64 = 4096;
    let dir = tempfile::tempdir_in(root).expect("temp dir");
    let one = Arc::new(File::create(dir.path().join("sync-shared")).expect("probe file"));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let file = if shared {
                one.clone()
            } else {
                Arc::new(File::create(dir.path().join(format!("sync-{t}"))).expect("probe file"))
            };
            let next = next.clone();
            std::thread::spawn(move || {
                let block = vec![0xa5u8; BLOCK as usize];
                let mut took = Vec::new();
                let mut own = 0u64;
                loop {
                    let pos = if shared {
                        next.fetch_add(BLOCK, std::sync::atomic::Ordering::Relaxed)
                    } else {
                        own += BLOCK;
                        own - BLOCK
                    };
                    took.push(probe_round(&file, &block, pos));
                    if started.elapsed() >= run_for {
                        break took;
                    }
                }
            })
        })
        .collect();
    let mut took: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("sync thread"))
        .collect();
    let rate = took.len() as f64 / started.elapsed().as_secs_f64();
    took.sort();
    (rate, took)
}

// ---------------------------------------------------------------------------
// One log's group commit at W3's rate: syncs in series or overlapping.

/// A model of one partition log's group commit, without the broker: a
/// thread appends 1 KiB records at 10,000 a second; `syncers` threads
/// each take every record waiting, write them at the end of one file and
/// `fdatasync` it; a record is answered once its sync and every earlier
/// one completed (so the answers stay in order). One syncer is today's
/// commit (a log's syncs in series); 2 and 4 let a sync start while
/// another runs. Next to it, a probe appends 4 KiB + `fdatasync` to a file
/// of its own every 10 ms, as `pigeon bench` does for W3: its p99 is the
/// floor W3's target is set against (ack p99 ≤ floor p99 + 0.5 ms).
fn commit_overlap(root: &Path, measuring: bool) {
    let run_for = if measuring {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(50)
    };
    eprintln!(
        "\n### commit_overlap: 10,000 appends/s of 1 KiB to one file for {run_for:?}, answered in order\n"
    );
    eprintln!(
        "| syncers | syncs/s | records per sync | answer p50 | answer p99 | probe fsync p99 | answer p99 − probe p99 |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for syncers in [1usize, 2, 4] {
        let dir = tempfile::tempdir_in(root).expect("temp dir");
        let run = OverlapRun::run(dir.path(), syncers, run_for);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let p = |v: &[Duration], q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
        eprintln!(
            "| {syncers} | {:.0} | {:.1} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |",
            run.syncs as f64 / run_for.as_secs_f64(),
            run.answers.len() as f64 / run.syncs.max(1) as f64,
            us(p(&run.answers, 50)),
            us(p(&run.answers, 99)),
            us(p(&run.probe, 99)),
            us(p(&run.answers, 99)) - us(p(&run.probe, 99)),
        );
    }
    eprintln!();
}

/// What one [`commit_overlap`] run measured, each list sorted.
struct OverlapRun {
    /// From each record's arrival to its answer.
    answers: Vec<Duration>,
    /// The probe's append + fdatasync rounds.
    probe: Vec<Duration>,
    syncs: u64,
}

/// The state the arrivals and the syncers share.
#[derive(Default)]
struct Commits {
    /// Arrival instants of the records not yet taken by a syncer.
    waiting: Vec<Instant>,
    /// The next file position and the next group's number.
    end: u64,
    next_group: u64,
    /// Groups whose sync completed, with their records' arrivals, until
    /// every earlier group's has too.
    done: BTreeMap<u64, (Vec<Instant>, Instant)>,
    /// Groups below this are answered.
    answered_below: u64,
    answers: Vec<Duration>,
    syncs: u64,
    stop: bool,
}

impl OverlapRun {
    fn run(dir: &Path, syncers: usize, run_for: Duration) -> OverlapRun {
        const RECORD: usize = 1024;
        const EVERY: Duration = Duration::from_micros(100);
        let file = Arc::new(File::create(dir.join("log")).expect("log file"));
        let shared = Arc::new((
            std::sync::Mutex::new(Commits::default()),
            std::sync::Condvar::new(),
        ));
        let workers: Vec<_> = (0..syncers)
            .map(|_| {
                let (file, shared) = (file.clone(), shared.clone());
                std::thread::spawn(move || {
                    let (state, wake) = &*shared;
                    loop {
                        let (arrivals, pos, group) = {
                            let mut s = state.lock().expect("commits");
                            while s.waiting.is_empty() && !s.stop {
                                s = wake.wait(s).expect("commits");
                            }
                            if s.waiting.is_empty() {
                                return;
                            }
                            let arrivals = std::mem::take(&mut s.waiting);
                            let pos = s.end;
                            s.end += (arrivals.len() * RECORD) as u64;
                            s.next_group += 1;
                            (arrivals, pos, s.next_group - 1)
                        };
                        let bytes = vec![0xa5u8; arrivals.len() * RECORD];
                        file.write_all_at(&bytes, pos).expect("write");
                        file.sync_data().expect("fdatasync");
                        let synced = Instant::now();
                        let mut s = state.lock().expect("commits");
                        s.syncs += 1;
                        s.done.insert(group, (arrivals, synced));
                        // Answer in order: every group whose sync and every
                        // earlier one's completed, at the latest completion.
                        loop {
                            let below = s.answered_below;
                            let Some((arrivals, at)) = s.done.remove(&below) else {
                                break;
                            };
                            let now = at.max(synced);
                            s.answers.extend(arrivals.iter().map(|a| now - *a));
                            s.answered_below += 1;
                        }
                    }
                })
            })
            .collect();
        let probe_file = File::create(dir.join("probe")).expect("probe file");
        let stop_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = {
            let stop = stop_probe.clone();
            std::thread::spawn(move || {
                let block = vec![0x5au8; 4096];
                let (mut took, mut pos) = (Vec::new(), 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    took.push(probe_round(&probe_file, &block, pos));
                    pos += block.len() as u64;
                    std::thread::sleep(Duration::from_millis(10));
                }
                took
            })
        };
        let started = Instant::now();
        let mut next = started;
        while next - started < run_for {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            let (state, wake) = &*shared;
            state.lock().expect("commits").waiting.push(Instant::now());
            wake.notify_one();
            next += EVERY;
        }
        {
            let (state, wake) = &*shared;
            state.lock().expect("commits").stop = true;
            wake.notify_all();
        }
        for worker in workers {
            worker.join().expect("syncer");
        }
        stop_probe.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut probe = probe.join().expect("probe");
        probe.sort();
        let mut s = shared.0.lock().expect("commits");
        let mut answers = std::mem::take(&mut s.answers);
        answers.sort();
        OverlapRun {
            answers,
            probe,
            syncs: s.syncs,
        }
    }
}

// ---------------------------------------------------------------------------
// The machine's own stalls, with and without a stream of syncs.

/// A thread that does nothing but read the clock sees a gap between two
/// readings only when it did not run: preempted in the guest, or the whole
/// virtual CPU held back by the host. Each row counts those gaps over
/// `run_for`: with nothing else running, beside a thread appending 1 KiB +
/// `fdatasync` back to back, and beside one paced to about 1,000 syncs/s.
/// On a virtual machine whose host charges the disk's work to the guest,
/// a stream of syncs can cost the guest its CPUs for whole scheduling
/// periods: every latency of the run (and the fsync probe's) then carries
/// those gaps. The `steal` column is what `/proc/stat` counts as taken by
/// the host over the row (Linux; `-` elsewhere).
fn cpu_stalls(root: &Path, measuring: bool) {
    let run_for = if measuring {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(50)
    };
    eprintln!("\n### cpu_stalls: gaps seen by a thread reading the clock, {run_for:?} per row\n");
    eprintln!(
        "| beside it | syncs/s | gaps ≥ 1 ms | ≥ 5 ms | ≥ 10 ms | longest | steal (share of the CPUs) |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for (label, pace) in [
        ("nothing", None),
        ("1 KiB + fdatasync, back to back", Some(Duration::ZERO)),
        (
            "1 KiB + fdatasync, about 1,000/s",
            Some(Duration::from_millis(1)),
        ),
    ] {
        let dir = tempfile::tempdir_in(root).expect("temp dir");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let syncer = pace.map(|pace| {
            let file = File::create(dir.path().join("stall-syncs")).expect("sync file");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let block = [0x5au8; 1024];
                let mut syncs = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let round = Instant::now();
                    probe_round(&file, &block, syncs * 1024);
                    syncs += 1;
                    if let Some(rest) = pace.checked_sub(round.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                syncs
            })
        });
        let steal_before = steal_ticks();
        let started = Instant::now();
        let gaps = clock_gaps(run_for);
        let elapsed = started.elapsed();
        let steal = steal_ticks()
            .zip(steal_before)
            .map(|(after, before)| after.saturating_sub(before));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let syncs = syncer.map(|s| s.join().expect("sync thread"));
        let count = |at_least_ms: u64| {
            gaps.iter()
                .filter(|g| **g >= Duration::from_millis(at_least_ms))
                .count()
        };
        let longest = gaps.iter().max().copied().unwrap_or_default();
        let rate = syncs.map_or("-".to_string(), |n| {
            format!("{:.0}", n as f64 / elapsed.as_secs_f64())
        });
        let steal = steal.map_or("-".to_string(), |ticks| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            // USER_HZ is 100 on Linux.
            let share = ticks as f64 / 100.0 / (elapsed.as_secs_f64() * cpus as f64);
            format!("{:.1} %", share * 100.0)
        });
        eprintln!(
            "| {label} | {rate} | {} | {} | {} | {:.1} ms | {steal} |",
            count(1),
            count(5),
            count(10),
            longest.as_secs_f64() * 1e3,
        );
    }
    eprintln!();
}

/// Reads the clock for `run_for`; returns every gap of 1 ms or more
/// between two readings.
fn clock_gaps(run_for: Duration) -> Vec<Duration> {
    let started = Instant::now();
    let mut last = started;
    let mut gaps = Vec::new();
    loop {
        let now = Instant::now();
        let gap = now - last;
        if gap >= Duration::from_millis(1) {
            gaps.push(gap);
        }
        last = now;
        if now - started >= run_for {
            return gaps;
        }
    }
}

/// The `steal` ticks of all CPUs from `/proc/stat` (Linux), if readable.
fn steal_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq steal ...
    cpu.split_whitespace().nth(8)?.parse().ok()
}

// ---------------------------------------------------------------------------
// Appends that grow the file against appends into zeros written ahead.

/// 1 KiB appended + `fdatasync`, rounds of `per_round` appends alternating
/// between a file that grows with each append (its `fdatasync` writes the
/// new size) and one whose bytes were written as zeros and synced first
/// (the data only), as the writer's zeros ahead of a busy partition's
/// appends make it. Prints each kind's syncs per second and latency.
fn zeros_ahead(root: &Path, measuring: bool) {
    let (rounds, per_round) = if measuring { (6, 2000) } else { (2, 20) };
    let dir = tempfile::tempdir_in(root).expect("temp dir");
    let block = [0x3cu8; 1024];
    let mut took: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut busy = [Duration::ZERO; 2];
    for round in 0..rounds {
        for (kind, zeroed) in [(0, false), (1, true)] {
            let path = dir.path().join(format!("zeros-{round}-{kind}"));
            let file = File::create(&path).expect("file");
            let len = per_round as u64 * block.len() as u64;
            if zeroed {
                let zeros = vec![0u8; len as usize];
                file.write_all_at(&zeros, 0).expect("zeros");
                file.sync_data().expect("sync the zeros");
            }
            let started = Instant::now();
            for i in 0..per_round as u64 {
                took[kind].push(probe_round(&file, &block, i * block.len() as u64));
            }
            busy[kind] += started.elapsed();
            drop(file);
            std::fs::remove_file(&path).expect("remove");
        }
    }
    eprintln!(
        "\n### zeros_ahead: 1 KiB append + fdatasync, {rounds} alternating rounds of {per_round}\n"
    );
    eprintln!("| appends | syncs/s | median | p99 |\n| --- | --- | --- | --- |");
    for (kind, label) in [(0, "grow the file"), (1, "go into zeros written ahead")] {
        let mut all = std::mem::take(&mut took[kind]);
        all.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        eprintln!(
            "| {label} | {:.0} | {:.0} µs | {:.0} µs |",
            all.len() as f64 / busy[kind].as_secs_f64(),
            us(all[all.len() / 2]),
            us(all[all.len() * 99 / 100]),
        );
    }
    eprintln!();
}
