//! proptest strategies for every body, request and response.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use crate::*;

/// Valid topic names: `[A-Za-z0-9._-]{1,200}`, not `.` or `..`.
pub fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9._-]{1,12}",
        1 => "[A-Za-z0-9._-]{190,200}",
    ]
    .prop_filter("dots", |name| name != "." && name != "..")
}

/// Arbitrary UTF-8 of at most 240 bytes (≤ 60 chars of ≤ 4 bytes).
pub fn software_name() -> impl Strategy<Value = String> {
    "\\PC{0,60}"
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        3 => (0u16..29).prop_map(ErrorCode::from_u16),
        1 => any::<u16>().prop_map(ErrorCode::from_u16),
    ]
}

pub fn record_batch() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..80).prop_map(Bytes::from)
}

pub fn api_version_range() -> impl Strategy<Value = ApiVersionRange> {
    (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(api_key, a, b)| ApiVersionRange {
        api_key,
        min_version: a.min(b),
        max_version: a.max(b),
    })
}

pub fn handshake_request() -> impl Strategy<Value = HandshakeRequest> {
    (software_name(), vec(api_version_range(), 0..10)).prop_map(|(client_name, api_versions)| {
        HandshakeRequest {
            client_name,
            api_versions,
        }
    })
}

pub fn handshake_response() -> impl Strategy<Value = HandshakeResponse> {
    (
        software_name(),
        vec(api_version_range(), 0..10),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(server_name, api_versions, a, b, c)| HandshakeResponse {
            server_name,
            api_versions,
            max_frame_size: a,
            max_batch_size: b,
            max_in_flight_requests: c,
        })
}

pub fn create_topic_request() -> impl Strategy<Value = CreateTopicRequest> {
    (
        topic(),
        any::<u32>(),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
    )
        .prop_map(
            |(topic, partitions, retention_ms, retention_bytes)| CreateTopicRequest {
                topic,
                partitions,
                retention_ms,
                retention_bytes,
            },
        )
}

pub fn register_producer_request() -> impl Strategy<Value = RegisterProducerRequest> {
    "[a-z0-9.-]{1,40}".prop_map(|name| RegisterProducerRequest { name })
}

pub fn register_producer_response() -> impl Strategy<Value = RegisterProducerResponse> {
    (any::<i64>(), any::<i16>()).prop_map(|(producer_id, producer_epoch)| {
        RegisterProducerResponse {
            producer_id,
            producer_epoch,
        }
    })
}

pub fn delete_topic_request() -> impl Strategy<Value = DeleteTopicRequest> {
    topic().prop_map(|topic| DeleteTopicRequest { topic })
}

pub fn list_topics_response() -> impl Strategy<Value = ListTopicsResponse> {
    vec(
        (topic(), any::<u32>()).prop_map(|(topic, partitions)| TopicListing { topic, partitions }),
        0..8,
    )
    .prop_map(|topics| ListTopicsResponse { topics })
}

pub fn describe_topic_request() -> impl Strategy<Value = DescribeTopicRequest> {
    topic().prop_map(|topic| DescribeTopicRequest { topic })
}

pub fn describe_topic_response() -> impl Strategy<Value = DescribeTopicResponse> {
    let partition = (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(partition, start, end, size, segments)| PartitionDescription {
                partition,
                log_start_offset: start,
                log_end_offset: end,
                size_bytes: size,
                segment_count: segments,
            },
        );
    (
        topic(),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        vec(partition, 0..8),
    )
        .prop_map(
            |(topic, retention_ms, retention_bytes, partitions)| DescribeTopicResponse {
                topic,
                retention_ms,
                retention_bytes,
                partitions,
            },
        )
}

pub fn produce_request() -> impl Strategy<Value = ProduceRequest> {
    let partition = (any::<u32>(), vec(record_batch(), 1..4))
        .prop_map(|(partition, batches)| ProducePartition { partition, batches });
    (any::<u32>(), topic(), vec(partition, 1..4)).prop_map(|(timeout_ms, topic, partitions)| {
        ProduceRequest {
            timeout_ms,
            topic,
            partitions,
        }
    })
}

