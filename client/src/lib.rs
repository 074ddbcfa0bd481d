//! # pigeon-client
//!
//! The async Rust client of the Pigeon broker, for services to depend on:
//! a multiplexed connection, admin, an idempotent batching producer, a
//! group consumer and a partition reader.
//!
//! ## Layout
//!
//! | module | job |
//! | --- | --- |
//! | [`client`] | the async client: multiplexed connection, admin, batching producer, consumer, partition reader |
//! | [`protocol`] | re-export of the `pigeon-protocol` crate: frames, message bodies, error codes, codecs |
//! | [`batch`] | re-export of the record batch format (`pigeon_protocol::batch`) |
//!
//! The wire protocol and the batch format live in the `pigeon-protocol`
//! crate, which the broker depends on too, so the two sides can never
//! disagree about a byte. The `pigeon` command line and the `pigeon bench`
//! load generator live beside this library (crate `pigeon-cli`), so a
//! service that depends on it pulls in no CLI or benchmark dependencies.

#![warn(missing_docs)]

pub mod client;

pub use pigeon_protocol as protocol;
pub use pigeon_protocol::batch;

pub use client::{
    Admin, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Credentials, GroupDelivery,
    Producer, ProducerConfig, ProducerRecord, Reader, ReaderConfig, RecordMetadata, StartAt,
    TlsConfig,
};
