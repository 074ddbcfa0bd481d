//! The async Rust client of the Pigeon broker.
//!
//! This module owns everything a program needs to talk to a broker over
//! TCP: a multiplexed, self-healing connection ([`Client`]), topic
//! administration ([`Admin`]), a batching, retrying producer ([`Producer`])
//! and a partition reader that is an async stream ([`Reader`]). It speaks
//! only through [`crate::protocol`] and reads records with [`crate::batch`].
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use pigeon_client::client::*;
//!
//! # async fn demo() -> Result<(), ClientError> {
//! let client = Client::connect(DEFAULT_BROKER_ADDR).await?;
//! client.admin().create_topic(NewTopic::new("orders", 1)).await?;
//!
//! let producer = Producer::new(client.clone(), ProducerConfig::default());
//! let stored = producer.send("orders", ProducerRecord::new("created").key("order-7")).await?;
//!
//! let config = ReaderConfig::new(StartAt::Offset(stored.offset)).follow(false);
//! let mut reader = Reader::open(&client, "orders", stored.partition, config).await?;
//! while let Some(record) = reader.next().await {
//!     println!("{:?}", record?.value);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Invariants shared by the whole client
//!
//! - Every wait is bounded: requests by their timeout, deliveries by the
//!   producer's delivery timeout, buffers by their byte budget.
//! - Failures are typed ([`ClientError`]) and say whether a retry may help
//!   ([`ClientError::is_retriable`]); what the library retries itself is
//!   documented where it does.
//!
//! ## Layout
//!
//! | file | job |
//! | --- | --- |
//! | `error.rs` | [`ClientError`] |
//! | `backoff.rs` | [`Backoff`]: exponential delays with jitter |
//! | `breaker.rs` | [`CircuitConfig`] and the circuit breaker |
//! | `connection/` | [`Client`]: connection, handshake, reconnects; request matching in `connection/pending.rs` |
//! | `admin.rs` | [`Admin`]: create/delete/list/describe topics, offset lookups, group administration |
//! | `broker_admin.rs` | [`Admin`]: alter a topic's retention, list groups, describe the broker |
//! | `lease_keeper.rs` | keeping the leases of handed-out, unsettled deliveries alive |
//! | `consumer.rs` | [`Consumer`]: group membership, long-poll receive, rejoin, release on close |
//! | `group_delivery.rs` | [`GroupDelivery`]: a leased message and its settles (ack/nack/reject/extend, `ack_all`) |
//! | `producer/` | [`Producer`]: partitioning, batching, buffering, retries (its files: `producer/mod.rs`) |
//! | `session.rs` | the idempotent producer session: registration, reset, fencing |
//! | `reader.rs` | [`Reader`]: a partition as an async stream of records |

mod admin;
mod backoff;
mod breaker;
mod broker_admin;
mod connection;
mod consumer;
mod error;
mod group_delivery;
mod lease_keeper;
mod producer;
mod reader;
mod session;

#[cfg(test)]
mod tests;

pub use admin::{Admin, NewTopic};
pub use backoff::Backoff;
pub use breaker::CircuitConfig;
pub use connection::{
    Client, ClientConfig, Credentials, DEFAULT_BROKER_ADDR, PendingRequest, TlsConfig,
};
pub use consumer::{Consumer, ConsumerConfig, GroupDelivery};
pub use error::ClientError;
pub use producer::{
    Delivery, MAX_IN_FLIGHT_BATCHES, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    ThrottleStats, partition_for_key,
};
pub use reader::{Reader, ReaderConfig, StartAt};
