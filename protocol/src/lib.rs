//! # pigeon-protocol
//!
//! The bytes both sides of Pigeon share: the record batch format
//! ([`batch`]) and the wire protocol (frames, message bodies, error codes
//! and the `tokio_util` codecs that turn a byte stream into requests and
//! responses). The broker and the client library both depend on this crate,
//! so the two sides can never disagree about a byte; it depends on nothing
//! heavier than a codec needs (bytes, crc32fast, thiserror, tokio-util).
//!
//! This crate owns the bytes between a client and the broker, nothing
//! else: no sockets, no storage. Record batches inside produce requests and
//! fetch responses are opaque [`bytes::Bytes`] here (the record batch
//! format is [`crate::batch`]); they are decoded as zero-copy slices of the
//! frame. The full specification is `docs/protocol.md`.
//!
//! ## Frames (all integers little-endian)
//!
//! Request frame:
//!
//! | offset | size | type | field | meaning |
//! | --- | --- | --- | --- | --- |
//! | 0 | 4 | u32 | `length` | bytes after this field (≥ 8, ≤ max frame size) |
//! | 4 | 2 | u16 | `api_key` | which API ([`ApiKey`]) |
//! | 6 | 2 | u16 | `api_version` | layout version of the body |
//! | 8 | 4 | u32 | `request_id` | chosen by the client, echoed in the response |
//! | 12 | … | | body | the API's request body |
//!
//! Response frame:
//!
//! | offset | size | type | field | meaning |
//! | --- | --- | --- | --- | --- |
//! | 0 | 4 | u32 | `length` | bytes after this field (≥ 10, ≤ max frame size) |
//! | 4 | 2 | u16 | `api_key` | the request's, echoed |
//! | 6 | 2 | u16 | `api_version` | the request's, echoed |
//! | 8 | 4 | u32 | `request_id` | the request's, echoed |
//! | 12 | 2 | u16 | `error_code` | [`ErrorCode`]; 0 = success |
//! | 14 | … | | body | if `error_code` is 0, the API's response body; otherwise a string (u16 length + UTF-8) with the error message |
//!
//! ## Invariants
//!
//! - One byte order everywhere: little-endian, as in the record batch format.
//! - API keys and error codes are never renumbered or reused.
//! - Many requests may be in flight on one connection; responses may arrive
//!   in any order and are matched by `request_id`.
//! - Every limit ([`Limits`], name lengths, array counts) is checked before
//!   memory is allocated for what it limits; decoding never panics on any
//!   input and never indexes out of bounds.
//! - A frame whose length cannot be trusted (too large, too short) is a
//!   fatal [`CodecError`] (the connection is closed); any other decoding
//!   failure is confined to its own request, which gets an error response.
//!
//! ## Use
//!
//! A client encodes [`RequestFrame`]s and decodes [`IncomingResponse`]s
//! with a [`ClientCodec`]; the broker decodes [`IncomingRequest`]s and
//! encodes [`ResponseFrame`]s with a [`ServerCodec`]. Both are
//! `tokio_util::codec` codecs, for `Framed` over a TCP stream:
//!
//! ```
//! use bytes::BytesMut;
//! use pigeon_protocol::*;
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! # fn main() -> Result<(), CodecError> {
//! let (mut client, mut server) = (ClientCodec::default(), ServerCodec::default());
//! let mut wire = BytesMut::new();
//!
//! // Client: send a request tagged with an id of its choosing.
//! let request = DescribeTopicRequest { topic: "orders".into() };
//! client.encode(RequestFrame { request_id: 1, api_version: 0, request: request.into() }, &mut wire)?;
//!
//! // Server: decode it; a malformed body would be answered, not fatal.
//! let incoming = server.decode(&mut wire)?.expect("a whole frame");
//! let answer = match incoming.request {
//!     Ok(Request::DescribeTopic(req)) => {
//!         ResponseFrame::error(&incoming.header, ErrorCode::UnknownTopic, format!("no topic {}", req.topic))
//!     }
//!     Ok(_) => unreachable!(),
//!     Err(err) => ResponseFrame::for_codec_error(&incoming.header, &err),
//! };
//! server.encode(answer, &mut wire)?;
//!
//! // Client: match the response to its request by id.
//! let response = client.decode(&mut wire)?.expect("a whole frame");
//! assert_eq!(response.header.request_id, 1);
//! assert_eq!(response.header.error_code, ErrorCode::UnknownTopic);
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//!
//! | file | job |
//! | --- | --- |
//! | `batch/` | the record batch format |
//! | `api.rs` | [`ApiKey`] numbers and supported versions |
//! | `error_code.rs` | [`ErrorCode`]: wire error numbers |
//! | `codec_error.rs` | [`CodecError`]: why bytes failed to encode or decode, and where |
//! | `limits.rs` | [`Limits`], name limits, [`validate_topic_name`] |
//! | `wire.rs` | [`Reader`] and [`Writer`] for primitives |
//! | `messages/` | one file per API: request and response bodies |
//! | `body.rs` | [`Request`] and [`Response`]: all bodies, dispatched by API key |
//! | `frame.rs` | headers, length delimiting, whole-frame encode/decode |
//! | `codec.rs` | [`ServerCodec`] and [`ClientCodec`] (`tokio_util::codec`) |

#![warn(missing_docs)]

mod api;
pub mod batch;
mod body;
mod codec;
mod codec_error;
mod error_code;
mod frame;
mod limits;
pub mod messages;
pub mod scram;
mod wire;

#[cfg(test)]
mod tests;

pub use api::{ALL_API_KEYS, ApiKey, VersionRange};
pub use body::{Request, Response};
pub use codec::{ClientCodec, ServerCodec};
pub use codec_error::{CodecError, CodecErrorKind};
pub use error_code::{ALL_ERROR_CODES, ErrorCode};
pub use frame::{
    CONNECTION_ERROR_API_KEY, CONNECTION_ERROR_REQUEST_ID, ErrorResponse, IncomingRequest,
    IncomingResponse, LENGTH_FIELD_LEN, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN, RequestFrame,
    RequestHeader, ResponseBody, ResponseFrame, ResponseHeader, decode_request, decode_response,
    encode_request, encode_response, split_frame, truncate_at_char_boundary,
};
pub use limits::{
    DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_FRAME_SIZE, Limits, MAX_ERROR_MESSAGE_LEN,
    MAX_SOFTWARE_NAME_LEN, MAX_TOPIC_NAME_LEN, TopicNameError, validate_topic_name,
};
pub use messages::*;
pub use wire::{Reader, Writer};
