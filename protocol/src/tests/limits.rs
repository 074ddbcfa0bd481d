//! Unit tests: limits are enforced before allocation, malformed input is
//! reported with the right kind and byte offset, and encoding refuses what
//! decoding would refuse.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::support::*;
use crate::*;

fn request_error(frame: &[u8]) -> CodecError {
    decode_one_request(frame)
        .request
        .expect_err("the body must be rejected")
}

#[test]
fn oversized_declared_length_is_rejected_without_reserving() {
    for declared in [DEFAULT_MAX_FRAME_SIZE + 1, u32::MAX] {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32_le(declared);
        buf.put_slice(&[0u8; 8]);
        let before = buf.capacity();
        let err = ServerCodec::default()
            .decode(&mut buf)
            .expect_err("too large");
        assert_eq!(
            err,
            CodecError::new(
                0,
                CodecErrorKind::FrameTooLarge {
                    declared: u64::from(declared),
                    max: DEFAULT_MAX_FRAME_SIZE,
                }
            )
        );
        assert!(err.is_fatal());
        assert_eq!(err.error_code(), ErrorCode::FrameTooLarge);
        assert_eq!(buf.capacity(), before, "the codec reserved memory");
        let err = ClientCodec::default()
            .decode(&mut buf)
            .expect_err("too large");
        assert!(matches!(err.kind, CodecErrorKind::FrameTooLarge { .. }));
        assert_eq!(buf.capacity(), before, "the codec reserved memory");
    }
}

#[test]
fn configured_max_frame_size_is_enforced() {
    let limits = Limits {
        max_frame_size: 100,
        ..Limits::default()
    };
    let mut buf = BytesMut::new();
    buf.put_u32_le(101);
    let err = ServerCodec::new(limits).decode(&mut buf).expect_err("over");
    assert_eq!(
        err.to_string(),
        "frame length 101 exceeds limit 100 at byte 0"
    );
    let mut buf = BytesMut::new();
    buf.put_u32_le(100);
    assert_eq!(ServerCodec::new(limits).decode(&mut buf), Ok(None));
}

#[test]
fn a_legal_but_incomplete_frame_does_not_reserve_its_length() {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32_le(DEFAULT_MAX_FRAME_SIZE);
    buf.put_slice(&[0u8; 8]);
    let before = buf.capacity();
    assert_eq!(ServerCodec::default().decode(&mut buf), Ok(None));
    assert_eq!(buf.capacity(), before);
    assert_eq!(buf.len(), 12, "nothing consumed while waiting");
}

#[test]
fn frame_shorter_than_its_header_is_fatal() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(7);
    buf.put_slice(&[0u8; 7]);
    let err = ServerCodec::default().decode(&mut buf).expect_err("short");
    assert_eq!(
        err.kind,
        CodecErrorKind::FrameTooShort {
            declared: 7,
            min: 8
        }
    );
    assert!(err.is_fatal());
    // A response header is two bytes longer.
    let mut buf = BytesMut::new();
    buf.put_u32_le(9);
    buf.put_slice(&[0u8; 9]);
    let err = ClientCodec::default().decode(&mut buf).expect_err("short");
    assert_eq!(
        err.kind,
        CodecErrorKind::FrameTooShort {
            declared: 9,
            min: 10
        }
    );
}

#[test]
fn encoding_a_frame_above_the_limit_fails_and_leaves_the_buffer_alone() {
    let limits = Limits {
        max_frame_size: 64,
        max_batch_size: 1024,
    };
    let frame = RequestFrame {
        request_id: 1,
        api_version: 0,
        request: ProduceRequest {
            timeout_ms: 0,
            topic: "t".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                batches: vec![Bytes::from(vec![7u8; 100])],
            }],
        }
        .into(),
    };
    let mut dst = BytesMut::from(&b"earlier frame"[..]);
    let err = ClientCodec::new(limits)
        .encode(&frame, &mut dst)
        .expect_err("too large");
    assert!(matches!(
        err.kind,
        CodecErrorKind::FrameTooLarge { max: 64, .. }
    ));
    assert_eq!(&dst[..], b"earlier frame");
}

fn produce_with_batch(len: usize) -> RequestFrame {
    RequestFrame {
        request_id: 3,
        api_version: 0,
        request: ProduceRequest {
            timeout_ms: 0,
            topic: "t".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                batches: vec![Bytes::from(vec![1u8; len])],
            }],
        }
        .into(),
    }
}

