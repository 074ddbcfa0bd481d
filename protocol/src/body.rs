//! [`Request`] and [`Response`]: every body of every API in one enum each,
//! dispatched by API key, for the server's request loop and the client's
//! response matching.

use super::api::ApiKey;
use super::codec_error::{CodecError, CodecErrorKind};
use super::messages::*;
use super::wire::{Reader, Writer};

/// Generates an enum with one variant per API and its dispatch methods.
/// Variant names are the [`ApiKey`] variant names.
macro_rules! api_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident($ty:ty),)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant($ty),)*
        }

        impl $name {
            /// The API this body belongs to.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $($name::$variant(_) => ApiKey::$variant,)*
                }
            }

            /// Appends the body, as laid out in `version`, to `w`. Fails if
            /// this build does not speak `version` of the API.
            pub fn encode(&self, version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
                self.api_key().check_version(version, w.offset())?;
                match self {
                    $($name::$variant(body) => body.encode(version, w),)*
                }
            }

            /// Decodes a whole body of API `api_key` (raw, from the header at
            /// frame offset 4) in `version` (at frame offset 6). Fails on an
            /// unknown key, an unsupported version, a malformed body or bytes
            /// left over.
            pub fn decode(api_key: u16, version: u16, r: &mut Reader) -> Result<Self, CodecError> {
                let key = ApiKey::from_u16(api_key)
                    .ok_or_else(|| CodecError::new(4, CodecErrorKind::UnknownApi(api_key)))?;
                key.check_version(version, 6)?;
                let body = match key {
                    $(ApiKey::$variant => $name::$variant(<$ty as Message>::decode(version, r)?),)*
                };
                r.finish()?;
                Ok(body)
            }
        }

        $(
            impl From<$ty> for $name {
                fn from(body: $ty) -> Self {
                    $name::$variant(body)
                }
            }
        )*
    };
}

api_enum! {
    /// A request body of any API.
    Request {
        /// Handshake (key 0).
        Handshake(HandshakeRequest),
        /// SaslHandshake (key 1).
        SaslHandshake(SaslHandshakeRequest),
        /// SaslAuthenticate (key 2).
        SaslAuthenticate(SaslAuthenticateRequest),
        /// CreateTopic (key 10).
        CreateTopic(CreateTopicRequest),
        /// DeleteTopic (key 11).
        DeleteTopic(DeleteTopicRequest),
        /// ListTopics (key 12).
        ListTopics(ListTopicsRequest),
        /// DescribeTopic (key 13).
        DescribeTopic(DescribeTopicRequest),
        /// AlterTopic (key 14).
        AlterTopic(AlterTopicRequest),
        /// Produce (key 20).
        Produce(ProduceRequest),
        /// RegisterProducer (key 21).
        RegisterProducer(RegisterProducerRequest),
        /// Fetch (key 30).
        Fetch(FetchRequest),
        /// ListOffsets (key 31).
        ListOffsets(ListOffsetsRequest),
        /// CreateGroup (key 40).
        CreateGroup(CreateGroupRequest),
        /// DescribeGroup (key 41).
        DescribeGroup(DescribeGroupRequest),
        /// AlterGroup (key 42).
        AlterGroup(AlterGroupRequest),
        /// SeekGroup (key 43).
        SeekGroup(SeekGroupRequest),
        /// PauseGroup (key 44).
        PauseGroup(PauseGroupRequest),
        /// DeleteGroup (key 45).
        DeleteGroup(DeleteGroupRequest),
        /// JoinGroup (key 46).
        JoinGroup(JoinGroupRequest),
        /// Receive (key 47).
        Receive(ReceiveRequest),
        /// Settle (key 48).
        Settle(SettleRequest),
        /// MessageState (key 49).
        MessageState(MessageStateRequest),
        /// Redrive (key 50).
        Redrive(RedriveRequest),
        /// ListGroups (key 51).
        ListGroups(ListGroupsRequest),
        /// DescribeBroker (key 60).
        DescribeBroker(DescribeBrokerRequest),
    }
}

api_enum! {
    /// A successful response body of any API.
    Response {
        /// Handshake (key 0).
        Handshake(HandshakeResponse),
        /// SaslHandshake (key 1).
        SaslHandshake(SaslHandshakeResponse),
        /// SaslAuthenticate (key 2).
        SaslAuthenticate(SaslAuthenticateResponse),
        /// CreateTopic (key 10).
        CreateTopic(CreateTopicResponse),
        /// DeleteTopic (key 11).
        DeleteTopic(DeleteTopicResponse),
        /// ListTopics (key 12).
        ListTopics(ListTopicsResponse),
        /// DescribeTopic (key 13).
        DescribeTopic(DescribeTopicResponse),
        /// AlterTopic (key 14).
        AlterTopic(AlterTopicResponse),
        /// Produce (key 20).
        Produce(ProduceResponse),
        /// RegisterProducer (key 21).
        RegisterProducer(RegisterProducerResponse),
        /// Fetch (key 30).
        Fetch(FetchResponse),
        /// ListOffsets (key 31).
        ListOffsets(ListOffsetsResponse),
        /// CreateGroup (key 40).
        CreateGroup(CreateGroupResponse),
        /// DescribeGroup (key 41).
        DescribeGroup(DescribeGroupResponse),
        /// AlterGroup (key 42).
        AlterGroup(AlterGroupResponse),
        /// SeekGroup (key 43).
        SeekGroup(SeekGroupResponse),
        /// PauseGroup (key 44).
        PauseGroup(PauseGroupResponse),
        /// DeleteGroup (key 45).
        DeleteGroup(DeleteGroupResponse),
        /// JoinGroup (key 46).
        JoinGroup(JoinGroupResponse),
        /// Receive (key 47).
        Receive(ReceiveResponse),
        /// Settle (key 48).
        Settle(SettleResponse),
        /// MessageState (key 49).
        MessageState(MessageStateResponse),
        /// Redrive (key 50).
        Redrive(RedriveResponse),
        /// ListGroups (key 51).
        ListGroups(ListGroupsResponse),
        /// DescribeBroker (key 60).
        DescribeBroker(DescribeBrokerResponse),
    }
}
