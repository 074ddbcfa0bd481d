//! Tests of the read path ([`super::reader`]): a property test of reads
//! at random offsets and sizes over random batch boundaries against a
//! model, and the page-cache behaviour of catch-up reads of cold sealed
//! segments.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch, records_of, verify_stored};
use proptest::prelude::*;

use super::*;
use crate::io::StdFs;

const T0: i64 = 1_700_000_000_000;

fn batch_of(values: &[Vec<u8>]) -> RecordBatch {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(None, value, &[]);
    }
    RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1 << 20).expect("valid")
}

/// A stored batch as the model knows it.
#[derive(Debug, Clone)]
struct ModelBatch {
    base: u64,
    values: Vec<Vec<u8>>,
    len: usize,
}

/// Checks one read of `offset` with `max_bytes` against the model: whole,
/// checked batches, the first holding `offset`, the model's batches in
/// order from there, within `max_bytes` unless a single batch.
fn check_read(reader: &LogReader, model: &[ModelBatch], offset: u64, max_bytes: usize) {
    let bytes = reader
        .read(offset, max_bytes)
        .unwrap_or_else(|e| panic!("read at {offset}: {e}"))
        .bytes;
    let first = model
        .iter()
        .position(|b| b.base + b.values.len() as u64 > offset)
        .expect("the offset is stored");
    let mut rest = &bytes[..];
    let mut served = 0;
    while !rest.is_empty() {
        let want = &model[first + served];
        assert!(rest.len() >= want.len, "a partial batch was served");
        let header = verify_stored(&rest[..want.len], 1 << 20).expect("served batches verify");
        assert_eq!(
            header.base_offset, want.base,
            "batches in order from the one holding {offset}"
        );
        let records = records_of(Bytes::copy_from_slice(&rest[..want.len])).expect("records");
        let values: Vec<Vec<u8>> = records.map(|r| r.expect("record").value.to_vec()).collect();
        assert_eq!(values, want.values, "the bytes appended at {}", want.base);
        rest = &rest[want.len..];
        served += 1;
    }
    assert!(served >= 1, "a read at {offset} served nothing");
    assert!(
        served == 1 || bytes.len() <= max_bytes,
        "{} bytes served for max_bytes {max_bytes}",
        bytes.len()
    );
}

fn batches() -> impl Strategy<Value = Vec<Vec<usize>>> {
    // Mostly small batches, some larger than an index interval.
    let value = prop_oneof![6 => 0usize..120, 1 => 300usize..3000];
    proptest::collection::vec(proptest::collection::vec(value, 1..5), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reads_over_random_batch_boundaries_match_a_model(
        sizes in batches(),
        interval in prop_oneof![Just(64u32), Just(256), Just(4096)],
        segment_bytes in prop_oneof![Just(2048u64), Just(16384), Just(1 << 20)],
        reads in proptest::collection::vec((0.0..1.0f64, 1usize..20_000), 1..30),
        sealed_by_restart in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        let config = LogConfig {
            segment_bytes,
            index_interval_bytes: interval,
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        };
        let open = || Log::open(Arc::new(StdFs), &dir, config.clone(), Arc::new(ManualClock::new(T0)))
            .expect("open");
        let mut log = open();
        let mut model = Vec::new();
        let mut counter = 0u64;
        for batch_sizes in &sizes {
            let values: Vec<Vec<u8>> = batch_sizes
                .iter()
                .map(|&n| {
                    counter += 1;
                    let mut v = counter.to_le_bytes().to_vec();
                    v.resize(8 + n, counter as u8);
                    v
                })
                .collect();
            let batch = batch_of(&values);
            let info = log.append(&batch).expect("append");
            log.commit().expect("commit");
            model.push(ModelBatch { base: info.base_offset, values, len: batch.bytes().len() });
        }
        if sealed_by_restart {
            // Reads of segments opened by recovery, indexes from the files.
            log.close().expect("close");
            log = open();
        }
        let reader = log.reader();
        let end = reader.end_offset();
        for (at, max_bytes) in reads {
            let offset = ((end as f64 * at) as u64).min(end - 1);
            check_read(&reader, &model, offset, max_bytes);
        }
        // A sequential pass serves every record once, in order.
        let mut offset = 0;
        let mut seen = 0;
        while offset < end {
            let bytes = reader.read(offset, 4096).expect("read").bytes;
            for record in records_of(bytes).expect("records") {
                let record = record.expect("record");
                if record.offset >= offset {
                    prop_assert_eq!(record.offset, seen);
                    seen += 1;
                }
            }
            offset = seen;
        }
        prop_assert_eq!(seen, end);
    }
}

/// Pages of the file at `path` in the page cache, and pages in all
/// (`mincore` over a read-only map).
pub(super) fn resident_pages(path: &Path) -> (usize, usize) {
    let file = std::fs::File::open(path).expect("open");
    // SAFETY: a read-only map of a file nothing truncates while it lives;
    // only its residency is looked at, never its bytes.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
    let page = 4096;
    let pages = map.len().div_ceil(page);
    let mut resident = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `map.len()` bytes and `resident`
    // has one byte per page of it.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            resident.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    (resident.iter().filter(|b| **b & 1 == 1).count(), pages)
}

/// Syncs the file at `path` and drops its pages from the page cache.
pub(super) fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).expect("open");
    file.sync_all().expect("sync");
    // SAFETY: a descriptor `file` keeps open; no pointers.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

#[test]
fn a_catch_up_read_of_a_cold_sealed_segment_leaves_it_out_of_the_page_cache() {
    // A directory on a real disk: tmpfs pages are never evicted.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let config = LogConfig {
        segment_bytes: 4 << 20,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    };
    let open = || {
        Log::open(
            Arc::new(StdFs),
            &dir,
            config.clone(),
            Arc::new(ManualClock::new(T0)),
        )
        .expect("open")
    };
    let mut log = open();
    let value = vec![7u8; 1000];
    let values: Vec<Vec<u8>> = (0..100).map(|_| value.clone()).collect();
    let batch = batch_of(&values);
    while log.reader().segment_count() < 3 {
        log.append(&batch).expect("append");
        log.commit().expect("commit");
    }
    log.close().expect("close");
    let cold = dir.join(format!("{:020}.log", 0));
    evict(&cold);
    let (before, pages) = resident_pages(&cold);
    if before * 2 > pages {
        eprintln!(
            "the file system keeps evicted pages ({before} of {pages}): nothing to test here"
        );
        return;
    }
    let log = open();
    let reader = log.reader();
    let sealed_end = log.shared.snapshot()[1].base_offset;
    let mut offset = 0;
    while offset < sealed_end {
        let bytes = reader.read(offset, 1 << 20).expect("read").bytes;
        let records = records_of(bytes).expect("records");
        offset = records
            .last()
            .map(|r| r.expect("record").offset + 1)
            .unwrap_or(sealed_end);
    }
    let (after, pages) = resident_pages(&cold);
    assert!(
        after * 4 < pages,
        "a catch-up read of a cold sealed segment left {after} of {pages} pages in the page cache"
    );
    // The hot tail is left alone: a read of the active segment's cached
    // pages keeps them.
    let active = dir.join(format!("{:020}.log", log.end_position().0));
    let (hot_before, _) = resident_pages(&active);
    let tail_base = log.end_position().0;
    reader.read(tail_base, 1 << 20).expect("read the tail");
    let (hot_after, _) = resident_pages(&active);
    assert!(
        hot_after >= hot_before,
        "reading the tail dropped its pages"
    );
}
