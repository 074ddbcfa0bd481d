//! Tests of a group's journal over a long life: the journal writer
//! snapshots each partition every `snapshot_every` bytes of journal and
//! deletes the segments a snapshot covers, so the journal on disk and the
//! replay at open stay bounded however many messages the group handles;
//! and recovery from a snapshot plus the journal after it (including a
//! journal that ends before its snapshot, and one trimmed without a
//! snapshot) rebuilds exactly the state that was made durable.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::journal_writer::JournalWriter;
use super::store::{GroupMeta, GroupStore, SNAPSHOT_FILE};
use super::*;
use crate::io::StdFs;
use crate::log::{Clock, LogConfig, SystemClock};

const NOW: i64 = 1_000_000;

fn journal_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

fn create(dir: &Path, partitions: usize) -> (GroupStore, Vec<PartitionDelivery>) {
    let meta = GroupMeta::new("t", "g", &GroupSettings::default(), 1);
    GroupStore::create(
        Arc::new(StdFs),
        dir,
        meta,
        &vec![0; partitions],
        journal_config(),
        Arc::new(SystemClock),
    )
    .expect("create")
}

fn reopen(dir: &Path, partitions: usize) -> Result<(GroupStore, Vec<PartitionDelivery>), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    GroupStore::open(
        Arc::new(StdFs),
        dir,
        &vec![0; partitions],
        journal_config(),
        clock,
    )
    .map_err(|e| e.to_string())
}

