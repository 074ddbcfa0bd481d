//! Idempotent producer state of one partition: for each producer id, its
//! epoch and the sequence numbers and offsets of its last few batches, so
//! that a retried batch is answered with its original offsets instead of
//! being appended twice.
//!
//! ## Rules (checked in the partition's writer, before a batch is staged)
//!
//! | batch | state of its producer id | outcome |
//! | --- | --- | --- |
//! | producer id −1 | any | not idempotent: append |
//! | epoch < current epoch (registry or partition) | any | `ProducerFenced` |
//! | epoch > partition's epoch | any | new session: sequence must be 0 |
//! | same epoch | `base_sequence` = last + 1 | append |
//! | same epoch | equals one of the last [`CACHED_BATCHES`] batches | duplicate: original offsets |
//! | same epoch | ≤ last, not cached | `OutOfOrderSequence` (too old to answer) |
//! | same epoch | > last + 1 | `OutOfOrderSequence` (gap) |
//! | unknown producer id | — | sequence must be 0, else `UnknownProducer` |
//!
//! Sequences are i32 and wrap from `i32::MAX` to 0.
//!
//! ## Persistence
//!
//! The table is rebuilt from batch headers: recovery replays the headers it
//! scans. To avoid scanning the whole log, the table is snapshotted (see
//! [`ProducerTable::encode`]) next to each checkpoint; recovery loads the
//! snapshot taken at the checkpoint and replays only the tail. Producers idle
//! longer than the expiry (7 days by default) are dropped at snapshot time.
//! When the snapshot is missing or damaged, recovery replays every segment
//! whose newest batch is within the expiry, so that every producer that
//! could still retry is known again (a retry is answered, never appended
//! twice); that walk is the one case where opening reads more than the
//! tail. After recovery, batches at or past the recovered end are
//! forgotten ([`ProducerTable::forget_from`]).

use std::collections::BTreeMap;

use pigeon_protocol::batch::BatchHeader;

use crate::io::{LeCursor, seal, unseal};

/// Where a partition learns the current epoch of a producer id: the
/// broker's producer registry, so that a zombie is fenced even in
/// partitions the new instance has not written to yet.
pub trait EpochSource: Send + Sync + std::fmt::Debug {
    /// The newest registered epoch of `producer_id`, if known.
    fn current_epoch(&self, producer_id: i64) -> Option<i16>;
}

/// File name of the snapshot inside a partition directory.
pub const SNAPSHOT_FILE: &str = "producers.snapshot";

/// Batches remembered per producer and partition for answering retries.
pub const CACHED_BATCHES: usize = 5;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord {
    /// Sequence of its first record.
    pub first_sequence: i32,
    /// Sequence of its last record.
    pub last_sequence: i32,
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// Its append time.
    pub timestamp: i64,
}

/// What a partition knows of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Epoch of its latest batch here.
    pub epoch: i16,
    /// Its last batches, oldest first (at most [`CACHED_BATCHES`]).
    pub batches: Vec<BatchRecord>,
    /// Append time of its latest batch, for expiry.
    pub last_timestamp: i64,
}

/// The outcome of checking a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Append it.
    Append,
    /// Already appended: answer with these offsets.
    Duplicate(BatchRecord),
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// A newer epoch of this producer exists.
    #[error(
        "producer {producer_id} epoch {epoch} is fenced: epoch {current} has registered since (another instance took over this producer name)"
    )]
    Fenced {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The current epoch.
        current: i16,
    },
    /// A gap, or a sequence too old to answer.
    #[error("producer {producer_id} sent sequence {got} where {expected} was expected: {why}")]
    OutOfOrder {
        /// The producer id.
        producer_id: i64,
        /// The batch's base sequence.
        got: i32,
        /// The next sequence expected.
        expected: i32,
        /// A gap or an old batch.
        why: &'static str,
    },
    /// No state for this producer here and the sequence is not 0.
    #[error(
        "producer {producer_id} has no state in this partition (expired or never written) and sent sequence {got}; register the producer again"
    )]
    Unknown {
        /// The producer id.
        producer_id: i64,
        /// The batch's base sequence.
        got: i32,
    },
}

