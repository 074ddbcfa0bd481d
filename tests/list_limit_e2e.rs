//! List answers against the frame limit, end to end: with many topics and
//! groups and a small `--max-frame-bytes`, ListTopics and ListGroups are
//! answered `FrameTooLarge` with a message saying what to do (the broker
//! stops building the list as soon as it would pass the limit), the
//! connection goes on, a list that fits is still answered, and the
//! broker's memory does not grow with the refused lists.

use pigeon_client::protocol::*;
use pigeon_suite::raw::RawClient;
use pigeon_suite::{Broker, memory, runtime};

/// The smallest frame limit the broker accepts with a 1 KiB batch limit
/// is 1 KiB; 4 KiB leaves room for the requests of the test.
const MAX_FRAME: u32 = 4096;

fn error_of(body: ResponseBody) -> ErrorResponse {
    match body {
        ResponseBody::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn list_answers_past_the_frame_limit_are_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(
        &tmp.path().join("data"),
        &[
            "--max-frame-bytes",
            &MAX_FRAME.to_string(),
            "--max-batch-bytes",
            "1024",
            "--fsync",
            "never",
        ],
    );
    let rt = runtime();
    let pid = broker.pid();
    let (before, after) = rt.block_on(async {
        let mut c = RawClient::connect(broker.addr).await;
        // 80 topics of 60-character names: about 5 KiB of listings.
        for i in 0..80 {
            c.create_topic(&format!("{i:03}-{}", "t".repeat(56)), 1)
                .await;
        }
        let before = memory(pid).expect("broker memory");
        for _ in 0..200 {
            let e = error_of(c.call(ListTopicsRequest.into()).await);
            assert_eq!(e.code, ErrorCode::FrameTooLarge, "{}", e.message);
            assert!(
                e.message.contains("max_frame_bytes (4096 bytes")
                    && e.message.contains("80 topics")
                    && e.message.contains("raise"),
                "{}",
                e.message
            );
        }
        // 30 groups of one topic with 100-character names: about 4.6 KiB.
        c.create_topic("g", 1).await;
        for i in 0..30 {
            let create = CreateGroupRequest {
                topic: "g".into(),
                group: format!("{i:03}-{}", "g".repeat(96)),
                settings: GroupSettings::default(),
            };
            c.ok(create.into()).await;
        }
        let all = ListGroupsRequest { topic: None };
        let e = error_of(c.call(all.into()).await);
        assert_eq!(e.code, ErrorCode::FrameTooLarge, "{}", e.message);
        assert!(
            e.message.contains("--topic") && e.message.contains("max_frame_bytes"),
            "{}",
            e.message
        );
        let one = ListGroupsRequest {
            topic: Some("g".into()),
        };
        let e = error_of(c.call(one.into()).await);
        assert_eq!(e.code, ErrorCode::FrameTooLarge, "{}", e.message);
        assert!(e.message.contains("raise"), "{}", e.message);
        // The connection goes on, and a list that fits is answered.
        c.create_topic("small", 1).await;
        let create = CreateGroupRequest {
            topic: "small".into(),
            group: "only".into(),
            settings: GroupSettings::default(),
        };
        c.ok(create.into()).await;
        let small = ListGroupsRequest {
            topic: Some("small".into()),
        };
        match c.ok(small.into()).await {
            Response::ListGroups(r) => assert_eq!(r.groups.len(), 1),
            other => panic!("{other:?}"),
        }
        (before, memory(pid).expect("broker memory"))
    });
    println!(
        "broker RSS with 80 topics {} KiB; after 200 refused topic lists, 30 groups and 2 refused group lists {} KiB (peak {} KiB)",
        before.rss_kib, after.rss_kib, after.peak_kib
    );
    // The groups (each with an engine, journals and a DLQ topic) cost some
    // memory; the refused lists must not add anything like a list's worth
    // per request.
    assert!(
        after.rss_kib < before.rss_kib + 64 * 1024,
        "the broker grew from {} KiB to {} KiB",
        before.rss_kib,
        after.rss_kib
    );
}
