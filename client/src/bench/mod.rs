//! The load generator behind `pigeon bench`: workloads, the harness that
//! runs them against any [`Target`], and the figures it reports.
//!
//! | module | job |
//! | --- | --- |
//! | [`target`] | the traits a system under test implements (Pigeon here, peers in `benches/`) |

pub mod target;

pub use target::{PublishSettings, Publisher, Received, SubscribeSettings, Subscriber, Target};
