//! Tests of redrive: only the group's copies move, each once, a page at a
//! time, across crashes (an intent left behind) and stops.

use std::collections::BTreeMap;
use std::sync::Arc;

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::groups::source::read_records;
use crate::io::StdFs;
use crate::log::{FsyncPolicy, LogConfig, SystemClock};
use crate::topics::{NewTopic, Topics};

fn filter() -> RedriveFilter {
    RedriveFilter {
        source_topic: "t".into(),
        group: "g".into(),
    }
}

fn no_stop() -> Stop {
    Stop::new(CancellationToken::new(), CancellationToken::new())
}

fn all() -> RedriveOptions {
    RedriveOptions::default()
}

/// A parked copy of group `group` of `t` with `value`.
fn parked_batch(group: &str, value: &[u8]) -> RecordBatch {
    let mut b = BatchBuilder::new();
    b.push(
        None,
        value,
        &[
            ("pigeon.dlq.source-topic", b"t"),
            ("pigeon.dlq.group", group.as_bytes()),
            ("pigeon.dlq.reason", b"rejected"),
        ],
    );
    RecordBatch::validate(b.build(ProducerStamp::NONE, 0), usize::MAX).expect("batch")
}

struct Setup {
    _topics: Topics,
    source: Arc<Topic>,
    dlq: Arc<Topic>,
    dir: std::path::PathBuf,
}

/// Topic `t`, its DLQ `t.g.dlq` holding `parked` (group, value) copies,
/// and a group directory.
async fn setup(tmp: &Path, parked: &[(&str, Vec<u8>)]) -> Setup {
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    };
    let topics = Topics::open(Arc::new(StdFs), tmp, config, Arc::new(SystemClock)).expect("topics");
    let new = |name: &str| NewTopic {
        name: name.into(),
        partitions: 1,
        retention_ms: None,
        retention_bytes: None,
    };
    let source = topics.create(new("t")).await.expect("source");
    let dlq = topics.create(new("t.g.dlq")).await.expect("dlq");
    for (group, value) in parked {
        let batch = parked_batch(group, value);
        dlq.partitions[0].append(batch).await.expect("park");
    }
    let dir = tmp.join("g");
    std::fs::create_dir_all(&dir).expect("dir");
    Setup {
        _topics: topics,
        source,
        dlq,
        dir,
    }
}

fn ours(count: usize) -> Vec<(&'static str, Vec<u8>)> {
    (0..count)
        .map(|i| ("g", format!("parked {i}").into_bytes()))
        .collect()
}

