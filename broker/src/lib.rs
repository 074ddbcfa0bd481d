//! # pigeon-broker
//!
//! The Pigeon broker: storage engine, delivery engine and server.
//!
//! ## Layout
//!
//! | module | job |
//! | --- | --- |
//! | [`io`] | file I/O behind a small trait, so tests can inject faults |
//! | [`log`] | the segmented append-only log of one partition: segments, indexes, recovery, retention, group commit |

pub mod io;
pub mod log;
