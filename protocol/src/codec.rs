//! The `tokio_util::codec` implementations: [`ServerCodec`] for the broker
//! side of a connection, [`ClientCodec`] for the client side.
//!
//! Use them with `tokio_util::codec::Framed` (or `FramedRead` /
//! `FramedWrite`). A decode error is returned only for fatal framing
//! problems (the stream can no longer be split into frames); a malformed
//! body is delivered as an item carrying its header and the error, so the
//! server can answer that one request and keep the connection.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::codec_error::CodecError;
use super::frame::{
    IncomingRequest, IncomingResponse, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN, RequestFrame,
    ResponseFrame, decode_request, decode_response, encode_request, encode_response, split_frame,
};
use super::limits::Limits;

/// Broker side: decodes requests, encodes responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerCodec {
    limits: Limits,
}

impl ServerCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ServerCodec { limits }
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

impl Decoder for ServerCodec {
    type Item = IncomingRequest;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<IncomingRequest>, CodecError> {
        match split_frame(src, self.limits, REQUEST_HEADER_LEN)? {
            Some(frame) => decode_request(frame, self.limits).map(Some),
            None => Ok(None),
        }
    }
}

impl Encoder<ResponseFrame> for ServerCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: ResponseFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_response(&frame, self.limits, dst)
    }
}

impl Encoder<&ResponseFrame> for ServerCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &ResponseFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_response(frame, self.limits, dst)
    }
}

/// Client side: encodes requests, decodes responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCodec {
    limits: Limits,
}

impl ClientCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ClientCodec { limits }
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Adopts new limits, e.g. the server's from the handshake response.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }
}

impl Decoder for ClientCodec {
    type Item = IncomingResponse;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<IncomingResponse>, CodecError> {
        match split_frame(src, self.limits, RESPONSE_HEADER_LEN)? {
            Some(frame) => decode_response(frame, self.limits).map(Some),
            None => Ok(None),
        }
    }
}

impl Encoder<RequestFrame> for ClientCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: RequestFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_request(&frame, self.limits, dst)
    }
}

impl Encoder<&RequestFrame> for ClientCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &RequestFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_request(frame, self.limits, dst)
    }
}
