//! The delivery engine: consumer groups with per-message leases and acks,
//! redelivery with backoff, dead-lettering and seek.
//!
//! | module | job |
//! | --- | --- |
//! | [`settings`] | group settings, the backoff formula, jitter |
//! | [`partition`] | the delivery state machine of one partition in one group |
//! | [`leases`] | the lease table of a partition: per-consumer counts, next deadline without scans |
//! | [`journal`] | the events that record every change of that state, for crash recovery |
//! | [`snapshot`] | snapshots of that state, so recovery replays only the recent journal |
//! | [`store`] | a group's durable state on disk: metadata, journals, snapshots |
//! | [`engine`] | one task per group: joins, long-poll receives, settles, timers, dead letters, seek, pause |

pub mod engine;
pub mod journal;
pub mod leases;
pub mod partition;
pub mod settings;
pub mod snapshot;
pub mod store;

pub use journal::Event;
pub use partition::{
    ConsumerId, DeadLetter, DeadLetterReason, Delivery, DeliveryTimes, Lease, OffsetState,
    PartitionDelivery, RECOVERED, SettleError,
};
pub use settings::{GroupSettings, Jitter};

#[cfg(test)]
mod model_tests;
