//! Arbitrary bytes as a record batch: validation, the stored-batch check and
//! the record walk never panic, and a validated batch always decodes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pigeon_protocol::batch::{RecordBatch, records_of, verify_stored};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = RecordBatch::validate(Bytes::copy_from_slice(data), LIMIT) {
        for record in batch.records() {
            assert!(record.is_ok(), "a validated batch must decode");
        }
    }
    let _ = verify_stored(data, LIMIT);
    if let Ok(records) = records_of(Bytes::copy_from_slice(data)) {
        for _ in records {}
    }
});