pub fn produce_response() -> impl Strategy<Value = ProduceResponse> {
    let partition = (
        any::<u32>(),
        error_code(),
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
    )
        .prop_map(|(partition, error_code, base, last, time, start)| {
            ProducePartitionResponse {
                partition,
                error_code,
                error_message: format!("{error_code:?}"),
                base_offset: base,
                last_offset: last,
                append_time_ms: time,
                log_start_offset: start,
            }
        });
    (topic(), vec(partition, 0..6)).prop_map(|(topic, partitions)| ProduceResponse {
        topic,
        partitions,
        throttle_ms: 0,
    })
}

pub fn fetch_request() -> impl Strategy<Value = FetchRequest> {
    let partition = (topic(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
        |(topic, partition, offset, max_bytes)| FetchPartition {
            topic,
            partition,
            offset,
            max_bytes,
        },
    );
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        vec(partition, 1..6),
    )
        .prop_map(
            |(max_wait_ms, min_bytes, max_bytes, partitions)| FetchRequest {
                max_wait_ms,
                min_bytes,
                max_bytes,
                partitions,
            },
        )
}

pub fn fetch_response() -> impl Strategy<Value = FetchResponse> {
    let partition = (
        topic(),
        any::<u32>(),
        error_code(),
        any::<u64>(),
        any::<u64>(),
        record_batch(),
    )
        .prop_map(
            |(topic, partition, error_code, high_watermark, log_start_offset, records)| {
                FetchPartitionResponse {
                    topic,
                    partition,
                    error_code,
                    error_message: format!("{error_code:?}"),
                    high_watermark,
                    log_start_offset,
                    records,
                }
            },
        );
    vec(partition, 0..6).prop_map(|partitions| FetchResponse { partitions })
}

pub fn offset_spec() -> impl Strategy<Value = OffsetSpec> {
    prop_oneof![
        Just(OffsetSpec::Earliest),
        Just(OffsetSpec::Latest),
        any::<i64>().prop_map(OffsetSpec::ByTimestamp),
    ]
}

pub fn list_offsets_request() -> impl Strategy<Value = ListOffsetsRequest> {
    let partition = (topic(), any::<u32>(), offset_spec()).prop_map(|(topic, partition, spec)| {
        ListOffsetsPartition {
            topic,
            partition,
            spec,
        }
    });
    vec(partition, 1..6).prop_map(|partitions| ListOffsetsRequest { partitions })
}

pub fn list_offsets_response() -> impl Strategy<Value = ListOffsetsResponse> {
    let partition = (
        topic(),
        any::<u32>(),
        error_code(),
        any::<u64>(),
        option::of(any::<i64>()),
    )
        .prop_map(|(topic, partition, error_code, offset, timestamp_ms)| {
            ListOffsetsPartitionResponse {
                topic,
                partition,
                error_code,
                error_message: format!("{error_code:?}"),
                offset,
                timestamp_ms,
            }
        });
    vec(partition, 0..6).prop_map(|partitions| ListOffsetsResponse { partitions })
}

/// Valid group names: the topic naming rules.
pub fn group() -> impl Strategy<Value = String> {
    topic()
}

/// Settings the codec accepts: a finite multiplier ≥ 1.0 and a jitter of
/// at most 1000 ‰.
pub fn group_settings() -> impl Strategy<Value = GroupSettings> {
    let multiplier = prop_oneof![Just(1.0), Just(2.0), 1.0f64..1e6, Just(f64::MAX),];
    (
        (any::<u32>(), any::<u32>(), any::<u32>()),
        multiplier,
        any::<u32>(),
        0u16..=MAX_BACKOFF_JITTER_PERMILLE,
        any::<u32>(),
    )
        .prop_map(
            |((ack, deliveries, initial), multiplier, max, jitter, in_flight)| GroupSettings {
                ack_timeout_ms: ack,
                max_deliveries: deliveries,
                backoff_initial_ms: initial,
                backoff_multiplier: multiplier,
                backoff_max_ms: max,
                backoff_jitter_permille: jitter,
                max_in_flight: in_flight,
            },
        )
}

