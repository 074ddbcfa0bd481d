//! Unit tests of the consumer-group APIs: enum tags, settings domains,
//! group names and the lower bounds of counts and names are refused, both
//! ways, with the right kind and byte offset.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder;

use super::known_answer::{SETTLE_BYTES, hex_bytes};
use super::support::*;
use crate::*;

fn request_error(frame: &[u8]) -> CodecError {
    decode_one_request(frame)
        .request
        .expect_err("the body must be rejected")
}

fn response_error(frame: &[u8]) -> CodecError {
    decode_one_response(frame)
        .body
        .expect_err("the body must be rejected")
}

fn encode_error(request: impl Into<Request>) -> CodecError {
    let mut dst = BytesMut::new();
    let err = ClientCodec::default()
        .encode(
            RequestFrame {
                request_id: 1,
                api_version: 0,
                request: request.into(),
            },
            &mut dst,
        )
        .expect_err("the request must be refused");
    assert!(dst.is_empty(), "a refused frame leaves the buffer alone");
    err
}

fn invalid(offset: usize, field: &'static str, value: u64) -> CodecError {
    CodecError::new(offset, CodecErrorKind::InvalidValue { field, value })
}

/// `topic` "t", `group` "g": the first 6 bytes of most group bodies.
fn t_g() -> Vec<u8> {
    b"\x01\x00t\x01\x00g".to_vec()
}

/// The 30 bytes of `settings`.
fn settings_bytes(settings: GroupSettings) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&settings.ack_timeout_ms.to_le_bytes());
    out.extend_from_slice(&settings.max_deliveries.to_le_bytes());
    out.extend_from_slice(&settings.backoff_initial_ms.to_le_bytes());
    out.extend_from_slice(&settings.backoff_multiplier.to_bits().to_le_bytes());
    out.extend_from_slice(&settings.backoff_max_ms.to_le_bytes());
    out.extend_from_slice(&settings.backoff_jitter_permille.to_le_bytes());
    out.extend_from_slice(&settings.max_in_flight.to_le_bytes());
    out
}

fn create_group_frame(settings: GroupSettings) -> Vec<u8> {
    let mut body = t_g();
    body.extend_from_slice(&settings_bytes(settings));
    raw_request(ApiKey::CreateGroup.as_u16(), 0, 1, &body)
}

fn create_group(settings: GroupSettings) -> CreateGroupRequest {
    CreateGroupRequest {
        topic: "t".into(),
        group: "g".into(),
        settings,
    }
}

fn with_multiplier(backoff_multiplier: f64) -> GroupSettings {
    GroupSettings {
        backoff_multiplier,
        ..GroupSettings::default()
    }
}

#[test]
fn group_settings_defaults_are_the_design_defaults() {
    assert_eq!(
        GroupSettings::default(),
        GroupSettings {
            ack_timeout_ms: 30_000,
            max_deliveries: 5,
            backoff_initial_ms: 1_000,
            backoff_multiplier: 2.0,
            backoff_max_ms: 300_000,
            backoff_jitter_permille: 200,
            max_in_flight: 1_000,
        }
    );
    // The 30-byte layout, as documented, is what the encoder writes.
    let frame = request_bytes(&RequestFrame {
        request_id: 1,
        api_version: 0,
        request: create_group(GroupSettings::default()).into(),
    });
    assert_eq!(
        &frame[..],
        &create_group_frame(GroupSettings::default())[..]
    );
    assert_eq!(frame.len(), 12 + 6 + 30);
}