#[test]
fn oversized_batches_are_refused_both_ways() {
    let small = Limits {
        max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        max_batch_size: 16,
    };
    let mut dst = BytesMut::new();
    let err = ClientCodec::new(small)
        .encode(produce_with_batch(17), &mut dst)
        .expect_err("batch too large");
    assert_eq!(err.kind, CodecErrorKind::BatchTooLarge { len: 17, max: 16 });
    assert!(dst.is_empty());

    // Encoded under generous limits, decoded under small ones.
    let bytes = request_bytes(&produce_with_batch(17));
    let mut buf = BytesMut::from(&bytes[..]);
    let incoming = ServerCodec::new(small)
        .decode(&mut buf)
        .expect("framing ok")
        .expect("whole frame");
    let err = incoming.request.expect_err("batch too large");
    // timeout u32 @12, topic @16 (2 + 1), partitions count @19,
    // partition @23, batches count @27, batch length @31.
    assert_eq!(
        err,
        CodecError::new(31, CodecErrorKind::BatchTooLarge { len: 17, max: 16 })
    );
    assert_eq!(err.error_code(), ErrorCode::BatchTooLarge);
    assert!(!err.is_fatal());

    let at_limit = request_bytes(&produce_with_batch(16));
    let mut buf = BytesMut::from(&at_limit[..]);
    let incoming = ServerCodec::new(small)
        .decode(&mut buf)
        .expect("framing ok")
        .expect("whole frame");
    assert!(incoming.request.is_ok());
}

#[test]
fn bad_topic_names_are_refused_when_encoding() {
    for (name, expected) in [
        ("", TopicNameError::Empty),
        ("..", TopicNameError::Dots),
        ("a b", TopicNameError::BadChar { ch: ' ', at: 1 }),
    ] {
        let mut dst = BytesMut::new();
        let err = ClientCodec::default()
            .encode(
                RequestFrame {
                    request_id: 1,
                    api_version: 0,
                    request: DeleteTopicRequest { topic: name.into() }.into(),
                },
                &mut dst,
            )
            .expect_err("bad name");
        assert_eq!(
            err,
            CodecError::new(12, CodecErrorKind::InvalidTopicName(expected))
        );
        assert!(dst.is_empty());
    }
}

fn name_body(name: &[u8]) -> Vec<u8> {
    let mut body = (name.len() as u16).to_le_bytes().to_vec();
    body.extend_from_slice(name);
    body
}

#[test]
fn bad_topic_names_are_refused_when_decoding() {
    let cases: Vec<(Vec<u8>, CodecErrorKind)> = vec![
        (
            name_body(b"a/b"),
            CodecErrorKind::InvalidTopicName(TopicNameError::BadChar { ch: '/', at: 1 }),
        ),
        (
            name_body(b"."),
            CodecErrorKind::InvalidTopicName(TopicNameError::Dots),
        ),
        (
            name_body(b""),
            CodecErrorKind::InvalidTopicName(TopicNameError::Empty),
        ),
        (
            name_body(&[b'x'; 201]),
            CodecErrorKind::InvalidTopicName(TopicNameError::TooLong { len: 201 }),
        ),
        // A huge declared name length is refused before its bytes are read.
        (
            u16::MAX.to_le_bytes().to_vec(),
            CodecErrorKind::InvalidTopicName(TopicNameError::TooLong { len: 65535 }),
        ),
        (
            name_body(&[0xff, 0xfe]),
            CodecErrorKind::InvalidUtf8 { field: "topic" },
        ),
    ];
    for (body, kind) in cases {
        let frame = raw_request(ApiKey::DeleteTopic.as_u16(), 0, 5, &body);
        let err = request_error(&frame);
        assert_eq!(err, CodecError::new(12, kind));
    }
    let frame = raw_request(ApiKey::DeleteTopic.as_u16(), 0, 5, &name_body(b"a/b"));
    let err = request_error(&frame);
    assert_eq!(err.error_code(), ErrorCode::InvalidTopicName);
    assert_eq!(
        err.to_string(),
        "invalid topic name: topic name contains '/' at byte 1; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed at byte 12"
    );
}