pub fn create_group_request() -> impl Strategy<Value = CreateGroupRequest> {
    (topic(), group(), group_settings()).prop_map(|(topic, group, settings)| CreateGroupRequest {
        topic,
        group,
        settings,
    })
}

pub fn describe_group_request() -> impl Strategy<Value = DescribeGroupRequest> {
    (topic(), group()).prop_map(|(topic, group)| DescribeGroupRequest { topic, group })
}

pub fn describe_group_response() -> impl Strategy<Value = DescribeGroupResponse> {
    let partition =
        (any::<u32>(), [any::<u64>(); 8]).prop_map(|(partition, n)| GroupPartitionDescription {
            partition,
            committed_floor: n[0],
            log_start: n[1],
            log_end: n[2],
            lag: n[3],
            in_flight: n[4],
            delayed: n[5],
            dead_lettered: n[6],
            removed_by_retention: n[7],
        });
    (group_settings(), any::<bool>(), vec(partition, 0..5)).prop_map(
        |(settings, paused, partitions)| DescribeGroupResponse {
            settings,
            paused,
            partitions,
        },
    )
}

pub fn alter_group_request() -> impl Strategy<Value = AlterGroupRequest> {
    (topic(), group(), group_settings()).prop_map(|(topic, group, settings)| AlterGroupRequest {
        topic,
        group,
        settings,
    })
}

pub fn seek_target() -> impl Strategy<Value = SeekTarget> {
    prop_oneof![
        any::<u64>().prop_map(SeekTarget::Offset),
        any::<i64>().prop_map(SeekTarget::Timestamp),
        Just(SeekTarget::Earliest),
        Just(SeekTarget::Latest),
    ]
}

pub fn seek_group_request() -> impl Strategy<Value = SeekGroupRequest> {
    (topic(), group(), option::of(any::<u32>()), seek_target()).prop_map(
        |(topic, group, partition, target)| SeekGroupRequest {
            topic,
            group,
            partition,
            target,
        },
    )
}

pub fn seek_group_response() -> impl Strategy<Value = SeekGroupResponse> {
    let partition = (any::<u32>(), any::<u64>())
        .prop_map(|(partition, offset)| SeekGroupPartition { partition, offset });
    vec(partition, 0..8).prop_map(|partitions| SeekGroupResponse { partitions })
}

pub fn pause_group_request() -> impl Strategy<Value = PauseGroupRequest> {
    (topic(), group(), any::<bool>()).prop_map(|(topic, group, paused)| PauseGroupRequest {
        topic,
        group,
        paused,
    })
}

pub fn delete_group_request() -> impl Strategy<Value = DeleteGroupRequest> {
    (topic(), group()).prop_map(|(topic, group)| DeleteGroupRequest { topic, group })
}

/// Consumer names: 1 to 255 bytes of UTF-8.
pub fn consumer_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9.-]{1,40}",
        1 => "\\PC{1,60}",
        1 => "[a-z]{255}",
    ]
}

pub fn join_group_request() -> impl Strategy<Value = JoinGroupRequest> {
    (topic(), group(), consumer_name()).prop_map(|(topic, group, consumer_name)| JoinGroupRequest {
        topic,
        group,
        consumer_name,
    })
}

pub fn join_group_response() -> impl Strategy<Value = JoinGroupResponse> {
    (any::<u64>(), group_settings()).prop_map(|(consumer_id, settings)| JoinGroupResponse {
        consumer_id,
        settings,
    })
}

pub fn receive_request() -> impl Strategy<Value = ReceiveRequest> {
    (topic(), group(), any::<u64>(), 1u32.., any::<u32>()).prop_map(
        |(topic, group, consumer_id, max_messages, max_wait_ms)| ReceiveRequest {
            topic,
            group,
            consumer_id,
            max_messages,
            max_wait_ms,
            // Version 0 does not carry it; see the v1 round trip.
            max_bytes: 0,
        },
    )
}