#[test]
fn bad_backoff_multipliers_are_refused_at_their_offset() {
    // topic at 12, group at 15, settings at 18: multiplier at 18 + 12 = 30.
    for multiplier in [
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.999,
        0.0,
        -0.0,
        -2.0,
    ] {
        let settings = with_multiplier(multiplier);
        let expected = invalid(30, "backoff_multiplier", multiplier.to_bits());
        assert_eq!(
            request_error(&create_group_frame(settings)),
            expected,
            "{multiplier}"
        );
        assert_eq!(
            encode_error(create_group(settings)),
            expected,
            "{multiplier}"
        );
    }
    // 1.0 (no growth) and huge finite values are fine.
    for multiplier in [1.0, f64::MAX] {
        let frame = create_group_frame(with_multiplier(multiplier));
        assert_eq!(
            decode_one_request(&frame).request,
            Ok(create_group(with_multiplier(multiplier)).into())
        );
    }
    let err = request_error(&create_group_frame(with_multiplier(f64::NAN)));
    assert_eq!(err.error_code(), ErrorCode::InvalidRequest);
}

#[test]
fn jitter_above_1000_permille_is_refused_at_its_offset() {
    // backoff_jitter_permille at 30 + 8 (multiplier) + 4 (backoff_max) = 42.
    for jitter in [1001, u16::MAX] {
        let settings = GroupSettings {
            backoff_jitter_permille: jitter,
            ..GroupSettings::default()
        };
        let expected = invalid(42, "backoff_jitter_permille", u64::from(jitter));
        assert_eq!(request_error(&create_group_frame(settings)), expected);
        assert_eq!(encode_error(create_group(settings)), expected);
    }
    let full = GroupSettings {
        backoff_jitter_permille: 1000,
        ..GroupSettings::default()
    };
    assert!(
        decode_one_request(&create_group_frame(full))
            .request
            .is_ok()
    );
}

#[test]
fn bad_settings_in_responses_are_refused_at_their_offset() {
    // DescribeGroup response: settings at 14, multiplier at 26.
    let mut body = settings_bytes(with_multiplier(f64::NAN));
    body.extend_from_slice(&[0, 0, 0, 0, 0]); // not paused, no partitions
    let frame = raw_response(ApiKey::DescribeGroup.as_u16(), 1, 0, &body);
    assert_eq!(
        response_error(&frame),
        invalid(26, "backoff_multiplier", f64::NAN.to_bits())
    );
    // JoinGroup response: consumer_id at 14, settings at 22, jitter at 46.
    let mut body = 9u64.to_le_bytes().to_vec();
    body.extend_from_slice(&settings_bytes(GroupSettings {
        backoff_jitter_permille: 1001,
        ..GroupSettings::default()
    }));
    let frame = raw_response(ApiKey::JoinGroup.as_u16(), 1, 0, &body);
    assert_eq!(
        response_error(&frame),
        invalid(46, "backoff_jitter_permille", 1001)
    );
}

#[test]
fn unknown_settle_actions_are_refused_at_their_offset() {
    // The first item's action is at 12 + 8 (topic) + 9 (group) + 8
    // (consumer_id) + 4 (count) + 4 (partition) + 8 (offset) = 53.
    let mut frame = hex_bytes(SETTLE_BYTES);
    assert_eq!(frame[53], SettleAction::Ack.as_u8());
    // 4 (Release) exists from version 2 on: this frame is version 0.
    for tag in [4, 5, 0xff] {
        frame[53] = tag;
        assert_eq!(request_error(&frame), invalid(53, "action", u64::from(tag)));
    }
    for n in 0..=4 {
        assert_eq!(SettleAction::from_u8(n).map(SettleAction::as_u8), Ok(n));
    }
    assert_eq!(
        SettleAction::from_u8(5),
        Err(CodecErrorKind::InvalidValue {
            field: "action",
            value: 5
        })
    );
    assert_eq!(
        SettleAction::from_u8_in(4, 1),
        Err(CodecErrorKind::InvalidValue {
            field: "action",
            value: 4
        })
    );
    assert_eq!(SettleAction::from_u8_in(4, 2), Ok(SettleAction::Release));
}