/// The producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerTable {
    entries: BTreeMap<i64, ProducerEntry>,
}

/// The sequence after `last` (wrapping).
pub fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

/// The last sequence of a batch of `count` records starting at `first`.
pub fn last_sequence(first: i32, count: u32) -> i32 {
    ((i64::from(first) + i64::from(count) - 1) % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerTable {
    /// An empty table.
    pub fn new() -> ProducerTable {
        ProducerTable::default()
    }

    /// Producers tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `producer_id`.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    /// Checks a batch; `current_epoch` is the registry's epoch for its
    /// producer id, if the registry knows it.
    pub fn check(
        &self,
        header: &BatchHeader,
        current_epoch: Option<i16>,
    ) -> Result<Check, SequenceError> {
        let stamp = header.producer;
        if !stamp.is_idempotent() {
            return Ok(Check::Append);
        }
        let (pid, epoch, first) = (stamp.producer_id, stamp.producer_epoch, stamp.base_sequence);
        let entry = self.entries.get(&pid);
        let current = current_epoch
            .into_iter()
            .chain(entry.map(|e| e.epoch))
            .max();
        if let Some(current) = current.filter(|c| epoch < *c) {
            return Err(SequenceError::Fenced {
                producer_id: pid,
                epoch,
                current,
            });
        }
        let Some(entry) = entry.filter(|e| e.epoch == epoch) else {
            // A new producer here, or a new epoch: sequences start at 0.
            return match first {
                0 => Ok(Check::Append),
                got if entry.is_some() => Err(SequenceError::OutOfOrder {
                    producer_id: pid,
                    got,
                    expected: 0,
                    why: "a new epoch starts at sequence 0",
                }),
                got => Err(SequenceError::Unknown {
                    producer_id: pid,
                    got,
                }),
            };
        };
        let last = entry.batches.last().map_or(-1, |b| b.last_sequence);
        let expected = next_sequence(last);
        if first == expected {
            return Ok(Check::Append);
        }
        let count = header.record_count;
        if let Some(cached) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == first && b.last_sequence == last_sequence(first, count))
        {
            return Ok(Check::Duplicate(*cached));
        }
        let why = if is_before(first, expected) {
            "an old batch that is no longer cached"
        } else {
            "a gap: a batch in between is missing"
        };
        Err(SequenceError::OutOfOrder {
            producer_id: pid,
            got: first,
            expected,
            why,
        })
    }

    /// Records an appended (or replayed) batch.
    pub fn apply(&mut self, header: &BatchHeader) {
        let stamp = header.producer;
        if !stamp.is_idempotent() {
            return;
        }
        let record = BatchRecord {
            first_sequence: stamp.base_sequence,
            last_sequence: last_sequence(stamp.base_sequence, header.record_count),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            timestamp: header.max_timestamp,
        };
        let entry = self
            .entries
            .entry(stamp.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: stamp.producer_epoch,
                batches: Vec::new(),
                last_timestamp: record.timestamp,
            });
        if stamp.producer_epoch != entry.epoch {
            entry.epoch = stamp.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push(record);
        if entry.batches.len() > CACHED_BATCHES {
            entry.batches.remove(0);
        }
        entry.last_timestamp = entry.last_timestamp.max(record.timestamp);
    }

    /// Saves the entry of `producer_id` (to undo an apply).
    pub fn entry_of(&self, producer_id: i64) -> Option<ProducerEntry> {
        self.entries.get(&producer_id).cloned()
    }

    /// Puts back a saved entry (or removes it).
    pub fn restore(&mut self, producer_id: i64, entry: Option<ProducerEntry>) {
        match entry {
            Some(entry) => self.entries.insert(producer_id, entry),
            None => self.entries.remove(&producer_id),
        };
    }

    /// Forgets every batch at or after `offset` (recovery cut the log
    /// there, so a retry of such a batch must be appended again), and the
    /// producers left with no batch: to this partition they are new.
    pub fn forget_from(&mut self, offset: u64) {
        self.entries.retain(|pid, entry| {
            let before = entry.batches.len();
            entry.batches.retain(|b| b.last_offset < offset);
            if entry.batches.len() < before {
                tracing::info!(
                    producer_id = pid,
                    forgotten = before - entry.batches.len(),
                    offset,
                    "forgetting producer batches past the end of the recovered log"
                );
            }
            !entry.batches.is_empty()
        });
    }

    /// Drops producers whose latest batch is older than `expiry_ms`.
    pub fn expire(&mut self, now_ms: i64, expiry_ms: u64) {
        let expiry = i64::try_from(expiry_ms).unwrap_or(i64::MAX);
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) <= expiry);
    }

    /// Encodes the table as of log offset `offset` (snapshot file body).
    ///
    /// | field | type |
    /// | --- | --- |
    /// | magic | `PGPS` |
    /// | version | u16 = 1 |
    /// | offset | u64: the log's next offset when the snapshot was taken |
    /// | count | u32 |
    /// | per producer: id i64, epoch i16, last_timestamp i64, batches u8, per batch: first_sequence i32, last_sequence i32, base_offset u64, last_offset u64, timestamp i64 | |
    /// | crc | u32 of everything before |
    pub fn encode(&self, offset: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(22 + self.entries.len() * 64);
        out.extend_from_slice(b"PGPS");
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (pid, entry) in &self.entries {
            out.extend_from_slice(&pid.to_le_bytes());
            out.extend_from_slice(&entry.epoch.to_le_bytes());
            out.extend_from_slice(&entry.last_timestamp.to_le_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_sequence.to_le_bytes());
                out.extend_from_slice(&b.last_sequence.to_le_bytes());
                out.extend_from_slice(&b.base_offset.to_le_bytes());
                out.extend_from_slice(&b.last_offset.to_le_bytes());
                out.extend_from_slice(&b.timestamp.to_le_bytes());
            }
        }
        seal(&mut out);
        out
    }

    /// Decodes a snapshot into its offset and table; `None` if damaged.
    pub fn decode(bytes: &[u8]) -> Option<(u64, ProducerTable)> {
        let mut r = LeCursor::new(unseal(bytes)?);
        if r.take(4)? != b"PGPS" || r.u16()? != 1 {
            return None;
        }
        let offset = r.u64()?;
        let count = r.u32()?;
        let mut table = ProducerTable::new();
        for _ in 0..count {
            let pid = r.u64()? as i64;
            let epoch = r.u16()? as i16;
            let last_timestamp = r.u64()? as i64;
            let n = r.u8()? as usize;
            if n > CACHED_BATCHES {
                return None;
            }
            let mut batches = Vec::with_capacity(n);
            for _ in 0..n {
                batches.push(BatchRecord {
                    first_sequence: r.u32()? as i32,
                    last_sequence: r.u32()? as i32,
                    base_offset: r.u64()?,
                    last_offset: r.u64()?,
                    timestamp: r.u64()? as i64,
                });
            }
            table.entries.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                },
            );
        }
        r.is_empty().then_some((offset, table))
    }
}