pub fn delivery() -> impl Strategy<Value = Delivery> {
    let header =
        ("\\PC{0,20}", record_batch()).prop_map(|(name, value)| DeliveryHeader { name, value });
    (
        (
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<i64>(),
            any::<i64>(),
        ),
        option::of(record_batch()),
        record_batch(),
        vec(header, 0..4),
    )
        .prop_map(
            |(
                (partition, offset, attempt, lease_deadline_ms, timestamp_ms),
                key,
                value,
                headers,
            )| {
                Delivery {
                    partition,
                    offset,
                    attempt,
                    lease_deadline_ms,
                    timestamp_ms,
                    key,
                    value,
                    headers,
                }
            },
        )
}

pub fn receive_response() -> impl Strategy<Value = ReceiveResponse> {
    vec(delivery(), 0..5).prop_map(|deliveries| ReceiveResponse { deliveries })
}

pub fn settle_action() -> impl Strategy<Value = SettleAction> {
    prop_oneof![
        Just(SettleAction::Ack),
        Just(SettleAction::Nack),
        Just(SettleAction::Reject),
        Just(SettleAction::Extend),
    ]
}

pub fn settle_request() -> impl Strategy<Value = SettleRequest> {
    let item = (
        any::<u32>(),
        any::<u64>(),
        settle_action(),
        any::<u32>(),
        "\\PC{0,40}",
    )
        .prop_map(|(partition, offset, action, delay_ms, reason)| SettleItem {
            partition,
            offset,
            attempt: 0,
            action,
            delay_ms,
            reason,
        });
    (topic(), group(), any::<u64>(), vec(item, 1..6)).prop_map(
        |(topic, group, consumer_id, items)| SettleRequest {
            topic,
            group,
            consumer_id,
            items,
        },
    )
}

pub fn settle_response() -> impl Strategy<Value = SettleResponse> {
    let result =
        (any::<u32>(), any::<u64>(), error_code()).prop_map(|(partition, offset, error_code)| {
            SettleResult {
                partition,
                offset,
                error_code,
                error_message: format!("{error_code:?}"),
            }
        });
    vec(result, 0..6).prop_map(|results| SettleResponse { results })
}

pub fn message_state() -> impl Strategy<Value = MessageState> {
    (0u8..7).prop_map(|n| MessageState::from_u8(n).expect("a known state"))
}

pub fn message_state_request() -> impl Strategy<Value = MessageStateRequest> {
    (topic(), group(), any::<u32>(), any::<u64>()).prop_map(|(topic, group, partition, offset)| {
        MessageStateRequest {
            topic,
            group,
            partition,
            offset,
        }
    })
}

pub fn message_state_response() -> impl Strategy<Value = MessageStateResponse> {
    (
        message_state(),
        any::<u32>(),
        prop_oneof![Just(String::new()), consumer_name()],
        (any::<i64>(), any::<i64>(), any::<i64>()),
        "\\PC{0,40}",
    )
        .prop_map(
            |(state, attempts, consumer, (until_ms, first, last), reason)| MessageStateResponse {
                state,
                attempts,
                consumer,
                until_ms,
                first_delivery_ms: first,
                last_delivery_ms: last,
                reason,
            },
        )
}

pub fn redrive_request() -> impl Strategy<Value = RedriveRequest> {
    (topic(), group(), any::<u32>(), any::<bool>(), any::<u32>()).prop_map(
        |(topic, group, max, dry_run, rate_per_sec)| RedriveRequest {
            topic,
            group,
            max,
            dry_run,
            rate_per_sec,
        },
    )
}