#[test]
fn unknown_api_key_is_answered_not_fatal() {
    let frame = raw_request(999, 0, 77, b"whatever");
    let incoming = decode_one_request(&frame);
    assert_eq!(
        incoming.header,
        RequestHeader {
            api_key: 999,
            api_version: 0,
            request_id: 77
        }
    );
    let err = incoming.request.clone().expect_err("unknown");
    assert_eq!(err, CodecError::new(4, CodecErrorKind::UnknownApi(999)));
    assert_eq!(err.error_code(), ErrorCode::UnknownApi);
    assert!(!err.is_fatal());

    // The server's answer echoes the key and id; the client can read it.
    let answer = ResponseFrame::for_codec_error(&incoming.header, &err);
    let response = decode_one_response(&response_bytes(&answer));
    assert_eq!(
        response.header,
        ResponseHeader {
            api_key: 999,
            api_version: 0,
            request_id: 77,
            error_code: ErrorCode::UnknownApi,
        }
    );
    assert_eq!(
        response.body,
        Ok(ResponseBody::Error(ErrorResponse {
            api_key: 999,
            code: ErrorCode::UnknownApi,
            message: "unknown API key 999 at byte 4".into(),
        }))
    );
}

#[test]
fn unsupported_version_is_reported_at_byte_6() {
    let frame = raw_request(ApiKey::ListTopics.as_u16(), 3, 1, b"");
    let err = request_error(&frame);
    assert_eq!(
        err,
        CodecError::new(
            6,
            CodecErrorKind::UnsupportedVersion {
                api_key: 12,
                version: 3,
                min: 0,
                max: 0
            }
        )
    );
    assert_eq!(err.error_code(), ErrorCode::UnsupportedVersion);

    let mut dst = BytesMut::new();
    let err = ClientCodec::default()
        .encode(
            RequestFrame {
                request_id: 1,
                api_version: 1,
                request: ListTopicsRequest.into(),
            },
            &mut dst,
        )
        .expect_err("unsupported");
    assert!(matches!(
        err.kind,
        CodecErrorKind::UnsupportedVersion { .. }
    ));
    assert!(dst.is_empty());
}

/// CreateTopic "orders": name length @12, name @14..20, partitions @20..24,
/// retention_ms tag @24, value @25..33, retention_bytes tag @33.
fn create_orders() -> Vec<u8> {
    request_bytes(&RequestFrame {
        request_id: 1,
        api_version: 0,
        request: CreateTopicRequest {
            topic: "orders".into(),
            partitions: 3,
            retention_ms: Some(60_000),
            retention_bytes: None,
        }
        .into(),
    })
    .to_vec()
}

