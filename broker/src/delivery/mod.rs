//! The delivery engine: consumer groups with per-message leases and acks,
//! redelivery with backoff, dead-lettering and seek.
//!
//! | module | job |
//! | --- | --- |
//! | [`settings`] | group settings, the backoff formula, jitter |
//! | [`partition`] | the delivery state machine of one partition in one group (`partition/persist.rs`: snapshot parts and journal replay) |
//! | [`leases`] | the lease table of a partition: per-consumer counts, a deadline index |
//! | [`timeline`] | a time index of offsets in runs: the deadline index of the lease table |
//! | [`journal`] | the events that record every change of that state, for crash recovery |
//! | [`snapshot`] | snapshots of that state, so recovery replays only the recent journal |
//! | [`store`] | a group's durable state on disk: metadata, journals, snapshots |
//! | [`engine`] | one task per group: joins, long-poll receives, settles, timers, dead letters, seek, pause |
//! | [`handle`] | the engine's handle: the requests it serves and their answers |
//! | [`waiters`] | the engine's waiting receives, by arrival and by deadline |
//! | [`journal_writer`] | the engine's ordered channel to the group's journals: batched, per-partition appends, barriers |
//! | [`dead_letter`] | the engine's dead-letter pipeline: journal first, then the DLQ copy, then the settle |
//! | [`stats`] | acks and redeliveries by cause, counted by the engine for `/metrics` |

pub mod dead_letter;
pub mod engine;
pub mod handle;
pub mod journal;
pub mod journal_writer;
pub mod leases;
pub mod partition;
pub mod settings;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod timeline;
mod waiters;

pub use journal::Event;
pub use partition::{
    ConsumerId, DeadLetter, DeadLetterReason, Delivery, DeliveryTimes, Lease, OffsetState,
    PartitionDelivery, RECOVERED, SettleError,
};
pub use settings::{GroupSettings, Jitter};
pub use store::DEFAULT_SNAPSHOT_EVERY_BYTES;

#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod test_support;
