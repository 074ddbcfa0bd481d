//! Fixtures of the engine's tests: an in-memory source topic and
//! dead-letter sink, group settings, and an engine over them without
//! storage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use pigeon_protocol::batch::Record;

use super::engine::{DeadLetterSink, GroupDelivery, GroupHandle, SourceReader, start};
use super::{DeadLetter, DeadLetterReason, GroupSettings, PartitionDelivery};

/// Records in memory; with `ends`, it offers log end watches like a
/// real topic.
#[derive(Default)]
pub(super) struct MemSource(
    pub(super) Mutex<Vec<Vec<Record>>>,
    pub(super) Option<Vec<tokio::sync::watch::Sender<u64>>>,
    /// `(partition, offset)`s whose reads fail (left out of `records`).
    pub(super) Mutex<std::collections::HashSet<(usize, u64)>>,
);

impl MemSource {
    pub(super) fn with(partitions: usize, per_partition: u64) -> Arc<MemSource> {
        Self::build(partitions, per_partition, false)
    }

    pub(super) fn watched(partitions: usize, per_partition: u64) -> Arc<MemSource> {
        Self::build(partitions, per_partition, true)
    }

    fn build(partitions: usize, per_partition: u64, watched: bool) -> Arc<MemSource> {
        let ends = watched.then(|| {
            (0..partitions)
                .map(|_| tokio::sync::watch::channel(0).0)
                .collect()
        });
        let source = MemSource(
            Mutex::new(vec![Vec::new(); partitions]),
            ends,
            Mutex::default(),
        );
        for p in 0..partitions {
            for _ in 0..per_partition {
                source.push(p, "m");
            }
        }
        Arc::new(source)
    }

    pub(super) fn push(&self, p: usize, value: &str) {
        let mut parts = self.0.lock();
        let offset = parts[p].len() as u64;
        parts[p].push(Record {
            offset,
            timestamp: 1,
            key: None,
            value: Bytes::from(format!("{value}-{p}-{offset}")),
            headers: Vec::new(),
        });
        if let Some(ends) = &self.1 {
            ends[p].send_replace(offset + 1);
        }
    }
}

impl SourceReader for MemSource {
    fn bounds(&self, partition: usize) -> (u64, u64) {
        (0, self.0.lock()[partition].len() as u64)
    }
    fn records(&self, partition: usize, offsets: &[u64]) -> Vec<Record> {
        let parts = self.0.lock();
        let unreadable = self.2.lock();
        offsets
            .iter()
            .filter(|o| !unreadable.contains(&(partition, **o)))
            .filter_map(|o| parts[partition].get(*o as usize).cloned())
            .collect()
    }
    fn end_watches(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        self.1.iter().flatten().map(|end| end.subscribe()).collect()
    }
}

#[derive(Default)]
pub(super) struct MemSink(pub(super) Mutex<Vec<(usize, u64, u32, DeadLetterReason)>>);

impl DeadLetterSink for MemSink {
    fn end_offset(&self, _partition: usize) -> u64 {
        self.0.lock().len() as u64
    }

    fn parked(
        &self,
        partition: usize,
        dead: &[DeadLetter],
    ) -> Result<std::collections::HashSet<u64>, String> {
        // Like the real sink: a copy counts from the dead letter's recorded
        // end offset on (a message parked, sought back to and parked again
        // has two copies).
        let written = self.0.lock();
        let parked = dead.iter().filter(|d| {
            let from = d.dlq_from.unwrap_or(0) as usize;
            written
                .iter()
                .skip(from)
                .any(|(p, offset, _, _)| *p == partition && *offset == d.offset)
        });
        Ok(parked.map(|d| d.offset).collect())
    }

    async fn write(
        &self,
        partition: usize,
        dead: &DeadLetter,
        record: &Record,
    ) -> Result<(), String> {
        assert_eq!(record.offset, dead.offset);
        self.0
            .lock()
            .push((partition, dead.offset, dead.attempts, dead.reason.clone()));
        Ok(())
    }
}

pub(super) fn settings() -> GroupSettings {
    GroupSettings {
        ack_timeout: Duration::from_secs(1),
        max_deliveries: 3,
        backoff_initial: Duration::from_millis(100),
        backoff_multiplier: 2.0,
        backoff_max: Duration::from_secs(10),
        backoff_jitter: 0.0,
        max_in_flight: 100,
    }
}

pub(super) fn start_engine(source: &Arc<MemSource>, sink: &Arc<MemSink>) -> GroupHandle {
    let partitions = source.0.lock().len();
    let states = (0..partitions).map(|_| PartitionDelivery::new(0)).collect();
    start(
        settings(),
        false,
        states,
        None,
        source.clone(),
        sink.clone(),
    )
}

pub(super) fn offsets(got: &[GroupDelivery]) -> Vec<(u32, u64, u32)> {
    let mut v: Vec<_> = got
        .iter()
        .map(|d| (d.partition, d.record.offset, d.attempt))
        .collect();
    v.sort_unstable();
    v
}
