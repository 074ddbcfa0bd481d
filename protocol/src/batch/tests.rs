//! Known-answer, round-trip and damage tests of the record batch format.

use super::*;
use proptest::prelude::*;

const LIMIT: usize = 1 << 20;
const T0: i64 = 1_700_000_000_000;

fn one_record_batch() -> Bytes {
    let mut builder = BatchBuilder::new();
    builder.push(Some(b"k"), b"v", &[("h", b"x")]);
    builder.build(ProducerStamp::NONE, T0)
}

#[test]
fn crc_is_crc32_ieee() {
    // The standard check value of CRC-32/ISO-HDLC (the IEEE polynomial).
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}

#[test]
fn known_answer_one_record_batch() {
    let bytes = one_record_batch();
    let crc = crc32fast::hash(&bytes[16..]);
    #[rustfmt::skip]
    let mut expected: Vec<u8> = vec![
        0, 0, 0, 0, 0, 0, 0, 0,             // base_offset 0
        54, 0, 0, 0,                        // batch_length = 66 - 12
    ];
    expected.extend_from_slice(&crc.to_le_bytes());
    expected.push(1); // magic
    expected.extend_from_slice(&[0, 0]); // attributes
    expected.extend_from_slice(&[1, 0, 0, 0]); // record_count
    expected.extend_from_slice(&T0.to_le_bytes()); // first_timestamp
    expected.extend_from_slice(&T0.to_le_bytes()); // max_timestamp
    expected.extend_from_slice(&[0xff; 8]); // producer_id -1
    expected.extend_from_slice(&[0xff; 2]); // producer_epoch -1
    expected.extend_from_slice(&[0xff; 4]); // base_sequence -1
    #[rustfmt::skip]
    expected.extend_from_slice(&[
        12,         // record length
        0,          // attributes
        0,          // timestamp delta
        0,          // offset delta
        2, b'k',    // key length 1 (zigzag), key
        1, b'v',    // value length, value
        1,          // header count
        1, b'h', 1, b'x',
    ]);
    assert_eq!(bytes.as_ref(), expected.as_slice());
    // Pin the CRC itself, so a change of polynomial or coverage shows up.
    assert_eq!(crc, 0xDA6E_8A0B, "crc of the known batch is {crc:#010x}");
}

#[test]
fn known_answer_header_decodes() {
    let bytes = one_record_batch();
    let batch = RecordBatch::validate(bytes, LIMIT).expect("valid");
    let h = batch.header();
    assert_eq!(
        (h.base_offset, h.batch_length, h.magic, h.record_count),
        (0, 54, 1, 1)
    );
    assert_eq!((h.first_timestamp, h.max_timestamp), (T0, T0));
    assert_eq!(h.producer, ProducerStamp::NONE);
    let records: Vec<Record> = batch.records().collect::<Result<_, _>>().expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(records[0].value.as_ref(), b"v");
    assert_eq!(records[0].headers[0].name, "h");
    assert_eq!(records[0].timestamp, T0);
}

#[test]
fn stamp_rewrites_offset_time_and_crc() {
    let batch = RecordBatch::validate(one_record_batch(), LIMIT).expect("valid");
    let mut buf = batch.bytes().to_vec();
    stamp(&mut buf, 42, T0 + 5, T0 + 5, batch.records_crc());
    let header = verify_stored(&buf, LIMIT).expect("stamped batch verifies");
    assert_eq!(header.base_offset, 42);
    assert_eq!(header.first_timestamp, T0 + 5);
    let records: Vec<_> = records_of(Bytes::from(buf)).expect("records").collect();
    assert_eq!(records[0].as_ref().expect("record").offset, 42);
}

#[test]
fn with_producer_restamps_the_producer_fields_and_crc() {
    let stamp = ProducerStamp {
        producer_id: 9,
        producer_epoch: 3,
        base_sequence: 41,
    };
    let bytes = with_producer(&one_record_batch(), stamp);
    let batch = RecordBatch::validate(bytes, LIMIT).expect("valid after restamp");
    assert_eq!(batch.header().producer, stamp);
}

#[test]
fn records_of_batches_walks_batches_back_to_back_and_reports_a_torn_one() {
    let batch = RecordBatch::validate(one_record_batch(), LIMIT).expect("valid");
    let mut two = batch.bytes().to_vec();
    stamp(&mut two, 0, T0, T0, batch.records_crc());
    let mut second = batch.bytes().to_vec();
    stamp(&mut second, 1, T0, T0, batch.records_crc());
    two.extend_from_slice(&second);
    let offsets: Vec<u64> = records_of_batches(Bytes::from(two.clone()))
        .map(|r| r.expect("record").offset)
        .collect();
    assert_eq!(offsets, vec![0, 1]);
    let torn: Vec<_> = records_of_batches(Bytes::from(two[..two.len() - 5].to_vec())).collect();
    assert_eq!(torn.len(), 2);
    assert!(
        matches!(torn[1], Err(BatchError::Truncated { .. })),
        "{:?}",
        torn[1]
    );
}

#[test]
fn every_single_bit_flip_after_the_length_is_detected() {
    let bytes = one_record_batch();
    for bit in (CRC_AT * 8)..(bytes.len() * 8) {
        let mut damaged = bytes.to_vec();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(
            RecordBatch::validate(Bytes::from(damaged.clone()), LIMIT).is_err(),
            "flip of bit {bit} went unnoticed by validate"
        );
        assert!(
            verify_stored(&damaged, LIMIT).is_err(),
            "flip of bit {bit} went unnoticed by verify_stored"
        );
    }
}

