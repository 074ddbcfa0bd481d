//! Snapshots of a partition's delivery state, so that recovery replays only
//! the journal written after the snapshot.
//!
//! Layout (little-endian), one file per group partition, replaced atomically:
//!
//! | field | type |
//! | --- | --- |
//! | magic | `PGDS` |
//! | version | u16 = 3 |
//! | journal_offset | u64: the journal offset the snapshot covers up to (exclusive) |
//! | floor, next, dead_lettered, removed_by_retention | u64 × 4 |
//! | settled | u32 count, then ranges (first u64, last u64, inclusive), in offset order, disjoint |
//! | leases | u32 count, then (offset u64, attempt u32, times) — open leases, recovered at restart |
//! | delayed | u32 count, then (due_ms i64, offset u64, attempts u32, times) |
//! | dead_lettering | u32 count, then (offset u64, attempts u32, times, dlq_from u64, reason u8, text: u16 length + UTF-8) |
//! | crc | u32: CRC-32 of everything before |
//!
//! `times` is the first and the latest delivery, u32 seconds since the
//! Unix epoch each. `dlq_from` is the dead-letter partition's end offset
//! when the dead-lettering started (where a restart looks for a copy
//! already written); `u64::MAX` when unknown (state written before it was
//! kept).
//!
//! Older versions, still read:
//!
//! | version | differs from 3 |
//! | --- | --- |
//! | 2 | `settled`: u32 count, then offsets u64, one by one; no `dlq_from` (read as unknown) |
//! | 1 | as 2, without the `times` fields (read with times 0) |
//!
//! Settled offsets are kept as ranges since version 3: the floor stops at
//! the oldest unsettled offset, so with offsets one by one a lease held for
//! hours made every later ack an 8-byte entry; a range is 16 bytes per gap.

use pigeon_protocol::truncate_at_char_boundary;

use super::journal::MAX_REASON_LEN;
use super::partition::{
    DeadLetter, DeadLetterReason, DeliveryTimes, PartitionDelivery, SnapshotParts,
};
use crate::io::{LeCursor, seal, unseal};

const MAGIC: &[u8; 4] = b"PGDS";
const VERSION: u16 = 3;
/// `dlq_from` of a dead letter whose DLQ offset is unknown.
const UNKNOWN_DLQ_FROM: u64 = u64::MAX;

fn put_times(out: &mut Vec<u8>, times: &DeliveryTimes) {
    out.extend_from_slice(&times.first_s.to_le_bytes());
    out.extend_from_slice(&times.last_s.to_le_bytes());
}

/// Encodes `state` as of journal offset `journal_offset`.
pub fn encode(state: &PartitionDelivery, journal_offset: u64) -> Vec<u8> {
    encode_parts(&state.parts(), journal_offset)
}

/// Encodes a state's parts (taken with [`PartitionDelivery::parts`]) as of
/// journal offset `journal_offset`.
pub fn encode_parts(parts: &SnapshotParts, journal_offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.settled.len() * 16 + parts.delayed.len() * 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for v in [
        journal_offset,
        parts.floor,
        parts.next,
        parts.dead_lettered,
        parts.removed_by_retention,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(parts.settled.len() as u32).to_le_bytes());
    for (first, last) in &parts.settled {
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&last.to_le_bytes());
    }
    out.extend_from_slice(&(parts.leases.len() as u32).to_le_bytes());
    for (o, attempt, times) in &parts.leases {
        out.extend_from_slice(&o.to_le_bytes());
        out.extend_from_slice(&attempt.to_le_bytes());
        put_times(&mut out, times);
    }
    out.extend_from_slice(&(parts.delayed.len() as u32).to_le_bytes());
    for (due, o, attempts, times) in &parts.delayed {
        out.extend_from_slice(&due.to_le_bytes());
        out.extend_from_slice(&o.to_le_bytes());
        out.extend_from_slice(&attempts.to_le_bytes());
        put_times(&mut out, times);
    }
    out.extend_from_slice(&(parts.dead_lettering.len() as u32).to_le_bytes());
    for dead in &parts.dead_lettering {
        out.extend_from_slice(&dead.offset.to_le_bytes());
        out.extend_from_slice(&dead.attempts.to_le_bytes());
        put_times(&mut out, &dead.times);
        let dlq_from = dead.dlq_from.unwrap_or(UNKNOWN_DLQ_FROM);
        out.extend_from_slice(&dlq_from.to_le_bytes());
        let (kind, text) = match &dead.reason {
            DeadLetterReason::MaxDeliveries => (0u8, ""),
            DeadLetterReason::Rejected(t) => (1u8, t.as_str()),
        };
        out.push(kind);
        let text = truncate_at_char_boundary(text, MAX_REASON_LEN);
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    seal(&mut out);
    out
}