pub fn redrive_response() -> impl Strategy<Value = RedriveResponse> {
    let message = (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(
        |(dlq_offset, partition, new_offset)| RedrivenMessage {
            dlq_offset,
            partition,
            new_offset,
        },
    );
    vec(message, 0..8).prop_map(|redriven| RedriveResponse {
        redriven,
        ..RedriveResponse::default()
    })
}

/// Version 1 responses: the summary, no list.
pub fn redrive_response_v1() -> impl Strategy<Value = RedriveResponse> {
    let partition =
        (any::<u32>(), vec(any::<u64>(), 6)).prop_map(|(partition, v)| RedrivePartition {
            partition,
            dlq_from: v[0],
            dlq_to: v[1],
            moved: v[2],
            skipped: v[3],
            new_from: v[4],
            new_to: v[5],
        });
    let outcome = prop_oneof![
        Just(RedriveOutcome::Done),
        Just(RedriveOutcome::MaxReached),
        Just(RedriveOutcome::Interrupted),
    ];
    (any::<u64>(), any::<u64>(), outcome, vec(partition, 0..4)).prop_map(
        |(moved, skipped, outcome, partitions)| RedriveResponse {
            redriven: Vec::new(),
            moved,
            skipped,
            outcome,
            partitions,
        },
    )
}

pub fn retention_change() -> impl Strategy<Value = RetentionChange> {
    prop_oneof![
        Just(RetentionChange::Keep),
        Just(RetentionChange::Default),
        any::<u64>().prop_map(RetentionChange::Set),
    ]
}

pub fn alter_topic_request() -> impl Strategy<Value = AlterTopicRequest> {
    (topic(), retention_change(), retention_change()).prop_map(
        |(topic, retention_ms, retention_bytes)| AlterTopicRequest {
            topic,
            retention_ms,
            retention_bytes,
        },
    )
}

pub fn alter_topic_response() -> impl Strategy<Value = AlterTopicResponse> {
    (
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        any::<u32>(),
    )
        .prop_map(
            |(retention_ms, retention_bytes, segments_deleted)| AlterTopicResponse {
                retention_ms,
                retention_bytes,
                segments_deleted,
            },
        )
}

pub fn list_groups_request() -> impl Strategy<Value = ListGroupsRequest> {
    option::of(topic()).prop_map(|topic| ListGroupsRequest { topic })
}

pub fn list_groups_response() -> impl Strategy<Value = ListGroupsResponse> {
    let listing = (
        topic(),
        group(),
        any::<bool>(),
        any::<u32>(),
        [any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()],
    )
        .prop_map(
            |(topic, group, paused, partitions, [lag, in_flight, delayed, dead])| GroupListing {
                topic,
                group,
                paused,
                partitions,
                lag,
                in_flight,
                delayed,
                dead_lettered: dead,
            },
        );
    vec(listing, 0..6).prop_map(|groups| ListGroupsResponse { groups })
}

pub fn describe_broker_response() -> impl Strategy<Value = DescribeBrokerResponse> {
    let entry = ("[a-z_]{1,30}", "\\PC{0,40}").prop_map(|(key, value)| ConfigEntry { key, value });
    (
        software_name(),
        any::<i64>(),
        any::<u64>(),
        "\\PC{0,60}",
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        vec(entry, 0..8),
    )
        .prop_map(
            |(version, started_ms, uptime_ms, data_dir, data_dir_bytes, topics, groups, config)| {
                DescribeBrokerResponse {
                    version,
                    started_ms,
                    uptime_ms,
                    data_dir,
                    data_dir_bytes,
                    topics,
                    groups,
                    config,
                }
            },
        )
}

pub fn sasl_handshake_request() -> impl Strategy<Value = SaslHandshakeRequest> {
    "[A-Z0-9-]{1,64}".prop_map(|mechanism| SaslHandshakeRequest { mechanism })
}

pub fn sasl_handshake_response() -> impl Strategy<Value = SaslHandshakeResponse> {
    vec("[A-Z0-9-]{0,64}", 0..4).prop_map(|mechanisms| SaslHandshakeResponse { mechanisms })
}

pub fn sasl_bytes() -> impl Strategy<Value = bytes::Bytes> {
    vec(any::<u8>(), 0..512).prop_map(bytes::Bytes::from)
}

pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        handshake_request().prop_map(Request::from),
        sasl_handshake_request().prop_map(Request::from),
        sasl_bytes().prop_map(|auth_bytes| Request::from(SaslAuthenticateRequest { auth_bytes })),
        create_topic_request().prop_map(Request::from),
        delete_topic_request().prop_map(Request::from),
        register_producer_request().prop_map(Request::from),
        Just(Request::from(ListTopicsRequest)),
        describe_topic_request().prop_map(Request::from),
        produce_request().prop_map(Request::from),
        fetch_request().prop_map(Request::from),
        list_offsets_request().prop_map(Request::from),
        create_group_request().prop_map(Request::from),
        describe_group_request().prop_map(Request::from),
        alter_group_request().prop_map(Request::from),
        seek_group_request().prop_map(Request::from),
        pause_group_request().prop_map(Request::from),
        delete_group_request().prop_map(Request::from),
        join_group_request().prop_map(Request::from),
        receive_request().prop_map(Request::from),
        settle_request().prop_map(Request::from),
        message_state_request().prop_map(Request::from),
        redrive_request().prop_map(Request::from),
        alter_topic_request().prop_map(Request::from),
        list_groups_request().prop_map(Request::from),
        Just(Request::from(DescribeBrokerRequest)),
    ]
}