fn truncated(frame: &[u8], keep: usize) -> Vec<u8> {
    let mut out = frame[..keep].to_vec();
    let len = (keep - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

#[test]
fn truncated_bodies_report_the_offset_of_the_missing_field() {
    let full = create_orders();
    assert_eq!(full.len(), 34);
    let cases = [
        (12, 12, "topic", 2, 0),
        (13, 12, "topic", 2, 1),
        (16, 14, "topic", 6, 2),
        (22, 20, "partitions", 4, 2),
        (24, 24, "retention_ms", 1, 0),
        (30, 25, "retention_ms", 8, 5),
        (33, 33, "retention_bytes", 1, 0),
    ];
    for (keep, offset, field, needed, available) in cases {
        let err = request_error(&truncated(&full, keep));
        assert_eq!(
            err,
            CodecError::new(
                offset,
                CodecErrorKind::Truncated {
                    field,
                    needed,
                    available
                }
            ),
            "kept {keep} bytes"
        );
        assert_eq!(err.error_code(), ErrorCode::InvalidRequest);
    }
    assert_eq!(
        request_error(&truncated(&full, 22)).to_string(),
        "partitions needs 4 bytes but only 2 remain at byte 20"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut frame = create_orders();
    frame.extend_from_slice(b"xy");
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    assert_eq!(
        request_error(&frame),
        CodecError::new(34, CodecErrorKind::TrailingBytes(2))
    );
}

#[test]
fn invalid_option_tag_is_rejected() {
    let mut frame = create_orders();
    frame[24] = 2;
    assert_eq!(
        request_error(&frame),
        CodecError::new(
            24,
            CodecErrorKind::InvalidValue {
                field: "retention_ms",
                value: 2
            }
        )
    );
}

#[test]
fn long_strings_are_rejected_by_their_length_prefix() {
    let mut body = 300u16.to_le_bytes().to_vec();
    body.extend_from_slice(&[b'a'; 300]);
    body.extend_from_slice(&0u32.to_le_bytes());
    let err = request_error(&raw_request(ApiKey::Handshake.as_u16(), 0, 1, &body));
    assert_eq!(
        err.to_string(),
        "client_name length 300 exceeds limit 255 at byte 12"
    );
}

#[test]
fn array_counts_are_bounded_by_the_bytes_that_remain() {
    // ListTopics response claiming 4 billion topics in a 4-byte body.
    let frame = raw_response(ApiKey::ListTopics.as_u16(), 1, 0, &u32::MAX.to_le_bytes());
    let response = decode_one_response(&frame);
    assert_eq!(
        response.body,
        Err(CodecError::new(
            14,
            CodecErrorKind::TooManyElements {
                field: "topics",
                count: u64::from(u32::MAX),
                remaining: 0,
                min_element_size: 6,
            }
        ))
    );
    // Produce request claiming 1000 partitions with 100 bytes left.
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&name_body(b"t"));
    body.extend_from_slice(&1000u32.to_le_bytes());
    body.extend_from_slice(&[0u8; 100]);
    let err = request_error(&raw_request(ApiKey::Produce.as_u16(), 0, 1, &body));
    assert_eq!(err.offset, 19);
    assert!(matches!(
        err.kind,
        CodecErrorKind::TooManyElements { count: 1000, .. }
    ));
}

#[test]
fn produce_needs_at_least_one_partition_and_batch() {
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&name_body(b"t"));
    body.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        request_error(&raw_request(ApiKey::Produce.as_u16(), 0, 1, &body)),
        CodecError::new(
            19,
            CodecErrorKind::EmptyArray {
                field: "partitions"
            }
        )
    );
    let mut dst = BytesMut::new();
    let err = ClientCodec::default()
        .encode(
            RequestFrame {
                request_id: 1,
                api_version: 0,
                request: ProduceRequest {
                    timeout_ms: 0,
                    topic: "t".into(),
                    partitions: vec![ProducePartition {
                        partition: 0,
                        batches: vec![],
                    }],
                }
                .into(),
            },
            &mut dst,
        )
        .expect_err("no batches");
    assert_eq!(
        err,
        CodecError::new(27, CodecErrorKind::EmptyArray { field: "batches" })
    );
}

#[test]
fn error_messages_are_truncated_not_refused() {
    let header = RequestHeader {
        api_key: 10,
        api_version: 0,
        request_id: 9,
    };
    let long = "é".repeat(MAX_ERROR_MESSAGE_LEN); // 2 bytes each
    let frame = ResponseFrame::error(&header, ErrorCode::InvalidConfig, long);
    let response = decode_one_response(&response_bytes(&frame));
    let Ok(ResponseBody::Error(error)) = response.body else {
        panic!("expected an error body");
    };
    assert_eq!(error.message.len(), MAX_ERROR_MESSAGE_LEN);
    assert!(error.message.chars().all(|c| c == 'é'));
}

#[test]
fn an_error_body_with_code_none_is_refused() {
    let frame = ResponseFrame {
        request_id: 1,
        api_version: 0,
        body: ResponseBody::Error(ErrorResponse {
            api_key: 10,
            code: ErrorCode::None,
            message: String::new(),
        }),
    };
    let mut dst = BytesMut::new();
    let err = ServerCodec::default()
        .encode(&frame, &mut dst)
        .expect_err("None is not an error");
    assert_eq!(err.offset, 12);
    assert!(dst.is_empty());
}

#[test]
fn connection_errors_use_the_reserved_request_id() {
    let fatal = CodecError::new(
        0,
        CodecErrorKind::FrameTooLarge {
            declared: 1 << 30,
            max: DEFAULT_MAX_FRAME_SIZE,
        },
    );
    let frame = ResponseFrame::connection_error(&fatal);
    let response = decode_one_response(&response_bytes(&frame));
    assert_eq!(response.header.request_id, CONNECTION_ERROR_REQUEST_ID);
    assert_eq!(response.header.api_key, CONNECTION_ERROR_API_KEY);
    assert_eq!(response.header.error_code, ErrorCode::FrameTooLarge);

    let mut dst = BytesMut::new();
    let err = ClientCodec::default()
        .encode(
            RequestFrame {
                request_id: CONNECTION_ERROR_REQUEST_ID,
                api_version: 0,
                request: ListTopicsRequest.into(),
            },
            &mut dst,
        )
        .expect_err("reserved id");
    assert_eq!(err.offset, 8);
}