/// Decodes a snapshot into the state (open leases held by
/// [`RECOVERED`](super::RECOVERED)) and the journal offset it covers;
/// `None` when damaged.
pub fn decode(bytes: &[u8]) -> Option<(PartitionDelivery, u64)> {
    let mut r = LeCursor::new(unseal(bytes)?);
    if r.take(4)? != MAGIC {
        return None;
    }
    let version = r.u16()?;
    if !(1..=VERSION).contains(&version) {
        return None;
    }
    let dlq_from_len = if version >= 3 { 8 } else { 0 };
    let times_len = if version == 1 { 0 } else { 8 };
    let times = |r: &mut LeCursor| -> Option<DeliveryTimes> {
        if version == 1 {
            return Some(DeliveryTimes::default());
        }
        Some(DeliveryTimes {
            first_s: r.u32()?,
            last_s: r.u32()?,
        })
    };
    let journal_offset = r.u64()?;
    let mut parts = SnapshotParts {
        floor: r.u64()?,
        next: r.u64()?,
        dead_lettered: r.u64()?,
        removed_by_retention: r.u64()?,
        ..SnapshotParts::default()
    };
    parts.settled = settled(&mut r, version)?;
    for _ in 0..r.count(12 + times_len)? {
        parts.leases.push((r.u64()?, r.u32()?, times(&mut r)?));
    }
    for _ in 0..r.count(20 + times_len)? {
        parts
            .delayed
            .push((r.u64()? as i64, r.u64()?, r.u32()?, times(&mut r)?));
    }
    for _ in 0..r.count(15 + times_len + dlq_from_len)? {
        let offset = r.u64()?;
        let attempts = r.u32()?;
        let times = times(&mut r)?;
        let dlq_from = match version {
            3.. => Some(r.u64()?).filter(|from| *from != UNKNOWN_DLQ_FROM),
            _ => None,
        };
        let kind = r.u8()?;
        let len = r.u16()? as usize;
        let text = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
        let reason = match kind {
            0 => DeadLetterReason::MaxDeliveries,
            1 => DeadLetterReason::Rejected(text),
            _ => return None,
        };
        parts.dead_lettering.push(DeadLetter {
            offset,
            attempts,
            reason,
            times,
            dlq_from,
        });
    }
    if !r.is_empty() {
        return None;
    }
    Some((PartitionDelivery::from_parts(parts), journal_offset))
}

