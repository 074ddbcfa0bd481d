//! Requests that would amplify or poison, against the real
//! `pigeon-broker`: a record header name over 255 bytes (refused at
//! produce, so that it can never make a group's receives fail).

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