/// Whether sequence `a` comes before `b`, allowing for wrap-around.
fn is_before(a: i32, b: i32) -> bool {
    let distance = (i64::from(b) - i64::from(a)).rem_euclid(i64::from(i32::MAX) + 1);
    distance > 0 && distance < i64::from(i32::MAX) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_protocol::batch::ProducerStamp;
    use proptest::prelude::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: u32, base_offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            crc: 0,
            magic: 1,
            attributes: 0,
            record_count: count,
            first_timestamp: 1000,
            max_timestamp: 1000,
            producer: ProducerStamp {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
            },
        }
    }

    #[test]
    fn accepts_in_order_and_answers_retries_with_original_offsets() {
        let mut table = ProducerTable::new();
        let first = header(7, 0, 0, 3, 100);
        assert_eq!(table.check(&first, Some(0)), Ok(Check::Append));
        table.apply(&first);
        let second = header(7, 0, 3, 2, 103);
        assert_eq!(table.check(&second, Some(0)), Ok(Check::Append));
        table.apply(&second);
        match table.check(&header(7, 0, 0, 3, 0), Some(0)) {
            Ok(Check::Duplicate(b)) => assert_eq!((b.base_offset, b.last_offset), (100, 102)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_gaps_stale_epochs_and_unknown_producers() {
        let mut table = ProducerTable::new();
        table.apply(&header(7, 1, 0, 1, 0));
        assert!(matches!(
            table.check(&header(7, 1, 2, 1, 0), Some(1)),
            Err(SequenceError::OutOfOrder { expected: 1, .. })
        ));
        assert!(matches!(
            table.check(&header(7, 0, 1, 1, 0), Some(1)),
            Err(SequenceError::Fenced { current: 1, .. })
        ));
        // The registry knows of a newer epoch even before it wrote here.
        assert!(matches!(
            table.check(&header(7, 1, 1, 1, 0), Some(2)),
            Err(SequenceError::Fenced { current: 2, .. })
        ));
        assert!(matches!(
            table.check(&header(9, 0, 5, 1, 0), None),
            Err(SequenceError::Unknown { .. })
        ));
        assert_eq!(
            table.check(&header(7, 2, 0, 1, 0), Some(2)),
            Ok(Check::Append),
            "a new epoch starts at 0"
        );
        assert!(matches!(
            table.check(&header(7, 2, 4, 1, 0), Some(2)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
    }

    #[test]
    fn sequences_wrap() {
        let mut table = ProducerTable::new();
        table.apply(&header(1, 0, 0, 1, 0));
        let mut h = header(1, 0, 1, 1, 1);
        h.producer.base_sequence = i32::MAX - 1;
        table.entries.get_mut(&1).expect("entry").batches[0].last_sequence = i32::MAX - 2;
        assert_eq!(table.check(&h, None), Ok(Check::Append));
        h.record_count = 3;
        table.apply(&h);
        assert_eq!(
            table
                .get(1)
                .expect("entry")
                .batches
                .last()
                .expect("batch")
                .last_sequence,
            0
        );
        assert_eq!(table.check(&header(1, 0, 1, 1, 9), None), Ok(Check::Append));
    }

    #[test]
    fn snapshots_round_trip_and_detect_damage() {
        let mut table = ProducerTable::new();
        for i in 0..8 {
            table.apply(&header(3, 0, i, 1, i as u64));
            table.apply(&header(4, 2, i * 2, 2, 100 + i as u64));
        }
        let bytes = table.encode(77);
        assert_eq!(ProducerTable::decode(&bytes), Some((77, table.clone())));
        for at in [0, 5, 20, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert_eq!(ProducerTable::decode(&damaged), None);
        }
        assert_eq!(ProducerTable::decode(&bytes[..bytes.len() - 3]), None);
    }

    #[test]
    fn forgetting_from_an_offset_drops_later_batches_and_emptied_producers() {
        let mut table = ProducerTable::new();
        for seq in 0..3 {
            table.apply(&header(1, 0, seq, 1, 10 + seq as u64));
        }
        table.apply(&header(2, 0, 0, 2, 11));
        table.forget_from(11);
        let kept = table.get(1).expect("producer 1 keeps its batch at 10");
        assert_eq!(kept.batches.len(), 1);
        assert_eq!(kept.batches[0].last_offset, 10);
        assert!(table.get(2).is_none(), "producer 2 had only cut batches");
        assert_eq!(
            table.check(&header(1, 0, 1, 1, 0), Some(0)),
            Ok(Check::Append),
            "the cut sequence is appended again"
        );
    }

    #[test]
    fn idle_producers_expire() {
        let mut table = ProducerTable::new();
        table.apply(&header(1, 0, 0, 1, 0));
        table.expire(1000 + 50, 100);
        assert_eq!(table.len(), 1);
        table.expire(1000 + 101, 100);
        assert!(table.is_empty());
    }

    /// What a producer does, in the model test.
    #[derive(Debug, Clone)]
    enum Act {
        /// Send the next batch of `n` records.
        New(u32),
        /// Resend one of the batches already sent (index from the end).
        Retry(usize),
        /// Send a batch skipping ahead.
        Skip(u32),
        /// A zombie instance with the previous epoch sends.
        Stale,
        /// The producer registers again: a new epoch.
        Bump,
    }

    fn act() -> impl Strategy<Value = Act> {
        prop_oneof![
            5 => (1u32..5).prop_map(Act::New),
            3 => (0usize..8).prop_map(Act::Retry),
            1 => (2u32..5).prop_map(Act::Skip),
            1 => Just(Act::Stale),
            1 => Just(Act::Bump),
        ]
    }

    proptest! {
        /// Random interleavings of new, retried, out-of-order and stale
        /// batches against a model: the log (a list of appended batches)
        /// never holds a sequence twice, retries get their original offsets
        /// while cached, and refused batches are exactly the invalid ones.
        #[test]
        fn sequence_checker_matches_model(acts in proptest::collection::vec(act(), 1..80)) {
            let mut table = ProducerTable::new();
            let mut epoch: i16 = 0;
            let mut next_seq: i32 = 0;
            let mut log_end: u64 = 0;
            // (epoch, first seq, count, base offset) of every appended batch.
            let mut appended: Vec<(i16, i32, u32, u64)> = Vec::new();
            for act in acts {
                let (e, seq, count) = match act {
                    Act::New(n) => (epoch, next_seq, n),
                    Act::Retry(back) => {
                        let mine: Vec<_> = appended.iter().filter(|b| b.0 == epoch).collect();
                        let Some(b) = mine.iter().rev().nth(back) else { continue };
                        (b.0, b.1, b.2)
                    }
                    Act::Skip(n) => (epoch, next_seq + n as i32, 1),
                    Act::Stale => (epoch - 1, 0, 1),
                    Act::Bump => { epoch += 1; next_seq = 0; continue; }
                };
                let h = header(1, e, seq, count, log_end);
                let outcome = table.check(&h, Some(epoch));
                match act {
                    Act::New(_) => {
                        prop_assert_eq!(&outcome, &Ok(Check::Append));
                        table.apply(&h);
                        appended.push((e, seq, count, log_end));
                        log_end += u64::from(count);
                        next_seq += count as i32;
                    }
                    Act::Retry(back) => {
                        let original = appended.iter().rev().filter(|b| b.0 == epoch).nth(back).expect("chosen above");
                        if back < CACHED_BATCHES {
                            match outcome {
                                Ok(Check::Duplicate(b)) => prop_assert_eq!(b.base_offset, original.3),
                                other => prop_assert!(false, "retry of a cached batch answered {:?}", other),
                            }
                        } else {
                            let refused = matches!(outcome, Err(SequenceError::OutOfOrder { .. }));
                            prop_assert!(refused, "retry of an old batch answered {:?}", outcome);
                        }
                    }
                    Act::Skip(_) => {
                        let refused = matches!(outcome, Err(SequenceError::OutOfOrder { .. }) | Err(SequenceError::Unknown { .. }));
                        prop_assert!(refused, "a gap was accepted: {:?}", outcome);
                    }
                    Act::Stale => {
                        prop_assert!(matches!(outcome, Err(SequenceError::Fenced { .. })), "a stale epoch was accepted: {:?}", outcome);
                    }
                    Act::Bump => unreachable!(),
                }
            }
            // No sequence of any epoch was appended twice.
            let mut seen = std::collections::HashSet::new();
            for (e, seq, count, _) in &appended {
                for s in *seq..*seq + *count as i32 {
                    prop_assert!(seen.insert((*e, s)), "sequence {} of epoch {} appended twice", s, e);
                }
            }
        }
    }
}
