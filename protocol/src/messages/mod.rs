//! The request and response bodies, one file per API.
//!
//! Each body type implements [`Message`]: it knows its API key and encodes
//! and decodes itself for a given API version. Bodies start right after the
//! frame header (see the [module documentation](super)); the field tables of
//! each live in `docs/protocol.md` and in each file's documentation.

mod alter_group;
mod alter_topic;
mod create_group;
mod create_topic;
mod delete_group;
mod delete_topic;
mod describe_broker;
mod describe_group;
mod describe_topic;
mod fetch;
mod group_settings;
mod handshake;
mod join_group;
mod list_groups;
mod list_offsets;
mod list_topics;
mod message_state;
mod pause_group;
mod produce;
mod receive;
mod redrive;
mod register_producer;
mod sasl_authenticate;
mod sasl_handshake;
mod seek_group;
mod settle;

pub use alter_group::{AlterGroupRequest, AlterGroupResponse};
pub use alter_topic::{AlterTopicRequest, AlterTopicResponse, RetentionChange};
pub use create_group::{CreateGroupRequest, CreateGroupResponse};
pub use create_topic::{CreateTopicRequest, CreateTopicResponse};
pub use delete_group::{DeleteGroupRequest, DeleteGroupResponse};
pub use delete_topic::{DeleteTopicRequest, DeleteTopicResponse};
pub use describe_broker::{
    ConfigEntry, DescribeBrokerRequest, DescribeBrokerResponse, MAX_DESCRIBE_STRING_LEN,
};
pub use describe_group::{DescribeGroupRequest, DescribeGroupResponse, GroupPartitionDescription};
pub use describe_topic::{DescribeTopicRequest, DescribeTopicResponse, PartitionDescription};
pub use fetch::{FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse};
pub use group_settings::{GroupSettings, MAX_BACKOFF_JITTER_PERMILLE};
pub use handshake::{ApiVersionRange, HandshakeRequest, HandshakeResponse, supported_api_versions};
pub use join_group::{JoinGroupRequest, JoinGroupResponse, MAX_CONSUMER_NAME_LEN};
pub use list_groups::{GroupListing, ListGroupsRequest, ListGroupsResponse};
pub use list_offsets::{
    ListOffsetsPartition, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetSpec,
};
pub use list_topics::{
    LIST_RESPONSE_OVERHEAD, ListTopicsRequest, ListTopicsResponse, TopicListing,
};
pub use message_state::{MessageState, MessageStateRequest, MessageStateResponse};
pub use pause_group::{PauseGroupRequest, PauseGroupResponse};
pub use produce::{ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceResponse};
pub use receive::{Delivery, DeliveryHeader, MAX_HEADER_NAME_LEN, ReceiveRequest, ReceiveResponse};
pub use redrive::{
    REDRIVE_PAGE_MESSAGES, RedriveOutcome, RedrivePartition, RedriveRequest, RedriveResponse,
    RedrivenMessage, V0_MAX_MESSAGES,
};
pub use register_producer::{
    MAX_PRODUCER_NAME_LEN, RegisterProducerRequest, RegisterProducerResponse,
};
pub use sasl_authenticate::{MAX_SASL_BYTES, SaslAuthenticateRequest, SaslAuthenticateResponse};
pub use sasl_handshake::{MAX_SASL_MECHANISM_LEN, SaslHandshakeRequest, SaslHandshakeResponse};
pub use seek_group::{SeekGroupPartition, SeekGroupRequest, SeekGroupResponse, SeekTarget};
pub use settle::{
    MAX_SETTLE_REASON_LEN, SettleAction, SettleItem, SettleRequest, SettleResponse, SettleResult,
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
