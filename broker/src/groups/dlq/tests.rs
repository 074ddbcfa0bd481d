//! Tests of "already parked?" and `find_parked`: a copy counts only for
//! its own identity (topic and group, each with its incarnation) and only
//! from the dead letter's recorded DLQ offset on.

use std::sync::Arc;

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch};

use super::*;
use crate::delivery::DeliveryTimes;
use crate::io::StdFs;
use crate::log::{LogConfig, SystemClock};
use crate::topics::{NewTopic, Topics};

fn identity() -> DlqIdentity {
    DlqIdentity {
        source_topic: "t".into(),
        topic_created_ms: 1,
        group: "g".into(),
        group_created_ms: 10,
    }
}

/// A copy of `t`/0@`offset` as written for `(group, group_created_ms)`
/// (`None`: without incarnation headers, as an older version wrote them).
fn copy(offset: u64, group: &str, created: Option<(i64, i64)>) -> Vec<(String, String)> {
    let mut headers = vec![
        ("pigeon.dlq.source-topic".to_owned(), "t".to_owned()),
        ("pigeon.dlq.source-partition".into(), "0".into()),
        ("pigeon.dlq.source-offset".into(), offset.to_string()),
        ("pigeon.dlq.group".into(), group.to_owned()),
    ];
    if let Some((topic_ms, group_ms)) = created {
        headers.push((
            "pigeon.dlq.source-topic-created-ms".into(),
            topic_ms.to_string(),
        ));
        headers.push(("pigeon.dlq.group-created-ms".into(), group_ms.to_string()));
    }
    headers
}

async fn dlq_with(tmp: &std::path::Path, copies: &[Vec<(String, String)>]) -> (Topics, Arc<Topic>) {
    let topics = Topics::open(
        Arc::new(StdFs),
        tmp,
        LogConfig::default(),
        Arc::new(SystemClock),
    )
    .expect("topics");
    let dlq = topics
        .create(NewTopic {
            name: "t.g.dlq".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
        })
        .await
        .expect("dlq");
    for headers in copies {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let mut b = BatchBuilder::new();
        b.push(None, b"parked", &headers);
        let batch =
            RecordBatch::validate(b.build(ProducerStamp::NONE, 0), usize::MAX).expect("batch");
        dlq.partitions[0].append(batch).await.expect("append");
    }
    (topics, dlq)
}

fn dead(offset: u64, dlq_from: Option<u64>) -> DeadLetter {
    DeadLetter {
        offset,
        attempts: 1,
        reason: DeadLetterReason::MaxDeliveries,
        times: DeliveryTimes::default(),
        dlq_from,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_counts_only_for_its_own_identity_from_the_recorded_offset_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_topics, dlq) = dlq_with(
        tmp.path(),
        &[
            copy(5, "g", Some((1, 10))),  // DLQ 0: ours
            copy(6, "g2", Some((1, 10))), // DLQ 1: another group's
            copy(7, "g", Some((1, 9))),   // DLQ 2: an earlier group "g"'s
            copy(8, "g", None),           // DLQ 3: ours, by an older version
            copy(9, "g", Some((2, 10))),  // DLQ 4: of an earlier topic "t"
        ],
    )
    .await;
    let sink = DlqSink::new(dlq, identity());
    let parked = |d: DeadLetter| {
        sink.parked(0, std::slice::from_ref(&d))
            .expect("search")
            .contains(&d.offset)
    };
    assert!(parked(dead(5, Some(0))), "our copy");
    assert!(
        !parked(dead(5, Some(1))),
        "a copy before the recorded offset is an earlier parking (a seek went back)"
    );
    assert!(!parked(dead(6, Some(0))), "another group's copy");
    assert!(!parked(dead(7, Some(0))), "an earlier group's copy");
    assert!(!parked(dead(9, Some(0))), "an earlier topic's copy");
    assert!(
        !parked(dead(8, Some(0))),
        "a copy without incarnation cannot be a new dead letter's"
    );
    assert!(
        parked(dead(8, None)),
        "but is the copy of one an older version started"
    );
    assert!(!parked(dead(4, None)), "never parked");
    let all: Vec<DeadLetter> = (4..10).map(|o| dead(o, Some(0))).collect();
    assert_eq!(
        sink.parked(0, &all).expect("search"),
        [5].into_iter().collect(),
        "one search for a batch"
    );
}

/// The copy a search found, if it found one.
fn copy_found(parked: Parked) -> Option<Record> {
    match parked {
        Parked::Found(record) => Some(record),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_show_finds_our_copy_and_an_older_versions_not_another_groups() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_topics, dlq) = dlq_with(
        tmp.path(),
        &[
            copy(5, "g2", Some((1, 10))),
            copy(5, "g", Some((1, 9))),
            copy(6, "g", None),
            copy(5, "g", Some((1, 10))),
        ],
    )
    .await;
    let found = copy_found(find_parked(&dlq, &identity(), 0, 5, 0)).expect("our copy of 5");
    assert_eq!(found.offset, 3);
    assert_eq!(
        copy_found(find_parked(&dlq, &identity(), 0, 6, 0)).map(|r| r.offset),
        Some(2)
    );
    assert_eq!(find_parked(&dlq, &identity(), 0, 7, 0), Parked::Absent);
    assert_eq!(
        find_parked(&dlq, &identity(), 1, 5, 0),
        Parked::Absent,
        "no such partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_copy_carries_the_identity_and_is_found_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_topics, dlq) = dlq_with(tmp.path(), &[]).await;
    let sink = DlqSink::new(dlq.clone(), identity());
    let source = Record {
        offset: 3,
        timestamp: 77,
        key: None,
        value: bytes::Bytes::from_static(b"poison"),
        headers: Vec::new(),
    };
    let d = dead(3, Some(sink.end_offset(0)));
    sink.write(0, &d, &source).await.expect("write");
    assert_eq!(
        sink.parked(0, &[d]).expect("search"),
        [3].into_iter().collect()
    );
    let copy = copy_found(find_parked(&dlq, &identity(), 0, 3, 77)).expect("found");
    assert_eq!(
        header_text(&copy, "pigeon.dlq.group-created-ms"),
        Some("10")
    );
    assert_eq!(
        header_text(&copy, "pigeon.dlq.source-topic-created-ms"),
        Some("1")
    );
    assert_eq!(
        header_text(&copy, "pigeon.dlq.reason"),
        Some("max-deliveries")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_stops_at_its_byte_bound_and_says_where() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_topics, dlq) = dlq_with(tmp.path(), &[]).await;
    // About 6 MiB of copies of another message, then the one wanted.
    let other = copy(6, "g", Some((1, 10)));
    let headers: Vec<(&str, &[u8])> = other
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let value = vec![b'v'; 1024];
    for _ in 0..48 {
        let mut b = BatchBuilder::new();
        for _ in 0..128 {
            b.push(None, &value, &headers);
        }
        let batch =
            RecordBatch::validate(b.build(ProducerStamp::NONE, 0), usize::MAX).expect("batch");
        dlq.partitions[0].append(batch).await.expect("append");
    }
    let end = dlq.partitions[0].reader().end_offset();
    match find_parked(&dlq, &identity(), 0, 5, 0) {
        Parked::NotSearched { from, next, bytes } => {
            assert_eq!(from, 0);
            assert!(next > 0 && next < end, "{next} of {end}");
            assert!(bytes >= FIND_MAX_BYTES, "{bytes}");
            // One batch (about 150 KiB here) may pass the bound.
            assert!(bytes < FIND_MAX_BYTES + (256 << 10), "{bytes}");
        }
        other => panic!("{other:?}"),
    }
}
