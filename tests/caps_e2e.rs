//! Requests that would amplify, against the real `pigeon-broker`: a record
//! header name over 255 bytes (refused at produce, so that it can never
//! make a group's receives fail), a produce naming one partition twice,
//! settle items and list-offset entries repeated or beyond their caps.
//! Every answer is bounded and says what to change.

use bytes::Bytes;
use pigeon_client::batch::{BatchBuilder, ProducerStamp};
use pigeon_client::protocol::*;
use pigeon_suite::raw::RawClient;
use pigeon_suite::{Broker, runtime};

fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    (tmp, data)
}

/// A batch of one record carrying `headers`.
fn batch_with_headers(value: &[u8], headers: &[(&str, &[u8])]) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder.push(None, value, headers);
    builder.build(ProducerStamp::NONE, 0)
}

/// The answer to a produce of `batches` to `partition` of `topic`.
async fn produce_batches(
    client: &mut RawClient,
    topic: &str,
    partitions: Vec<(u32, Vec<Bytes>)>,
) -> ResponseBody {
    let request = ProduceRequest {
        timeout_ms: 30_000,
        topic: topic.into(),
        partitions: partitions
            .into_iter()
            .map(|(partition, batches)| ProducePartition { partition, batches })
            .collect(),
    };
    client.call(request.into()).await
}

#[test]
fn a_header_name_over_255_bytes_is_refused_at_produce_and_receives_go_on() {
    let (_tmp, data) = temp();
    let broker = Broker::start(&data, &[]);
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("headers", 1).await;
        let settings = GroupSettings::default();
        let create = CreateGroupRequest {
            topic: "headers".into(),
            group: "g".into(),
            settings,
        };
        client.ok(create.into()).await;
        let long = "n".repeat(256);
        let bad = batch_with_headers(b"poison", &[(long.as_str(), b"v")]);
        let answer = produce_batches(&mut client, "headers", vec![(0, vec![bad])]).await;
        let ResponseBody::Ok(Response::Produce(produced)) = answer else {
            panic!("produce: {answer:?}");
        };
        let entry = &produced.partitions[0];
        assert_ne!(
            entry.error_code,
            ErrorCode::None,
            "a 256-byte header name was stored at offset {}",
            entry.base_offset
        );
        assert!(
            entry.error_message.contains("header name") && entry.error_message.contains("255"),
            "{}",
            entry.error_message
        );
        // 255 bytes is fine, and the group delivers it.
        let edge = "e".repeat(255);
        let good = batch_with_headers(b"fine", &[(edge.as_str(), b"v")]);
        let answer = produce_batches(&mut client, "headers", vec![(0, vec![good])]).await;
        let ResponseBody::Ok(Response::Produce(produced)) = answer else {
            panic!("produce: {answer:?}");
        };
        assert_eq!(
            produced.partitions[0].error_code,
            ErrorCode::None,
            "{}",
            produced.partitions[0].error_message
        );
        let consumer = client.join_group("headers", "g", "c").await;
        let deliveries = client.receive("headers", "g", consumer, 10, 5_000).await;
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        assert_eq!(deliveries[0].value.as_ref(), b"fine");
        assert_eq!(deliveries[0].headers[0].name, edge);
    });
}

/// The error code and message of a whole-request answer.
fn refusal(answer: ResponseBody) -> (ErrorCode, String) {
    match answer {
        ResponseBody::Error(e) => (e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn repeated_entries_are_refused_or_answered_once() {
    let (_tmp, data) = temp();
    let broker = Broker::start(&data, &[]);
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("twice", 2).await;
        // One partition named twice in a produce: refused as a whole,
        // nothing appended.
        let one = || pigeon_suite::raw::batch(&[b"v"]);
        let answer = produce_batches(
            &mut client,
            "twice",
            vec![(0, vec![one()]), (1, vec![one()]), (0, vec![one()])],
        )
        .await;
        let (code, message) = refusal(answer);
        assert_eq!(code, ErrorCode::InvalidRequest, "{message}");
        assert!(
            message.contains("partition 0") && message.contains("twice"),
            "{message}"
        );
        assert!(client.read_values("twice", 0, 0).await.is_empty());
        // List offsets: the copy gets an error, the first its answer.
        let entry = |partition| ListOffsetsPartition {
            topic: "twice".into(),
            partition,
            spec: OffsetSpec::Latest,
        };
        let request = ListOffsetsRequest {
            partitions: vec![entry(0), entry(1), entry(0)],
        };
        let Response::ListOffsets(offsets) = client.ok(request.into()).await else {
            panic!("list offsets");
        };
        let codes: Vec<ErrorCode> = offsets.partitions.iter().map(|p| p.error_code).collect();
        assert_eq!(
            codes,
            [ErrorCode::None, ErrorCode::None, ErrorCode::InvalidRequest]
        );
        // Too many entries: refused before any is looked at.
        let request = ListOffsetsRequest {
            partitions: (0..10_001).map(|_| entry(0)).collect(),
        };
        let (code, message) = refusal(client.call(request.into()).await);
        assert_eq!(code, ErrorCode::InvalidRequest, "{message}");
        assert!(message.contains("split it"), "{message}");
        // Settle: the same message twice in one request is settled once.
        client.produce("twice", 0, &[b"m"]).await;
        let create = CreateGroupRequest {
            topic: "twice".into(),
            group: "g".into(),
            settings: GroupSettings::default(),
        };
        client.ok(create.into()).await;
        let consumer = client.join_group("twice", "g", "c").await;
        let got = client.receive("twice", "g", consumer, 10, 5_000).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let ack = SettleItem {
            partition: got[0].partition,
            offset: got[0].offset,
            attempt: 0,
            action: SettleAction::Ack,
            delay_ms: 0,
            reason: String::new(),
        };
        let settle = SettleRequest {
            topic: "twice".into(),
            group: "g".into(),
            consumer_id: consumer,
            items: vec![ack.clone(), ack.clone(), ack.clone()],
        };
        let Response::Settle(settled) = client.ok(settle.into()).await else {
            panic!("settle");
        };
        let codes: Vec<ErrorCode> = settled.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                ErrorCode::None,
                ErrorCode::InvalidRequest,
                ErrorCode::InvalidRequest
            ]
        );
        let settle = SettleRequest {
            topic: "twice".into(),
            group: "g".into(),
            consumer_id: consumer,
            items: vec![ack; 10_001],
        };
        let (code, message) = refusal(client.call(settle.into()).await);
        assert_eq!(code, ErrorCode::InvalidRequest, "{message}");
    });
}

#[test]
fn a_group_whose_dead_letter_topic_is_another_groups_is_refused() {
    let (_tmp, data) = temp();
    let broker = Broker::start(&data, &[]);
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("a.b", 1).await;
        client.create_topic("a", 1).await;
        let create = |topic: &str, group: &str| CreateGroupRequest {
            topic: topic.into(),
            group: group.into(),
            settings: GroupSettings::default(),
        };
        client.ok(create("a.b", "c").into()).await;
        // a + b.c would dead-letter into a.b.c.dlq too.
        let (code, message) = refusal(client.call(create("a", "b.c").into()).await);
        assert_eq!(code, ErrorCode::InvalidRequest, "{message}");
        assert!(
            message.contains("a.b.c.dlq") && message.contains("group c of topic a.b"),
            "{message}"
        );
        assert!(message.contains("rename the group"), "{message}");
        // The refused group does not exist; a group of another name does.
        client.ok(create("a", "d").into()).await;
    });
}