/// The source's values, in order.
fn values(topic: &Topic) -> Vec<String> {
    let reader = topic.partitions[0].reader();
    let all: Vec<u64> = (0..reader.end_offset()).collect();
    read_records(reader, &all)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_landed_before_a_crash_is_not_moved_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = setup(tmp.path(), &ours(3)).await;
    // The crash came after the append and before the cursor was saved.
    let parked = read_records(s.dlq.partitions[0].reader(), &[0, 1, 2]);
    let intent = Intent {
        from: 0,
        to: 3,
        source_end: s.source.partitions[0].reader().end_offset(),
    };
    let state = RedriveState {
        cursors: BTreeMap::new(),
        intents: [(0, intent)].into(),
    };
    save(&StdFs, &s.dir, &state).expect("save");
    s.source.partitions[0]
        .append(redrive_batch(&parked, 0).expect("batch"))
        .await
        .expect("append");
    let report = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        all(),
        &no_stop(),
    )
    .await
    .expect("redrive");
    assert_eq!(report.moved(), 0, "moved again: {report:?}");
    assert_eq!(s.source.partitions[0].reader().end_offset(), 3);
    assert_eq!(
        load(&StdFs, &s.dir).expect("load").cursors.get(&0),
        Some(&3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redriven_twice_is_found_by_its_latest_redrive_link() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = setup(tmp.path(), &[]).await;
    // Redriven once from DLQ offset 7, parked again, redriven again from
    // DLQ offset 1: the first link is still among its headers.
    let mut b = BatchBuilder::new();
    b.push(
        None,
        b"twice",
        &[
            ("pigeon.redrive.dlq-offset", b"7"),
            ("pigeon.redrive.dlq-partition", b"0"),
            ("pigeon.redrive.dlq-offset", b"1"),
            ("pigeon.redrive.dlq-partition", b"0"),
        ],
    );
    let batch = RecordBatch::validate(b.build(ProducerStamp::NONE, 0), usize::MAX).expect("batch");
    s.source.partitions[0].append(batch).await.expect("append");
    assert!(
        landed(&s.source, 0, 0, 0, 1).expect("read"),
        "the latest link counts"
    );
    assert!(
        !landed(&s.source, 0, 0, 0, 7).expect("read"),
        "an earlier link is history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_did_not_land_before_a_crash_is_moved_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = setup(tmp.path(), &ours(3)).await;
    let intent = Intent {
        from: 0,
        to: 3,
        source_end: 0,
    };
    let state = RedriveState {
        cursors: BTreeMap::new(),
        intents: [(0, intent)].into(),
    };
    save(&StdFs, &s.dir, &state).expect("save");
    let options = RedriveOptions {
        list: true,
        ..all()
    };
    let report = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        options,
        &no_stop(),
    )
    .await
    .expect("redrive");
    let moved: Vec<(u64, u64)> = report
        .messages
        .iter()
        .map(|m| (m.dlq_offset, m.new_offset))
        .collect();
    assert_eq!(moved, vec![(0, 0), (1, 1), (2, 2)]);
    let again = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        all(),
        &no_stop(),
    )
    .await
    .expect("again");
    assert_eq!(again.moved(), 0);
    assert!(again.partitions.is_empty(), "nothing looked at: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_groups_own_copies_move_and_the_others_are_skipped_and_stay() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut parked = Vec::new();
    for i in 0..700 {
        let group = if i % 7 == 3 { "other" } else { "g" };
        parked.push((group, format!("{group} {i}").into_bytes()));
    }
    let s = setup(tmp.path(), &parked).await;
    let dry = RedriveOptions {
        dry_run: true,
        ..all()
    };
    let would = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        dry,
        &no_stop(),
    )
    .await
    .expect("dry run");
    assert_eq!((would.moved(), would.skipped()), (600, 100));
    assert_eq!(
        s.source.partitions[0].reader().end_offset(),
        0,
        "a dry run moves nothing"
    );

    let report = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        all(),
        &no_stop(),
    )
    .await
    .expect("redrive");
    assert_eq!(report.outcome, RedriveOutcome::Done);
    assert_eq!(
        report.partitions,
        [PartitionReport {
            partition: 0,
            dlq_from: 0,
            dlq_to: 700,
            moved: 600,
            skipped: 100,
            new_offsets: Some((0, 600)),
        }]
    );
    assert!(report.messages.is_empty(), "not listed unless asked");
    let expected: Vec<String> = (0..700)
        .filter(|i| i % 7 != 3)
        .map(|i| format!("g {i}"))
        .collect();
    assert_eq!(values(&s.source), expected, "in DLQ order, each once");
    assert_eq!(
        s.dlq.partitions[0].reader().end_offset(),
        700,
        "the DLQ keeps everything"
    );
    let again = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        all(),
        &no_stop(),
    )
    .await
    .expect("again");
    assert_eq!(again.moved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_stops_the_run_and_the_next_run_goes_on_from_there() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = setup(tmp.path(), &ours(300)).await;
    let some = RedriveOptions { max: 10, ..all() };
    let first = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        some,
        &no_stop(),
    )
    .await
    .expect("first");
    assert_eq!(
        (first.moved(), first.outcome),
        (10, RedriveOutcome::MaxReached)
    );
    assert_eq!(first.partitions[0].dlq_to, 10);
    let rest = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        all(),
        &no_stop(),
    )
    .await
    .expect("rest");
    assert_eq!((rest.moved(), rest.outcome), (290, RedriveOutcome::Done));
    assert_eq!(rest.partitions[0].dlq_from, 10);
    assert_eq!(values(&s.source).len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_the_run_between_pages_and_the_next_run_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = setup(tmp.path(), &ours(300)).await;
    let shutdown = CancellationToken::new();
    let stop = Stop::new(shutdown.clone(), CancellationToken::new());
    // 10 a second: after its first page the run paces for 25 s.
    let slow = RedriveOptions {
        rate_per_sec: 10,
        ..all()
    };
    let run = {
        let (source, dlq, dir) = (s.source.clone(), s.dlq.clone(), s.dir.clone());
        tokio::spawn(
            async move { redrive(&StdFs, &dir, &source, &dlq, &filter(), slow, &stop).await },
        )
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.source.partitions[0].reader().end_offset() < PAGE_MESSAGES {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first page never landed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let report = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("the stop ends the pacing at once")
        .expect("task")
        .expect("redrive");
    assert_eq!(report.outcome, RedriveOutcome::Interrupted);
    assert_eq!(report.moved(), PAGE_MESSAGES);
    let rest = redrive(
        &StdFs,
        &s.dir,
        &s.source,
        &s.dlq,
        &filter(),
        all(),
        &no_stop(),
    )
    .await
    .expect("rest");
    assert_eq!(rest.moved(), 300 - PAGE_MESSAGES);
    assert_eq!(
        values(&s.source),
        (0..300).map(|i| format!("parked {i}")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_holds_about_a_mebibyte_of_messages_at_least_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let big = vec![b'x'; 300 * 1024];
    let huge = vec![b'y'; 3 << 20];
    let s = setup(
        tmp.path(),
        &[
            ("g", huge),
            ("g", big.clone()),
            ("g", big.clone()),
            ("g", big.clone()),
            ("g", big.clone()),
            ("g", big),
        ],
    )
    .await;
    let reader = s.dlq.partitions[0].reader();
    let first = page::read(reader, 0, 6, PAGE_MESSAGES, &filter()).expect("page");
    assert_eq!(
        (first.records.len(), first.to),
        (1, 1),
        "one message over the budget alone"
    );
    let second = page::read(reader, 1, 6, PAGE_MESSAGES, &filter()).expect("page");
    assert_eq!(
        (second.records.len(), second.to),
        (4, 5),
        "300 KiB messages up to the first past 1 MiB"
    );
}
