//! Known-answer tests: the exact bytes of one request frame and some
//! response frames, written out by hand from `docs/protocol.md`. If one of
//! these fails, the wire format changed: that needs a new API version, not
//! a new expected value.

use crate::*;

use super::support::*;

/// Parses space-separated hex bytes.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

fn create_topic_frame() -> RequestFrame {
    RequestFrame {
        request_id: 7,
        api_version: 0,
        request: CreateTopicRequest {
            topic: "orders".into(),
            partitions: 3,
            retention_ms: Some(86_400_000),
            retention_bytes: None,
        }
        .into(),
    }
}

const CREATE_TOPIC_BYTES: &str = "
    1e 00 00 00
    0a 00
    00 00
    07 00 00 00
    06 00 6f 72 64 65 72 73
    03 00 00 00
    01 00 5c 26 05 00 00 00 00
    00";

#[test]
fn create_topic_request_bytes_are_pinned() {
    // length 30 | api_key 10 | version 0 | request_id 7 |
    // topic "orders" | partitions 3 | retention_ms Some(86_400_000) |
    // retention_bytes None
    let expected = hex(CREATE_TOPIC_BYTES);
    assert_eq!(&request_bytes(&create_topic_frame())[..], &expected[..]);
    let incoming = decode_one_request(&expected);
    assert_eq!(incoming.request, Ok(create_topic_frame().request));
}

fn produce_response_frame() -> ResponseFrame {
    ResponseFrame::ok(
        0x0102_0304,
        0,
        ProduceResponse {
            topic: "t".into(),
            partitions: vec![ProducePartitionResponse {
                partition: 1,
                error_code: ErrorCode::None,
                error_message: String::new(),
                base_offset: 100,
                last_offset: 104,
                append_time_ms: 1_700_000_000_000,
                log_start_offset: 0,
            }],
            throttle_ms: 0,
        },
    )
}

const PRODUCE_RESPONSE_BYTES: &str = "
    39 00 00 00
    14 00
    00 00
    04 03 02 01
    00 00
    01 00 74
    01 00 00 00
    01 00 00 00
    00 00
    00 00
    64 00 00 00 00 00 00 00
    68 00 00 00 00 00 00 00
    00 68 e5 cf 8b 01 00 00
    00 00 00 00 00 00 00 00";

#[test]
fn produce_response_bytes_are_pinned() {
    // length 55 | api_key 20 | version 0 | request_id 0x01020304 |
    // error_code 0 | topic "t" | 1 partition: partition 1, error 0,
    // base 100, last 104, append time 1_700_000_000_000, log start 0
    let expected = hex(PRODUCE_RESPONSE_BYTES);
    assert_eq!(
        &response_bytes(&produce_response_frame())[..],
        &expected[..]
    );
    let incoming = decode_one_response(&expected);
    assert_eq!(incoming.body, Ok(produce_response_frame().body));
}

