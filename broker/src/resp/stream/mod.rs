//! Streams over partitions: stream IDs ↔ offsets, entries ↔ records, and
//! reads by ID.
//!
//! ## Stream ID ↔ offset
//!
//! An entry appended with `XADD key *` (or by Pigeon's own producers) has
//! the ID `<append time ms>-<offset>`: the broker's append time of its
//! record and its offset in the partition. An entry appended with an
//! explicit ID keeps that ID, stored in the record's `redis.id` header.
//!
//! Invariant: every record's ID is at most `<its append time>-<its
//! offset>` (equal for a derived ID). Append times never decrease within a
//! partition and offsets always increase, so a record appended after one
//! with ID `X` has a derived ID above `X`: IDs increase with offsets, across
//! `XADD *`, explicit IDs and records from `pigeon produce` alike. `XADD`
//! keeps the invariant by refusing an explicit ID above `<now>-<log end
//! offset>` (a lower bound of the new record's own time and offset), and
//! by taking the partition's write lock (below) so that no other `XADD`
//! lands in between. The order lets every read find an ID by binary search
//! over offsets, starting at the first record appended at or after the ID's
//! time (a record's ID time is never after its append time).
//!
//! ## Ordering of concurrent XADDs
//!
//! Each partition has a read-write lock in the listener. `XADD *` holds it
//! shared from its check to its commit (appends of many connections still
//! share fsyncs); `XADD <id>` holds it exclusively, so that the stream's
//! top ID it checks against is final: every earlier `XADD` has committed
//! and no other lands before its own. Producers using Pigeon's own
//! protocol do not take the lock; see `docs/redis.md` for what that allows.
//!
//! | module | job |
//! | --- | --- |
//! | `ids` | `<ms>-<seq>` IDs, range bounds, Redis's ID error texts |
//! | `entry` | field/value pairs ↔ record key, value and headers |
//! | `read` | reads by ID over the service layer: seek, forward, backward, length |

pub mod entry;
pub mod ids;
pub mod read;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::RwLock;

/// A partition's append lock.
type AppendLock = Arc<RwLock<()>>;

/// One lock per partition that `XADD` appends to.
#[derive(Debug, Default)]
pub struct AppendLocks {
    locks: Mutex<HashMap<(String, u32), AppendLock>>,
}

impl AppendLocks {
    /// The lock of `topic`/`partition`.
    pub fn of(&self, topic: &str, partition: u32) -> AppendLock {
        let mut locks = self.locks.lock();
        let key = (topic.to_owned(), partition);
        locks.entry(key).or_default().clone()
    }
}
