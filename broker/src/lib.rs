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
//! | [`topics`] | topics: metadata, partition logs, data directory layout |
//! | [`service`] | the service layer: the application root [`service::Broker`] and protocol-neutral operations |
//! | [`error`] | [`error::BrokerError`]: why a domain operation failed, with no wire code |
//! | [`server`] | the binary-protocol adapter: listener, connections, request translation |
//! | [`resp`] | the Redis Streams adapter: a RESP2/RESP3 listener serving stream commands |
//! | [`config`] | settings from defaults, file, environment and flags |
//! | [`caps`] | what one client can make the broker hold: the caps, connections per address, keepalive |
//! | [`delivery`] | consumer groups: leases, acks, redelivery with backoff, dead letters, seek |
//! | [`groups`] | the broker's groups: create, open, delete, source reads, dead-letter topics |
//! | [`http`] | `/health`, `/ready` and `/metrics` |
//! | [`metrics`] | metric names, recording, and the scrape-time families (per resource, process) |
//! | [`registry`] | idempotent producer names, ids and epochs |
//! | [`security`] | TLS for the listeners |

#![warn(missing_docs)]

pub mod caps;
pub mod config;
pub mod delivery;
pub mod error;
pub mod groups;
pub mod http;
pub mod io;
pub mod log;
pub mod metrics;
pub mod registry;
pub mod resp;
pub mod security;
pub mod server;
pub mod service;
pub mod topics;