#[test]
fn produce_response_v1_appends_throttle_ms() {
    // The v0 frame above, at version 1, with throttle_ms 250 (0xfa) after
    // the partitions: length 61 | … | throttle_ms 250
    let mut frame = produce_response_frame();
    frame.api_version = 1;
    if let ResponseBody::Ok(Response::Produce(body)) = &mut frame.body {
        body.throttle_ms = 250;
    }
    let mut expected = hex(PRODUCE_RESPONSE_BYTES);
    expected[0] = 0x3d;
    expected[6] = 0x01;
    expected.extend_from_slice(&hex("fa 00 00 00"));
    assert_eq!(&response_bytes(&frame)[..], &expected[..]);
    assert_eq!(decode_one_response(&expected).body, Ok(frame.body));
    // A v0 frame has no room for it: its decoder reads 0.
    let v0 = decode_one_response(&hex(PRODUCE_RESPONSE_BYTES));
    match v0.body {
        Ok(ResponseBody::Ok(Response::Produce(body))) => assert_eq!(body.throttle_ms, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn error_response_bytes_are_pinned() {
    // length 25 | api_key 13 | version 0 | request_id 9 |
    // error_code 10 (UnknownTopic) | message "no such topic"
    let expected = hex("
        19 00 00 00
        0d 00
        00 00
        09 00 00 00
        0a 00
        0d 00 6e 6f 20 73 75 63 68 20 74 6f 70 69 63");
    let header = RequestHeader {
        api_key: ApiKey::DescribeTopic.as_u16(),
        api_version: 0,
        request_id: 9,
    };
    let frame = ResponseFrame::error(&header, ErrorCode::UnknownTopic, "no such topic");
    assert_eq!(&response_bytes(&frame)[..], &expected[..]);
    assert_eq!(decode_one_response(&expected).body, Ok(frame.body));
}

fn settle_frame() -> RequestFrame {
    RequestFrame {
        request_id: 5,
        api_version: 0,
        request: SettleRequest {
            topic: "orders".into(),
            group: "billing".into(),
            consumer_id: 7,
            items: vec![
                SettleItem {
                    partition: 0,
                    offset: 42,
                    attempt: 0,
                    action: SettleAction::Ack,
                    delay_ms: 0,
                    reason: String::new(),
                },
                SettleItem {
                    partition: 1,
                    offset: 7,
                    attempt: 0,
                    action: SettleAction::Reject,
                    delay_ms: 0,
                    reason: "bad".into(),
                },
                SettleItem {
                    partition: 1,
                    offset: 8,
                    attempt: 0,
                    action: SettleAction::Nack,
                    delay_ms: 1500,
                    reason: String::new(),
                },
            ],
        }
        .into(),
    }
}

pub(super) const SETTLE_BYTES: &str = "
    61 00 00 00
    30 00
    00 00
    05 00 00 00
    06 00 6f 72 64 65 72 73
    07 00 62 69 6c 6c 69 6e 67
    07 00 00 00 00 00 00 00
    03 00 00 00
    00 00 00 00  2a 00 00 00 00 00 00 00  00  00 00 00 00  00 00
    01 00 00 00  07 00 00 00 00 00 00 00  02  00 00 00 00  03 00 62 61 64
    01 00 00 00  08 00 00 00 00 00 00 00  01  dc 05 00 00  00 00";

#[test]
fn settle_request_bytes_are_pinned() {
    // length 97 | api_key 48 | version 0 | request_id 5 | topic "orders" |
    // group "billing" | consumer_id 7 | 3 items:
    //   partition 0, offset 42, Ack, delay 0, reason ""
    //   partition 1, offset 7, Reject, delay 0, reason "bad"
    //   partition 1, offset 8, Nack, delay 1500, reason ""
    let expected = hex(SETTLE_BYTES);
    assert_eq!(expected.len(), 101);
    assert_eq!(&request_bytes(&settle_frame())[..], &expected[..]);
    let incoming = decode_one_request(&expected);
    assert_eq!(incoming.request, Ok(settle_frame().request));
}

#[test]
fn settle_v1_request_bytes_carry_the_attempt_after_the_offset() {
    let mut frame = settle_frame();
    frame.api_version = 1;
    if let Request::Settle(settle) = &mut frame.request {
        settle.items.truncate(1);
        settle.items[0].attempt = 3;
    }
    // length 60 | api_key 48 | version 1 | request_id 5 | topic "orders" |
    // group "billing" | consumer_id 7 | 1 item: partition 0, offset 42,
    // attempt 3, Ack, delay 0, reason "".
    let expected = hex("3c 00 00 00  30 00  01 00  05 00 00 00
         06 00 6f 72 64 65 72 73  07 00 62 69 6c 6c 69 6e 67
         07 00 00 00 00 00 00 00  01 00 00 00
         00 00 00 00  2a 00 00 00 00 00 00 00  03 00 00 00  00  00 00 00 00  00 00");
    assert_eq!(&request_bytes(&frame)[..], &expected[..]);
    assert_eq!(decode_one_request(&expected).request, Ok(frame.request));
}

#[test]
fn alter_topic_request_bytes_are_pinned() {
    let frame = RequestFrame {
        request_id: 9,
        api_version: 0,
        request: AlterTopicRequest {
            topic: "orders".into(),
            retention_ms: RetentionChange::Set(3_600_000),
            retention_bytes: RetentionChange::Default,
        }
        .into(),
    };
    // length 34 | api_key 14 | version 0 | request_id 9 | topic "orders" |
    // retention_ms: change 2 (set), value 3,600,000 |
    // retention_bytes: change 1 (broker default), value 0
    let expected = hex("22 00 00 00  0e 00  00 00  09 00 00 00
         06 00 6f 72 64 65 72 73
         02  80 ee 36 00 00 00 00 00
         01  00 00 00 00 00 00 00 00");
    assert_eq!(&request_bytes(&frame)[..], &expected[..]);
    assert_eq!(decode_one_request(&expected).request, Ok(frame.request));
    // "keep" or "default" with a value is malformed, not silently read.
    let mut bad = expected.clone();
    bad[37] = 1;
    assert!(decode_one_request(&bad).request.is_err());
}

#[test]
fn settle_v2_request_bytes_carry_release_as_action_4() {
    let mut frame = settle_frame();
    frame.api_version = 2;
    if let Request::Settle(settle) = &mut frame.request {
        settle.items = vec![SettleItem::release(0, 42, 3)];
    }
    // length 60 | api_key 48 | version 2 | request_id 5 | topic "orders" |
    // group "billing" | consumer_id 7 | 1 item: partition 0, offset 42,
    // attempt 3, Release (4), delay 0, reason "".
    let expected = hex("3c 00 00 00  30 00  02 00  05 00 00 00
         06 00 6f 72 64 65 72 73  07 00 62 69 6c 6c 69 6e 67
         07 00 00 00 00 00 00 00  01 00 00 00
         00 00 00 00  2a 00 00 00 00 00 00 00  03 00 00 00  04  00 00 00 00  00 00");
    assert_eq!(&request_bytes(&frame)[..], &expected[..]);
    assert_eq!(
        decode_one_request(&expected).request,
        Ok(frame.request.clone())
    );
    // Version 1 has no Release: encoding it is refused, not sent to a
    // broker that would refuse the whole request.
    frame.api_version = 1;
    let mut out = bytes::BytesMut::new();
    let err = encode_request(&frame, Limits::default(), &mut out).expect_err("release in v1");
    assert!(
        matches!(
            err.kind,
            CodecErrorKind::InvalidValue {
                field: "action",
                value: 4
            }
        ),
        "{err:?}"
    );
}

/// Parses space-separated hex bytes (for the other test modules).
pub(super) fn hex_bytes(s: &str) -> Vec<u8> {
    hex(s)
}

fn redrive_v1_frame() -> ResponseFrame {
    ResponseFrame::ok(
        9,
        1,
        RedriveResponse {
            moved: 3,
            skipped: 1,
            outcome: RedriveOutcome::MaxReached,
            partitions: vec![RedrivePartition {
                partition: 2,
                dlq_from: 4,
                dlq_to: 8,
                moved: 3,
                skipped: 1,
                new_from: 10,
                new_to: 13,
            }],
            ..RedriveResponse::default()
        },
    )
}

const REDRIVE_V1_BYTES: &str = "
    53 00 00 00
    32 00
    01 00
    09 00 00 00
    00 00
    03 00 00 00 00 00 00 00
    01 00 00 00 00 00 00 00
    01
    01 00 00 00
    02 00 00 00
    04 00 00 00 00 00 00 00
    08 00 00 00 00 00 00 00
    03 00 00 00 00 00 00 00
    01 00 00 00 00 00 00 00
    0a 00 00 00 00 00 00 00
    0d 00 00 00 00 00 00 00";

#[test]
fn redrive_v1_response_bytes_are_pinned() {
    // length 83 | api_key 50 | version 1 | request_id 9 | error_code 0 |
    // moved 3 | skipped 1 | outcome 1 (MaxReached) | 1 partition:
    // partition 2, dlq 4..8, moved 3, skipped 1, new 10..13
    let expected = hex(REDRIVE_V1_BYTES);
    assert_eq!(&response_bytes(&redrive_v1_frame())[..], &expected[..]);
    assert_eq!(
        decode_one_response(&expected).body,
        Ok(redrive_v1_frame().body)
    );
    let mut bad_outcome = expected.clone();
    bad_outcome[30] = 3;
    assert!(
        decode_one_response(&bad_outcome).body.is_err(),
        "an unknown outcome fails the response"
    );
}

#[test]
fn a_v0_redrive_list_is_summarised_per_partition() {
    let message = |dlq_offset, partition, new_offset| RedrivenMessage {
        dlq_offset,
        partition,
        new_offset,
    };
    let v0 = RedriveResponse {
        redriven: vec![message(5, 1, 20), message(7, 1, 21), message(0, 0, 0)],
        ..RedriveResponse::default()
    };
    let summary = v0.clone().summarised(false);
    assert_eq!(summary.moved, 3);
    assert_eq!(
        summary.partitions,
        [
            RedrivePartition {
                partition: 0,
                dlq_from: 0,
                dlq_to: 1,
                moved: 1,
                skipped: 0,
                new_from: 0,
                new_to: 1,
            },
            RedrivePartition {
                partition: 1,
                dlq_from: 5,
                dlq_to: 8,
                moved: 2,
                skipped: 0,
                new_from: 20,
                new_to: 22,
            },
        ]
    );
    let dry = v0.summarised(true);
    assert!(
        dry.partitions
            .iter()
            .all(|p| (p.new_from, p.new_to) == (0, 0))
    );
    assert_eq!(
        RedriveResponse::default().summarised(false),
        RedriveResponse::default()
    );
}