#[test]
fn unknown_seek_targets_are_refused_at_their_offset() {
    // topic "t", group "g", partition None (1 byte): target at 19.
    let mut body = t_g();
    body.push(0);
    body.push(4);
    body.extend_from_slice(&[0; 8]);
    let frame = raw_request(ApiKey::SeekGroup.as_u16(), 0, 1, &body);
    assert_eq!(request_error(&frame), invalid(19, "target", 4));
    // A bad partition option tag is refused at its own offset, 18.
    let mut body = t_g();
    body.extend_from_slice(&[2, 3]);
    let frame = raw_request(ApiKey::SeekGroup.as_u16(), 0, 1, &body);
    assert_eq!(request_error(&frame), invalid(18, "partition", 2));
}

#[test]
fn unknown_message_states_are_refused_at_their_offset() {
    let mut body = vec![7u8];
    body.extend_from_slice(&0u32.to_le_bytes()); // attempts
    body.extend_from_slice(&0u16.to_le_bytes()); // consumer ""
    for _ in 0..3 {
        body.extend_from_slice(&(-1i64).to_le_bytes());
    }
    body.extend_from_slice(&0u16.to_le_bytes()); // reason ""
    let frame = raw_response(ApiKey::MessageState.as_u16(), 1, 0, &body);
    assert_eq!(response_error(&frame), invalid(14, "state", 7));
    body[0] = MessageState::RemovedByRetention.as_u8();
    let frame = raw_response(ApiKey::MessageState.as_u16(), 1, 0, &body);
    assert!(decode_one_response(&frame).body.is_ok());
    for n in 0..=6 {
        assert_eq!(MessageState::from_u8(n).map(MessageState::as_u8), Ok(n));
    }
    assert_eq!(
        MessageState::from_u8(7),
        Err(CodecErrorKind::InvalidValue {
            field: "state",
            value: 7
        })
    );
}

#[test]
fn bools_other_than_0_and_1_are_refused() {
    // PauseGroup: `paused` at 18.
    let mut body = t_g();
    body.push(2);
    let frame = raw_request(ApiKey::PauseGroup.as_u16(), 0, 1, &body);
    assert_eq!(request_error(&frame), invalid(18, "paused", 2));
    // Redrive: `dry_run` at 18 + 4 (max) = 22.
    let mut body = t_g();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(0x80);
    body.extend_from_slice(&0u32.to_le_bytes());
    let frame = raw_request(ApiKey::Redrive.as_u16(), 0, 1, &body);
    assert_eq!(request_error(&frame), invalid(22, "dry_run", 0x80));
}

#[test]
fn bad_group_names_are_refused_both_ways() {
    for (name, reason) in [
        (&b"a/b"[..], TopicNameError::BadChar { ch: '/', at: 1 }),
        (b"..", TopicNameError::Dots),
        (b"", TopicNameError::Empty),
        (&[b'g'; 201], TopicNameError::TooLong { len: 201 }),
    ] {
        // DeleteGroup: topic "t" at 12, group at 15.
        let mut body = b"\x01\x00t".to_vec();
        body.extend_from_slice(&(name.len() as u16).to_le_bytes());
        body.extend_from_slice(name);
        let frame = raw_request(ApiKey::DeleteGroup.as_u16(), 0, 1, &body);
        let expected = CodecError::new(15, CodecErrorKind::InvalidGroupName(reason));
        assert_eq!(request_error(&frame), expected);
        let request = DeleteGroupRequest {
            topic: "t".into(),
            group: String::from_utf8(name.to_vec()).expect("ascii"),
        };
        assert_eq!(encode_error(request), expected);
    }
    let mut body = b"\x01\x00t".to_vec();
    body.extend_from_slice(b"\x03\x00a b");
    let err = request_error(&raw_request(ApiKey::DescribeGroup.as_u16(), 0, 1, &body));
    assert_eq!(err.error_code(), ErrorCode::InvalidRequest);
    assert_eq!(
        err.to_string(),
        "invalid group name (group names follow the topic naming rules): topic name contains ' ' at byte 1; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed at byte 15"
    );
}