pub fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        handshake_response().prop_map(Response::from),
        sasl_handshake_response().prop_map(Response::from),
        sasl_bytes().prop_map(|auth_bytes| Response::from(SaslAuthenticateResponse { auth_bytes })),
        Just(Response::from(CreateTopicResponse)),
        Just(Response::from(DeleteTopicResponse)),
        register_producer_response().prop_map(Response::from),
        list_topics_response().prop_map(Response::from),
        describe_topic_response().prop_map(Response::from),
        produce_response().prop_map(Response::from),
        fetch_response().prop_map(Response::from),
        list_offsets_response().prop_map(Response::from),
        Just(Response::from(CreateGroupResponse)),
        describe_group_response().prop_map(Response::from),
        Just(Response::from(AlterGroupResponse)),
        seek_group_response().prop_map(Response::from),
        Just(Response::from(PauseGroupResponse)),
        Just(Response::from(DeleteGroupResponse)),
        join_group_response().prop_map(Response::from),
        receive_response().prop_map(Response::from),
        settle_response().prop_map(Response::from),
        message_state_response().prop_map(Response::from),
        redrive_response().prop_map(Response::from),
        alter_topic_response().prop_map(Response::from),
        list_groups_response().prop_map(Response::from),
        describe_broker_response().prop_map(Response::from),
    ]
}

pub fn request_frame() -> impl Strategy<Value = RequestFrame> {
    (0..CONNECTION_ERROR_REQUEST_ID, request()).prop_map(|(request_id, request)| RequestFrame {
        request_id,
        api_version: 0,
        request,
    })
}

/// Non-zero codes only (a zero code means "success body follows").
pub fn failure_code() -> impl Strategy<Value = ErrorCode> {
    error_code().prop_filter("not None", |c| *c != ErrorCode::None)
}

pub fn response_frame() -> impl Strategy<Value = ResponseFrame> {
    let error =
        (any::<u16>(), failure_code(), "\\PC{0,200}").prop_map(|(api_key, code, message)| {
            ResponseBody::Error(ErrorResponse {
                api_key,
                code,
                message,
            })
        });
    let body = prop_oneof![3 => response().prop_map(ResponseBody::Ok), 1 => error];
    (any::<u32>(), body, any::<u16>()).prop_map(|(request_id, body, error_version)| {
        // Error bodies have one layout in every version, so any version
        // round-trips; success bodies exist only at version 0 today.
        let api_version = match body {
            ResponseBody::Ok(_) => 0,
            ResponseBody::Error(_) => error_version,
        };
        ResponseFrame {
            request_id,
            api_version,
            body,
        }
    })
}