#[test]
fn unknown_error_codes_reach_the_client_intact() {
    let mut body = 4u16.to_le_bytes().to_vec();
    body.extend_from_slice(b"new!");
    let frame = raw_response(ApiKey::Produce.as_u16(), 5, 4000, &body);
    let response = decode_one_response(&frame);
    assert_eq!(response.header.error_code, ErrorCode::Unrecognized(4000));
    assert_eq!(
        response.body,
        Ok(ResponseBody::Error(ErrorResponse {
            api_key: 20,
            code: ErrorCode::Unrecognized(4000),
            message: "new!".into(),
        }))
    );
}

#[test]
fn handshake_negotiates_the_highest_common_version() {
    let response = HandshakeResponse {
        server_name: "pigeon-broker test".into(),
        api_versions: vec![
            ApiVersionRange {
                api_key: ApiKey::Produce.as_u16(),
                min_version: 0,
                max_version: 5,
            },
            ApiVersionRange {
                api_key: ApiKey::Fetch.as_u16(),
                min_version: 2,
                max_version: 3,
            },
        ],
        max_frame_size: 1 << 20,
        max_batch_size: 1 << 16,
        max_in_flight_requests: 32,
    };
    // This build speaks Produce 0–1: the highest common is 1.
    assert_eq!(response.negotiate(ApiKey::Produce), Some(1));
    assert_eq!(response.negotiate(ApiKey::Fetch), None);
    assert_eq!(response.negotiate(ApiKey::ListTopics), None);
    assert_eq!(
        response.limits(),
        Limits {
            max_frame_size: 1 << 20,
            max_batch_size: 1 << 16
        }
    );
    let request = HandshakeRequest::for_this_build("pigeon-client test");
    assert_eq!(request.api_versions.len(), ALL_API_KEYS.len());
}

/// Regression (found by `mutated_requests_never_panic`): a frame handed
/// straight to `decode_request`/`decode_response` whose length field
/// disagrees with its size is refused, not decoded.
#[test]
fn whole_frame_decoders_check_the_length_field() {
    let mut frame = raw_request(ApiKey::ListTopics.as_u16(), 0, 1, b"");
    frame[0] = 14;
    let err = decode_request(Bytes::from(frame), Limits::default()).expect_err("mismatch");
    assert_eq!(
        err,
        CodecError::new(
            0,
            CodecErrorKind::InvalidValue {
                field: "frame_length",
                value: 14
            }
        )
    );
    let mut frame = raw_response(ApiKey::ListTopics.as_u16(), 1, 0, &0u32.to_le_bytes());
    frame[0] = 0;
    assert!(decode_response(Bytes::from(frame), Limits::default()).is_err());
}

#[test]
fn list_answers_are_as_long_as_their_listings_say() {
    let topics = ListTopicsResponse {
        topics: vec![
            TopicListing {
                topic: "a".into(),
                partitions: 1,
            },
            TopicListing {
                topic: "orders.eu-west".into(),
                partitions: 12,
            },
        ],
    };
    let expected = LIST_RESPONSE_OVERHEAD
        + topics
            .topics
            .iter()
            .map(|t| TopicListing::encoded_len(&t.topic))
            .sum::<usize>();
    let mut dst = bytes::BytesMut::new();
    let frame = ResponseFrame::ok(7, 0, topics);
    encode_response(&frame, Limits::default(), &mut dst).expect("encode");
    assert_eq!(dst.len(), expected);

    let listing = GroupListing {
        topic: "orders".into(),
        group: "billing".into(),
        paused: true,
        partitions: 3,
        lag: 1,
        in_flight: 2,
        delayed: 3,
        dead_lettered: 4,
    };
    let expected = LIST_RESPONSE_OVERHEAD + GroupListing::encoded_len("orders", "billing");
    let groups = ListGroupsResponse {
        groups: vec![listing],
    };
    let mut dst = bytes::BytesMut::new();
    let frame = ResponseFrame::ok(7, 0, groups);
    encode_response(&frame, Limits::default(), &mut dst).expect("encode");
    assert_eq!(dst.len(), expected);
}