/// The settled section: ranges (version 3) or single offsets (1 and 2),
/// as ranges. `None` when damaged: a range ending before it starts, or out
/// of order or overlapping the one before.
fn settled(r: &mut LeCursor, version: u16) -> Option<Vec<(u64, u64)>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let width = if version >= 3 { 16 } else { 8 };
    for _ in 0..r.count(width)? {
        let first = r.u64()?;
        let last = if version >= 3 { r.u64()? } else { first };
        let after_previous = ranges.last().is_none_or(|(_, l)| first > *l);
        if first > last || !after_previous {
            return None;
        }
        match ranges.last_mut() {
            // Offsets one by one (versions 1 and 2) join their neighbours.
            Some((_, l)) if l.checked_add(1) == Some(first) => *l = last,
            _ => ranges.push((first, last)),
        }
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{GroupSettings, Jitter, OffsetState};

    fn sample() -> PartitionDelivery {
        let settings = GroupSettings::default();
        let mut jitter = Jitter::new(3);
        let mut state = PartitionDelivery::new(10);
        let got = state.deliver(1, 6, 1000, 20, &settings);
        state.ack(1, got[1].offset).expect("ack");
        state
            .nack(1, got[2].offset, Some(50), 1000, &settings, &mut jitter)
            .expect("nack");
        state
            .reject(1, got[3].offset, "bad payload ✗".into())
            .expect("reject");
        state.take_events();
        state
    }

    #[test]
    fn snapshots_round_trip_with_leases_recovered() {
        let state = sample();
        let (decoded, covered) = decode(&encode(&state, 77)).expect("decodes");
        assert_eq!(covered, 77);
        assert_eq!(decoded.parts(), state.parts());
        assert_eq!(
            decoded.in_flight(),
            3,
            "open leases come back, held by nobody"
        );
    }

    #[test]
    fn a_version_1_snapshot_is_read_with_unknown_delivery_times() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.extend_from_slice(&1u16.to_le_bytes());
        for v in [9u64, 10, 12, 0, 0] {
            v1.extend_from_slice(&v.to_le_bytes());
        }
        v1.extend_from_slice(&0u32.to_le_bytes()); // settled
        v1.extend_from_slice(&1u32.to_le_bytes()); // one lease
        v1.extend_from_slice(&11u64.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(&0u32.to_le_bytes()); // delayed
        v1.extend_from_slice(&0u32.to_le_bytes()); // dead_lettering
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let (state, covered) = decode(&v1).expect("version 1 decodes");
        assert_eq!(covered, 9);
        assert_eq!(
            state.parts().leases,
            vec![(11, 2, DeliveryTimes::default())]
        );
    }

    /// A version 2 snapshot (settled offsets one by one) as the previous
    /// release wrote it: floor 10, next 20, settled 12, 13, 14 and 17.
    fn version_2() -> Vec<u8> {
        let mut v2 = Vec::new();
        v2.extend_from_slice(MAGIC);
        v2.extend_from_slice(&2u16.to_le_bytes());
        for v in [3u64, 10, 20, 0, 0] {
            v2.extend_from_slice(&v.to_le_bytes());
        }
        v2.extend_from_slice(&4u32.to_le_bytes());
        for o in [12u64, 13, 14, 17] {
            v2.extend_from_slice(&o.to_le_bytes());
        }
        for _ in 0..3 {
            v2.extend_from_slice(&0u32.to_le_bytes()); // leases, delayed, dead_lettering
        }
        let crc = crc32fast::hash(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        v2
    }

    #[test]
    fn a_version_2_snapshot_is_read_with_its_settled_offsets_as_ranges() {
        let (state, covered) = decode(&version_2()).expect("version 2 decodes");
        assert_eq!(covered, 3);
        assert_eq!(state.parts().settled, vec![(12, 14), (17, 17)]);
        assert_eq!(state.state_of(13), OffsetState::Settled);
        assert_eq!(state.state_of(15), OffsetState::Available { attempts: 0 });
        // Written again, it is the current version, with ranges.
        let again = encode(&state, covered);
        assert_eq!(&again[4..6], &VERSION.to_le_bytes());
        assert_eq!(decode(&again).expect("decodes").0.parts(), state.parts());
    }

    #[test]
    fn settled_ranges_out_of_order_or_reversed_are_refused() {
        for ranges in [[(5u64, 4u64), (9, 9)], [(5, 7), (6, 9)], [(8, 9), (1, 2)]] {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(MAGIC);
            bytes.extend_from_slice(&VERSION.to_le_bytes());
            for v in [0u64, 0, 20, 0, 0] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            bytes.extend_from_slice(&2u32.to_le_bytes());
            for (first, last) in ranges {
                bytes.extend_from_slice(&first.to_le_bytes());
                bytes.extend_from_slice(&last.to_le_bytes());
            }
            for _ in 0..3 {
                bytes.extend_from_slice(&0u32.to_le_bytes());
            }
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            assert!(decode(&bytes).is_none(), "{ranges:?} accepted");
        }
    }

    #[test]
    fn a_version_2_snapshot_is_read_with_unknown_dlq_offsets() {
        let mut v2 = Vec::new();
        v2.extend_from_slice(MAGIC);
        v2.extend_from_slice(&2u16.to_le_bytes());
        for v in [9u64, 10, 12, 0, 0] {
            v2.extend_from_slice(&v.to_le_bytes());
        }
        v2.extend_from_slice(&0u32.to_le_bytes()); // settled
        v2.extend_from_slice(&0u32.to_le_bytes()); // leases
        v2.extend_from_slice(&0u32.to_le_bytes()); // delayed
        v2.extend_from_slice(&1u32.to_le_bytes()); // one dead letter
        v2.extend_from_slice(&11u64.to_le_bytes());
        v2.extend_from_slice(&3u32.to_le_bytes());
        v2.extend_from_slice(&5u32.to_le_bytes());
        v2.extend_from_slice(&6u32.to_le_bytes());
        v2.extend_from_slice(&[1, 2, 0, b'n', b'o']);
        let crc = crc32fast::hash(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        let (state, covered) = decode(&v2).expect("version 2 decodes");
        assert_eq!(covered, 9);
        assert_eq!(
            state.parts().dead_lettering,
            vec![DeadLetter {
                offset: 11,
                attempts: 3,
                reason: DeadLetterReason::Rejected("no".into()),
                times: DeliveryTimes {
                    first_s: 5,
                    last_s: 6
                },
                dlq_from: None,
            }]
        );
        // Written again, it is the current version and keeps "unknown".
        let (again, _) = decode(&encode(&state, 9)).expect("version 3 decodes");
        assert_eq!(again.parts(), state.parts());
    }

    #[test]
    fn a_dead_letters_dlq_offset_survives_a_snapshot() {
        let mut state = sample();
        state.note_dlq_end(4_321);
        let settings = GroupSettings::default();
        let got = state.deliver(1, 1, 1000, 20, &settings);
        state
            .reject(1, got[0].offset, "late".into())
            .expect("reject");
        let (decoded, _) = decode(&encode(&state, 1)).expect("decodes");
        let from: Vec<Option<u64>> = decoded
            .parts()
            .dead_lettering
            .iter()
            .map(|d| d.dlq_from)
            .collect();
        assert_eq!(from, [Some(0), Some(4_321)]);
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let bytes = encode(&sample(), 5);
        for at in [0, 6, 30, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(decode(&damaged).is_none(), "flip at {at} went unnoticed");
        }
        assert!(decode(&bytes[..bytes.len() - 5]).is_none());
        assert!(decode(&[]).is_none());
    }

    #[test]
    fn a_count_larger_than_the_bytes_is_refused_before_allocating() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 40]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes()); // settled count
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert!(decode(&bytes).is_none());
    }
}
