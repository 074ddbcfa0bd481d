//! # pigeon-client
//!
//! The half of Pigeon that both sides share, plus the async Rust client.
//!
//! ## Layout
//!
//! | module | job |
//! | --- | --- |
//! | [`batch`] | the record batch format: the unit of append, storage and transfer (the bytes on disk are the bytes on the wire) |
//! | [`protocol`] | the wire protocol: length-prefixed frames, message bodies, error codes, `tokio_util` codecs |
//! | [`client`] | the async client: multiplexed connection, admin, batching producer, partition reader |
//! | [`bench`](mod@bench) | the load generator behind `pigeon bench`: workloads, harness, reports |
//!
//! The wire protocol lives in this crate and the broker depends on it, so the
//! two sides can never disagree about a byte.

pub mod batch;
pub mod bench;
pub mod client;
pub mod protocol;

pub use client::{
    Admin, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, GroupDelivery, Producer,
    ProducerConfig, ProducerRecord, Reader, ReaderConfig, RecordMetadata, StartAt,
};
