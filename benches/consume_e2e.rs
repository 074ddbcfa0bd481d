//! Consume-with-acks throughput: 1,000,000 pre-loaded 100-byte messages in a
//! one-partition topic consumed by one group member over loopback from a
//! real `pigeon-broker` (release, `fsync=always`), acks batched: each
//! Receive takes up to 1,000 messages and one Settle acks them all.
//!
//! ```sh
//! cargo bench --bench consume_e2e
//! PIGEON_BENCH_RECORDS=200000 cargo bench --bench consume_e2e
//! ```

use std::time::{Duration, Instant};

use pigeon_client::client::{Admin, Client, ClientConfig, NewTopic, ProducerRecord};
use pigeon_client::protocol::*;
use pigeon_suite::Broker;

const BATCH: u32 = 1000;

fn main() {
    let records: u64 = std::env::var("PIGEON_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &["--fsync", "always"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = Client::connect_with(broker.addr.to_string(), ClientConfig::default())
            .await
            .expect("connect");
        let admin = Admin::new(client.clone());
        admin
            .create_topic(NewTopic::new("bench", 1))
            .await
            .expect("topic");
        let producer = pigeon_suite::load::loader(client.clone());
        let value = vec![b'x'; 100];
        let load = (0..records).map(|_| ProducerRecord::new(value.clone()).partition(0));
        pigeon_suite::load::produce_all(&producer, "bench", load, 100_000).await;
        admin
            .create_group(
                "bench",
                "g",
                GroupSettings {
                    max_in_flight: 10_000,
                    ..GroupSettings::default()
                },
            )
            .await
            .expect("group");

        let joined = client
            .request(
                JoinGroupRequest {
                    topic: "bench".into(),
                    group: "g".into(),
                    consumer_name: "bench".into(),
                }
                .into(),
            )
            .await
            .expect("join");
        let Response::JoinGroup(joined) = joined else {
            panic!("join: {joined:?}")
        };
        let consumer_id = joined.consumer_id;
        let started = Instant::now();
        let mut acked = 0u64;
        let mut receive_time = Duration::ZERO;
        let mut settle_time = Duration::ZERO;
        while acked < records {
            let t = Instant::now();
            let got = client
                .request(
                    ReceiveRequest {
                        topic: "bench".into(),
                        group: "g".into(),
                        consumer_id,
                        max_messages: BATCH,
                        max_wait_ms: 1000,
                        max_bytes: 0,
                    }
                    .into(),
                )
                .await
                .expect("receive");
            receive_time += t.elapsed();
            let Response::Receive(got) = got else {
                panic!("receive: {got:?}")
            };
            if got.deliveries.is_empty() {
                continue;
            }
            let items = got
                .deliveries
                .iter()
                .map(|d| SettleItem::ack(d.partition, d.offset, 0))
                .collect();
            let t = Instant::now();
            let settled = client
                .request(
                    SettleRequest {
                        topic: "bench".into(),
                        group: "g".into(),
                        consumer_id,
                        items,
                    }
                    .into(),
                )
                .await
                .expect("settle");
            settle_time += t.elapsed();
            let Response::Settle(settled) = settled else {
                panic!("settle: {settled:?}")
            };
            assert!(
                settled
                    .results
                    .iter()
                    .all(|r| r.error_code == ErrorCode::None)
            );
            acked += settled.results.len() as u64;
        }
        let elapsed = started.elapsed();
        println!(
            "| consumed and acked | {acked} messages of 100 B | {elapsed:.2?} | **{:.0} msgs/s** |",
            acked as f64 / elapsed.as_secs_f64()
        );
        println!(
            "| time in Receive / Settle requests | | {receive_time:.2?} / {settle_time:.2?} | |"
        );
    });
}
