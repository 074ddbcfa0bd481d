//! Helpers shared by the protocol tests.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::*;

/// The bytes of one encoded request frame.
pub fn request_bytes(frame: &RequestFrame) -> Bytes {
    let mut buf = BytesMut::new();
    ClientCodec::default()
        .encode(frame, &mut buf)
        .expect("request encodes");
    buf.freeze()
}

/// The bytes of one encoded response frame.
pub fn response_bytes(frame: &ResponseFrame) -> Bytes {
    let mut buf = BytesMut::new();
    ServerCodec::default()
        .encode(frame, &mut buf)
        .expect("response encodes");
    buf.freeze()
}

/// Decodes exactly one request frame from `bytes`, which must hold
/// exactly one whole frame.
pub fn decode_one_request(bytes: &[u8]) -> IncomingRequest {
    let mut buf = BytesMut::from(bytes);
    let item = ServerCodec::default()
        .decode(&mut buf)
        .expect("framing ok")
        .expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    item
}

/// Decodes exactly one response frame from `bytes`.
pub fn decode_one_response(bytes: &[u8]) -> IncomingResponse {
    let mut buf = BytesMut::from(bytes);
    let item = ClientCodec::default()
        .decode(&mut buf)
        .expect("framing ok")
        .expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    item
}

/// A request frame with the given header and raw body bytes.
pub fn raw_request(api_key: u16, api_version: u16, request_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&api_key.to_le_bytes());
    out.extend_from_slice(&api_version.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A response frame with the given header and raw body bytes.
pub fn raw_response(api_key: u16, request_id: u32, error_code: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((10 + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&api_key.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&error_code.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Feeds `bytes` to `codec` in chunks cut at `cuts` (positions, any
/// order, clamped), decoding after every chunk; returns the items and
/// what was left in the buffer.
pub fn decode_chunked<D: Decoder>(
    codec: &mut D,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<D::Item>, BytesMut)
where
    D::Error: std::fmt::Debug,
{
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut from = 0;
    for to in cuts {
        buf.extend_from_slice(bytes.get(from..to).unwrap_or_default());
        from = to;
        while let Some(item) = codec.decode(&mut buf).expect("valid stream") {
            items.push(item);
        }
    }
    (items, buf)
}