#[test]
fn receive_needs_at_least_one_message() {
    // max_messages at 18 + 8 (consumer_id) = 26.
    let mut body = t_g();
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&100u32.to_le_bytes());
    let frame = raw_request(ApiKey::Receive.as_u16(), 0, 1, &body);
    assert_eq!(request_error(&frame), invalid(26, "max_messages", 0));
    let request = ReceiveRequest {
        topic: "t".into(),
        group: "g".into(),
        consumer_id: 1,
        max_messages: 0,
        max_wait_ms: 100,
        max_bytes: 0,
    };
    assert_eq!(encode_error(request), invalid(26, "max_messages", 0));
}

#[test]
fn consumer_names_are_1_to_255_bytes() {
    // consumer_name at 18.
    let mut body = t_g();
    body.extend_from_slice(&0u16.to_le_bytes());
    let frame = raw_request(ApiKey::JoinGroup.as_u16(), 0, 1, &body);
    assert_eq!(request_error(&frame), invalid(18, "consumer_name", 0));
    let join = |consumer_name: String| JoinGroupRequest {
        topic: "t".into(),
        group: "g".into(),
        consumer_name,
    };
    assert_eq!(
        encode_error(join(String::new())),
        invalid(18, "consumer_name", 0)
    );
    assert_eq!(
        encode_error(join("c".repeat(256))),
        CodecError::new(
            18,
            CodecErrorKind::LengthTooLarge {
                field: "consumer_name",
                len: 256,
                max: 255
            }
        )
    );
    let mut body = t_g();
    body.extend_from_slice(&256u16.to_le_bytes());
    body.extend_from_slice(&[b'c'; 256]);
    let frame = raw_request(ApiKey::JoinGroup.as_u16(), 0, 1, &body);
    assert!(matches!(
        request_error(&frame).kind,
        CodecErrorKind::LengthTooLarge {
            len: 256,
            max: 255,
            ..
        }
    ));
}

#[test]
fn settle_needs_at_least_one_item() {
    let request = SettleRequest {
        topic: "t".into(),
        group: "g".into(),
        consumer_id: 1,
        items: vec![],
    };
    let expected = CodecError::new(26, CodecErrorKind::EmptyArray { field: "items" });
    assert_eq!(encode_error(request), expected);
    let mut body = t_g();
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    let frame = raw_request(ApiKey::Settle.as_u16(), 0, 1, &body);
    assert_eq!(request_error(&frame), expected);
}

#[test]
fn delivered_bytes_are_bounded_by_the_max_frame_size() {
    let limits = Limits {
        max_frame_size: 300,
        max_batch_size: 40,
    };
    // One delivery whose value claims 1000 bytes: refused by its length
    // prefix (at 14 + 4 count + 32 fixed + 1 absent key = 51), not read.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.extend_from_slice(&[0; 32]);
    body.push(0);
    body.extend_from_slice(&1000u32.to_le_bytes());
    body.extend_from_slice(&[0; 8]);
    let frame = raw_response(ApiKey::Receive.as_u16(), 1, 0, &body);
    let err = decode_response(Bytes::from(frame), limits)
        .expect("header")
        .body
        .expect_err("too long");
    assert_eq!(
        err,
        CodecError::new(
            51,
            CodecErrorKind::LengthTooLarge {
                field: "value",
                len: 1000,
                max: 300
            }
        )
    );
}

#[test]
fn deliveries_count_is_bounded_by_the_bytes_that_remain() {
    let frame = raw_response(ApiKey::Receive.as_u16(), 1, 0, &1000u32.to_le_bytes());
    assert_eq!(
        response_error(&frame),
        CodecError::new(
            14,
            CodecErrorKind::TooManyElements {
                field: "deliveries",
                count: 1000,
                remaining: 0,
                min_element_size: 41,
            }
        )
    );
}
