//! The request and response bodies, one file per API.
//!
//! Each body type implements [`Message`]: it knows its API key and encodes
//! and decodes itself for a given API version. Bodies start right after the
//! frame header (see the [module documentation](super)); the field tables of
//! each live in `docs/protocol.md` and in each file's documentation.

mod create_topic;
mod delete_topic;
mod describe_topic;
mod fetch;
mod handshake;
mod list_offsets;
mod list_topics;
mod produce;
mod register_producer;

pub use create_topic::{CreateTopicRequest, CreateTopicResponse};
pub use delete_topic::{DeleteTopicRequest, DeleteTopicResponse};
pub use describe_topic::{DescribeTopicRequest, DescribeTopicResponse, PartitionDescription};
pub use fetch::{FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse};
pub use handshake::{ApiVersionRange, HandshakeRequest, HandshakeResponse, supported_api_versions};
pub use list_offsets::{
    ListOffsetsPartition, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetSpec,
};
pub use list_topics::{ListTopicsRequest, ListTopicsResponse, TopicListing};
pub use produce::{ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceResponse};
pub use register_producer::{
    MAX_PRODUCER_NAME_LEN, RegisterProducerRequest, RegisterProducerResponse,
};

use super::api::ApiKey;
use super::codec_error::CodecError;
use super::wire::{Reader, Writer};

/// A request or response body of one API.
pub trait Message: Sized {
    /// The API this body belongs to.
    const API_KEY: ApiKey;

    /// Appends the body, as laid out in `version`, to `w`.
    fn encode(&self, version: u16, w: &mut Writer<'_>) -> Result<(), CodecError>;

    /// Decodes the body, as laid out in `version`, from `r`. The caller
    /// checks that `r` is then exhausted.
    fn decode(version: u16, r: &mut Reader) -> Result<Self, CodecError>;
}