/// The two states compared as a restart sees them: open leases recovered.
fn assert_same_after_restart(live: &[PartitionDelivery], recovered: &[PartitionDelivery]) {
    let settings = GroupSettings::default();
    assert_eq!(live.len(), recovered.len());
    for (p, (live, recovered)) in live.iter().zip(recovered).enumerate() {
        let (mut live, mut recovered) = (live.clone(), recovered.clone());
        live.recover_leases(NOW, &settings);
        recovered.recover_leases(NOW, &settings);
        live.take_events();
        recovered.take_events();
        assert_eq!(recovered, live, "partition {p}");
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("journal dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count()
}

/// One round of a busy group: `n` new messages delivered; most acked, one
/// nacked, one left in flight.
fn busy_round(state: &mut PartitionDelivery, n: u64, jitter: &mut Jitter) {
    let settings = GroupSettings::default();
    let end = state.parts().next + n;
    let got = state.deliver(1, n as usize, NOW, end, &settings);
    for (i, d) in got.iter().enumerate() {
        match i {
            0 => {
                state
                    .nack(1, d.offset, Some(60_000), NOW, &settings, jitter)
                    .expect("nack");
            }
            1 => {}
            _ => state.ack(1, d.offset).expect("ack"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_running_group_keeps_its_journal_small_and_reopens_to_the_same_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("t").join("g");
    let (store, mut states) = create(&dir, 2);
    let store = store.with_snapshot_every(4096);
    let writer = JournalWriter::spawn(
        store.journals(),
        store.snapshot_files(),
        store.snapshot_every(),
    );
    let mut jitter = Jitter::new(9);
    // 40,000 messages on partition 0 (about 80,000 events, some 2.5 MB of
    // journal without snapshots), a few on partition 1.
    for round in 0..400 {
        busy_round(&mut states[0], 100, &mut jitter);
        if round % 100 == 0 {
            busy_round(&mut states[1], 10, &mut jitter);
        }
        writer.hand_over(&mut states).await;
    }
    assert!(writer.durable(&mut states).await, "every append succeeded");
    let journal = store.journal(0).expect("journal");
    assert!(
        journal.reader().start_offset() > 70_000,
        "segments covered by a snapshot were deleted (journal starts at {})",
        journal.reader().start_offset()
    );
    let segments = segment_files(&dir.join("0"));
    assert!(
        segments <= 4,
        "{segments} journal segments are left of about 600"
    );
    assert!(dir.join("0").join(SNAPSHOT_FILE).exists());
    // Crash: the journals stop without a clean close.
    drop(writer);
    std::mem::forget(store);
    let (_reopened, recovered) = reopen(&dir, 2).expect("open");
    assert_same_after_restart(&states, &recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_snapshots_every_partition_so_the_next_open_replays_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("t").join("g");
    let (store, mut states) = create(&dir, 2);
    let writer = JournalWriter::spawn(store.journals(), store.snapshot_files(), u64::MAX);
    let mut jitter = Jitter::new(3);
    busy_round(&mut states[0], 50, &mut jitter);
    busy_round(&mut states[1], 5, &mut jitter);
    assert!(writer.durable_with_snapshots(&mut states).await);
    for p in 0..2 {
        let bytes = std::fs::read(dir.join(p.to_string()).join(SNAPSHOT_FILE)).expect("snapshot");
        let (_, covered) = snapshot::decode(&bytes).expect("decodes");
        let end = store.journal(p).expect("journal").reader().end_offset();
        assert_eq!(
            covered, end,
            "partition {p}'s snapshot covers its whole journal"
        );
    }
    drop(writer);
    store.close().await;
    let (_reopened, recovered) = reopen(&dir, 2).expect("open");
    assert_same_after_restart(&states, &recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_ends_before_its_snapshot_keeps_the_events_appended_after_the_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("t").join("g");
    let (store, mut states) = create(&dir, 1);
    let mut jitter = Jitter::new(5);
    busy_round(&mut states[0], 20, &mut jitter);
    let end = store
        .append(0, &states[0].take_events())
        .await
        .expect("append");
    // A snapshot that claims more journal than there is (its tail lost,
    // e.g. a restored backup of the journal).
    store
        .snapshot_files()
        .write(0, &states[0].parts(), end + 100)
        .expect("snapshot");
    store.close().await;
    let (store, mut recovered) = reopen(&dir, 1).expect("open");
    assert_same_after_restart(&states, &recovered);
    // Work after the open lands at journal offsets below the old claim...
    busy_round(&mut recovered[0], 20, &mut jitter);
    store
        .append(0, &recovered[0].take_events())
        .await
        .expect("append");
    std::mem::forget(store);
    // ...and is replayed at the next open.
    let (_store, again) = reopen(&dir, 1).expect("open again");
    assert_same_after_restart(&recovered, &again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_journal_without_its_snapshot_fails_the_open_saying_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("t").join("g");
    let (store, states) = create(&dir, 1);
    let mut states = states;
    let store = store.with_snapshot_every(4096);
    let writer = JournalWriter::spawn(
        store.journals(),
        store.snapshot_files(),
        store.snapshot_every(),
    );
    let mut jitter = Jitter::new(5);
    for _ in 0..50 {
        busy_round(&mut states[0], 100, &mut jitter);
        writer.hand_over(&mut states).await;
    }
    assert!(writer.durable(&mut states).await);
    assert!(store.journal(0).expect("journal").reader().start_offset() > 0);
    drop(writer);
    store.close().await;
    std::fs::remove_file(dir.join("0").join(SNAPSHOT_FILE)).expect("remove");
    let err = reopen(&dir, 1).expect_err("the state before the journal's start is gone");
    assert!(
        err.contains("no snapshot covers") && err.contains(SNAPSHOT_FILE),
        "{err}"
    );
}

/// One step of the random history of a group partition.
#[derive(Debug, Clone)]
enum Step {
    /// Deliver up to n new or due messages.
    Deliver(u64),
    /// Ack the i-th lease (modulo those open).
    Ack(usize),
    /// Nack the i-th lease.
    Nack(usize),
    /// Move the partition to a target below its end.
    Seek(u64),
    /// Hand the events over to the writer.
    HandOver,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..40).prop_map(Step::Deliver),
        6 => (0usize..64).prop_map(Step::Ack),
        1 => (0usize..64).prop_map(Step::Nack),
        1 => (0u64..1000).prop_map(Step::Seek),
        2 => Just(Step::HandOver),
    ]
}

fn apply(state: &mut PartitionDelivery, step: &Step, jitter: &mut Jitter) {
    let settings = GroupSettings::default();
    let leased = || -> Vec<u64> {
        let parts = state.parts();
        parts.leases.iter().map(|(o, _, _)| *o).collect()
    };
    match step {
        Step::Deliver(n) => {
            let end = state.parts().next + n;
            state.deliver(1, *n as usize, NOW, end, &settings);
        }
        Step::Ack(i) | Step::Nack(i) => {
            let open = leased();
            if open.is_empty() {
                return;
            }
            let offset = open[i % open.len()];
            if matches!(step, Step::Ack(_)) {
                state.ack(1, offset).expect("ack");
            } else {
                state
                    .nack(1, offset, Some(1), NOW, &settings, jitter)
                    .expect("nack");
            }
        }
        Step::Seek(to) => {
            let next = state.parts().next;
            state.seek(to % (next + 1));
        }
        Step::HandOver => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the history, the snapshot interval and whether the group
    /// stops cleanly or crashes right after its last durable point, the
    /// reopened state equals the live one.
    #[test]
    fn replay_from_snapshots_and_trimmed_journals_rebuilds_the_durable_state(
        steps in proptest::collection::vec(step(), 1..300),
        snapshot_every in 64u64..4096,
        clean_stop in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path().join("t").join("g");
            let (store, mut states) = create(&dir, 1);
            let store = store.with_snapshot_every(snapshot_every);
            let writer = JournalWriter::spawn(
                store.journals(),
                store.snapshot_files(),
                store.snapshot_every(),
            );
            let mut jitter = Jitter::new(11);
            for step in &steps {
                apply(&mut states[0], step, &mut jitter);
                if matches!(step, Step::HandOver) {
                    writer.hand_over(&mut states).await;
                }
            }
            if clean_stop {
                assert!(writer.durable_with_snapshots(&mut states).await);
                drop(writer);
                store.close().await;
            } else {
                assert!(writer.durable(&mut states).await);
                drop(writer);
                std::mem::forget(store);
            }
            let (_store, recovered) = reopen(&dir, 1).expect("open");
            assert_same_after_restart(&states, &recovered);
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_larger_than_a_journal_batch_is_appended_in_order_in_several_batches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("t").join("g");
    let (store, mut states) = create(&dir, 1);
    // 300,000 messages leased at once, then acked: some 9 MB of events in
    // one hand-over, more than one journal batch holds.
    let settings = GroupSettings::default();
    states[0].deliver(1, 300_000, NOW, 300_000, &settings);
    for offset in 0..300_000 {
        states[0].ack(1, offset).expect("ack");
    }
    let events = states[0].take_events();
    let end = store.append(0, &events).await.expect("append");
    assert_eq!(end, events.len() as u64, "one record per event");
    std::mem::forget(store);
    let (_store, recovered) = reopen(&dir, 1).expect("open");
    assert_same_after_restart(&states, &recovered);
}
