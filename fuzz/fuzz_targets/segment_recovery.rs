//! Arbitrary bytes as the only segment of a partition: opening (recovery)
//! and reading everything must never panic, and every batch served must
//! pass its CRC check with dense offsets.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pigeon_broker::io::StdFs;
use pigeon_broker::log::{Log, LogConfig, ManualClock};
use pigeon_protocol::batch::{read_prefix, verify_stored};

fuzz_target!(|data: &[u8]| {
    // In memory when possible: recovery fsyncs, which would dominate.
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir");
    let dir = tmp.path().join("p");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(format!("{:020}.log", 0)), data).expect("write segment");
    let config = LogConfig::default();
    let Ok(log) = Log::open(
        Arc::new(StdFs),
        &dir,
        config,
        Arc::new(ManualClock::new(1_700_000_000_000)),
    ) else {
        return;
    };
    let reader = log.reader();
    let mut offset = reader.start_offset();
    while offset < log.next_offset() {
        let result = reader.read(offset, 1 << 16).expect("a recovered log reads");
        let mut bytes = &result.bytes[..];
        assert!(!bytes.is_empty(), "no data below the end offset");
        let mut first = true;
        while !bytes.is_empty() {
            let (base, length) = read_prefix(bytes).expect("prefix");
            let total = 12 + length as usize;
            let header = verify_stored(&bytes[..total], 8 << 20).expect("served batches verify");
            // The first batch may start before the offset asked for.
            assert!(
                if first {
                    base <= offset
                } else {
                    base == offset
                },
                "dense offsets"
            );
            first = false;
            offset = header.next_offset();
            bytes = &bytes[total..];
        }
    }
});