#[test]
fn rejects_length_that_disagrees_with_bytes() {
    let mut bytes = one_record_batch().to_vec();
    bytes.push(0);
    let err = RecordBatch::validate(Bytes::from(bytes), LIMIT).expect_err("trailing byte");
    assert!(
        matches!(err, BatchError::BadLength { declared: 54, .. }),
        "{err}"
    );
}

#[test]
fn rejects_batch_over_the_limit() {
    let err = RecordBatch::validate(one_record_batch(), 65).expect_err("over limit");
    assert!(err.to_string().contains("limit is 65 bytes"), "{err}");
}

#[test]
fn rejects_empty_batch() {
    let bytes = BatchBuilder::new().build(ProducerStamp::NONE, T0);
    let err = RecordBatch::validate(bytes, LIMIT).expect_err("no records");
    assert!(
        matches!(
            err,
            BatchError::CountMismatch {
                declared: 0,
                found: 0
            }
        ),
        "{err}"
    );
}

#[test]
fn rejects_wrong_record_count_with_valid_crc() {
    let mut bytes = one_record_batch().to_vec();
    bytes[RECORD_COUNT_AT] = 2;
    let crc = crc32fast::hash(&bytes[16..]);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    let err = RecordBatch::validate(Bytes::from(bytes), LIMIT).expect_err("count");
    assert!(
        matches!(
            err,
            BatchError::CountMismatch {
                declared: 2,
                found: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn rejects_compression_and_unknown_magic() {
    for (at, value) in [(ATTRIBUTES_AT, 1u8), (MAGIC_AT, 2u8)] {
        let mut bytes = one_record_batch().to_vec();
        bytes[at] = value;
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        let err = RecordBatch::validate(Bytes::from(bytes), LIMIT).expect_err("unsupported");
        assert!(
            matches!(
                err,
                BatchError::UnsupportedAttributes { .. } | BatchError::UnsupportedMagic { .. }
            ),
            "{err}"
        );
    }
}

#[test]
fn truncated_header_reports_position() {
    let bytes = one_record_batch();
    let err = verify_stored(&bytes[..20], LIMIT).expect_err("short");
    assert_eq!(
        err,
        BatchError::Truncated {
            at: 20,
            needed: HEADER_LEN
        }
    );
}

type TestRecord = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

fn arb_record() -> impl Strategy<Value = TestRecord> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(
            (
                "[a-z-]{0,12}",
                proptest::collection::vec(any::<u8>(), 0..20),
            ),
            0..4,
        ),
    )
}

fn build(records: &[TestRecord], producer: ProducerStamp) -> Bytes {
    let mut builder = BatchBuilder::new();
    for (key, value, headers) in records {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let before = builder.encoded_len();
        builder.push(key.as_deref(), value, &headers);
        let added = builder.encoded_len() - before;
        assert!(added <= BatchBuilder::record_size(key.as_deref(), value, &headers));
    }
    builder.build(producer, T0)
}

proptest! {
    #[test]
    fn batches_round_trip(
        records in proptest::collection::vec(arb_record(), 1..20),
        producer_id in -1i64..1000, epoch in -1i16..100, sequence in -1i32..100_000,
        base in 0u64..(1 << 40),
    ) {
        let producer = ProducerStamp { producer_id, producer_epoch: epoch, base_sequence: sequence };
        let built = build(&records, producer);
        let batch = RecordBatch::validate(built.clone(), LIMIT).expect("valid");
        prop_assert_eq!(batch.header().producer, producer);
        prop_assert_eq!(batch.header().record_count as usize, records.len());
        let mut stamped = built.to_vec();
        stamp(&mut stamped, base, T0 + 1, T0 + 1, batch.records_crc());
        prop_assert!(verify_stored(&stamped, LIMIT).is_ok());
        let decoded: Vec<Record> = records_of(Bytes::from(stamped)).expect("header").collect::<Result<_, _>>().expect("decode");
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (record, (key, value, headers))) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(record.offset, base + i as u64);
            prop_assert_eq!(record.timestamp, T0 + 1);
            prop_assert_eq!(record.key.as_deref(), key.as_deref());
            prop_assert_eq!(record.value.as_ref(), value.as_slice());
            let got: Vec<(String, Vec<u8>)> = record.headers.iter().map(|h| (h.name.clone(), h.value.to_vec())).collect();
            prop_assert_eq!(&got, headers);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = RecordBatch::validate(Bytes::from(bytes.clone()), LIMIT);
        let _ = verify_stored(&bytes, LIMIT);
        if let Ok(records) = records_of(Bytes::from(bytes)) {
            for _ in records {}
        }
    }

    #[test]
    fn mutated_batches_never_panic(
        records in proptest::collection::vec(arb_record(), 1..5),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = build(&records, ProducerStamp::NONE).to_vec();
        for (index, value) in edits {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        // Recompute the CRC so that the record walk itself is exercised.
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        if let Ok(batch) = RecordBatch::validate(Bytes::from(bytes), LIMIT) {
            for record in batch.records() {
                prop_assert!(record.is_ok(), "a validated batch must decode");
            }
        }
    }
}
