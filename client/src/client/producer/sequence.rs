//! A partition's sequence numbers for idempotent batches.
//!
//! A partition sender keeps `Option<(session generation, base sequence of
//! the next batch)>`: `None` before the first batch and after a session
//! reset.
//!
//! ## Invariants
//!
//! - The next batch of a session starts where the last one stamped in that
//!   session ended; a new session (another generation) starts at 0.
//! - Sequences wrap from `i32::MAX` back to 0.

use crate::batch::ProducerStamp;
use crate::client::session::SessionId;

/// The stamp of the next batch of a partition in session `id`.
pub(super) fn stamp_for(sequence: &mut Option<(u64, i32)>, id: SessionId) -> ProducerStamp {
    let next = match *sequence {
        Some((generation, next)) if generation == id.generation => next,
        _ => 0,
    };
    *sequence = Some((id.generation, next));
    ProducerStamp {
        producer_id: id.producer_id,
        producer_epoch: id.epoch,
        base_sequence: next,
    }
}

/// The sequence after a batch of `count` records starting at `first`.
pub(super) fn next_sequence(first: i32, count: u32) -> i32 {
    ((i64::from(first) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}
