//! Frames: headers, length delimiting, and whole-frame encode/decode.
//!
//! A frame is a `u32` length (bytes after the length field) followed by a
//! header and a body; see the [module documentation](super) for the byte
//! tables. This file knows nothing of `tokio_util`; [`codec`](super::codec)
//! wraps it.

use bytes::{Buf, Bytes, BytesMut};

use super::body::{Request, Response};
use super::codec_error::{CodecError, CodecErrorKind};
use super::error_code::ErrorCode;
use super::limits::{Limits, MAX_ERROR_MESSAGE_LEN};
use super::wire::{Reader, Writer};

/// Bytes of the length field.
pub const LENGTH_FIELD_LEN: usize = 4;
/// Bytes of a request header, length field included (body starts here).
pub const REQUEST_HEADER_LEN: usize = 12;
/// Bytes of a response header, length field included (body starts here).
pub const RESPONSE_HEADER_LEN: usize = 14;
/// Request id of a connection-level error response, sent when a frame's
/// boundaries could not be trusted (just before the server closes the
/// connection). Clients never use it for a request.
pub const CONNECTION_ERROR_REQUEST_ID: u32 = u32::MAX;
/// API key of a connection-level error response.
pub const CONNECTION_ERROR_API_KEY: u16 = u16::MAX;

/// The header of a request frame, after the length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// API key, raw: it may be one this build does not know.
    pub api_key: u16,
    /// Version of the API the body is laid out in.
    pub api_version: u16,
    /// Chosen by the client, unique among its requests in flight; echoed in
    /// the response.
    pub request_id: u32,
}

/// The header of a response frame, after the length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The request's API key, echoed.
    pub api_key: u16,
    /// The request's API version, echoed.
    pub api_version: u16,
    /// The request's id, echoed.
    pub request_id: u32,
    /// Top-level outcome; when not `None`, the body is an error message.
    pub error_code: ErrorCode,
}

/// A request to encode: the header is derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// The request id (never [`CONNECTION_ERROR_REQUEST_ID`]).
    pub request_id: u32,
    /// Version of the API to lay the body out in.
    pub api_version: u16,
    /// The body.
    pub request: Request,
}

/// A decoded request frame. The header is always valid; the body may not
/// be, in which case the server answers with
/// [`ResponseFrame::for_codec_error`] and keeps the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// The header.
    pub header: RequestHeader,
    /// The body, or why it could not be decoded.
    pub request: Result<Request, CodecError>,
    /// The whole frame's size on the wire, length field included (what a
    /// byte-rate quota charges: header and body, not only the payload).
    pub frame_bytes: u32,
}

/// A top-level error response body: the request failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The request's API key, echoed (raw: it may be unknown).
    pub api_key: u16,
    /// Why the request failed; never `None`.
    pub code: ErrorCode,
    /// Human-readable detail (at most 1024 bytes; longer is truncated).
    pub message: String,
}

/// A response body: the API's answer or a top-level error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// The request was processed; per-partition errors may be inside.
    Ok(Response),
    /// The request failed as a whole.
    Error(ErrorResponse),
}

/// A response to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFrame {
    /// The request's id.
    pub request_id: u32,
    /// The request's API version.
    pub api_version: u16,
    /// The body.
    pub body: ResponseBody,
}

/// A decoded response frame. The header is always valid; the body may not
/// be (a server bug): the client fails that one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingResponse {
    /// The header.
    pub header: ResponseHeader,
    /// The body, or why it could not be decoded.
    pub body: Result<ResponseBody, CodecError>,
}

impl ResponseFrame {
    /// A successful response to request `request_id`.
    pub fn ok(request_id: u32, api_version: u16, response: impl Into<Response>) -> Self {
        ResponseFrame {
            request_id,
            api_version,
            body: ResponseBody::Ok(response.into()),
        }
    }

    /// A top-level error answering the request with `header`.
    pub fn error(header: &RequestHeader, code: ErrorCode, message: impl Into<String>) -> Self {
        ResponseFrame {
            request_id: header.request_id,
            api_version: header.api_version,
            body: ResponseBody::Error(ErrorResponse {
                api_key: header.api_key,
                code,
                message: message.into(),
            }),
        }
    }

    /// The error answering a request whose body failed to decode with
    /// `err` (`UnknownApi`, `UnsupportedVersion`, `InvalidRequest`, …).
    pub fn for_codec_error(header: &RequestHeader, err: &CodecError) -> Self {
        ResponseFrame::error(header, err.error_code(), err.to_string())
    }

    /// The connection-level error a server sends, best effort, before
    /// closing a connection whose framing failed (`FrameTooLarge`, …).
    pub fn connection_error(err: &CodecError) -> Self {
        ResponseFrame::error(
            &RequestHeader {
                api_key: CONNECTION_ERROR_API_KEY,
                api_version: 0,
                request_id: CONNECTION_ERROR_REQUEST_ID,
            },
            err.error_code(),
            err.to_string(),
        )
    }

    /// The API key written in the header.
    pub fn api_key(&self) -> u16 {
        match &self.body {
            ResponseBody::Ok(response) => response.api_key().as_u16(),
            ResponseBody::Error(error) => error.api_key,
        }
    }
}

/// Splits one whole frame (length field included) off the front of `src`,
/// or returns `None` if it has not fully arrived. `min_len` is the header
/// size after the length field.
///
/// The declared length is checked against `limits.max_frame_size` before
/// anything is reserved, and nothing is ever reserved: the buffer grows
/// only as bytes actually arrive.
pub fn split_frame(
    src: &mut BytesMut,
    limits: Limits,
    header_len: usize,
) -> Result<Option<Bytes>, CodecError> {
    let Some(declared) = peek_frame_length(src) else {
        return Ok(None);
    };
    if declared > limits.max_frame_size {
        return Err(CodecError::new(
            0,
            CodecErrorKind::FrameTooLarge {
                declared: u64::from(declared),
                max: limits.max_frame_size,
            },
        ));
    }
    let min = (header_len - LENGTH_FIELD_LEN) as u32;
    if declared < min {
        return Err(CodecError::new(
            0,
            CodecErrorKind::FrameTooShort { declared, min },
        ));
    }
    let total = LENGTH_FIELD_LEN + declared as usize;
    if src.len() < total {
        return Ok(None);
    }
    Ok(Some(src.split_to(total).freeze()))
}

/// Appends one frame to `dst`: length placeholder, then `header` writes
/// the header and body; the length is patched in at the end. On error
/// `dst` is left exactly as it was.
fn encode_frame(
    dst: &mut BytesMut,
    limits: Limits,
    write: impl FnOnce(&mut Writer<'_>) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    let start = dst.len();
    let result = {
        let mut w = Writer::new(dst, start, limits);
        w.u32(0);
        write(&mut w)
    };
    if let Err(err) = result {
        dst.truncate(start);
        return Err(err);
    }
    let declared = (dst.len() - start - LENGTH_FIELD_LEN) as u64;
    if declared > u64::from(limits.max_frame_size) {
        dst.truncate(start);
        return Err(CodecError::new(
            0,
            CodecErrorKind::FrameTooLarge {
                declared,
                max: limits.max_frame_size,
            },
        ));
    }
    let length = (declared as u32).to_le_bytes();
    if let Some(field) = dst.get_mut(start..start + LENGTH_FIELD_LEN) {
        field.copy_from_slice(&length);
    }
    Ok(())
}

/// Appends a request frame to `dst`. On error `dst` is unchanged.
pub fn encode_request(
    frame: &RequestFrame,
    limits: Limits,
    dst: &mut BytesMut,
) -> Result<(), CodecError> {
    encode_frame(dst, limits, |w| {
        if frame.request_id == CONNECTION_ERROR_REQUEST_ID {
            return Err(CodecError::new(
                8,
                CodecErrorKind::InvalidValue {
                    field: "request_id",
                    value: u64::from(frame.request_id),
                },
            ));
        }
        w.u16(frame.request.api_key().as_u16());
        w.u16(frame.api_version);
        w.u32(frame.request_id);
        frame.request.encode(frame.api_version, w)
    })
}

/// Appends a response frame to `dst`. Error messages longer than
/// [`MAX_ERROR_MESSAGE_LEN`] are truncated. On error `dst` is unchanged.
pub fn encode_response(
    frame: &ResponseFrame,
    limits: Limits,
    dst: &mut BytesMut,
) -> Result<(), CodecError> {
    encode_frame(dst, limits, |w| {
        w.u16(frame.api_key());
        w.u16(frame.api_version);
        w.u32(frame.request_id);
        match &frame.body {
            ResponseBody::Ok(response) => {
                w.u16(ErrorCode::None.as_u16());
                response.encode(frame.api_version, w)
            }
            ResponseBody::Error(error) => {
                if error.code == ErrorCode::None {
                    return Err(w.error(CodecErrorKind::InvalidValue {
                        field: "error_code",
                        value: 0,
                    }));
                }
                w.u16(error.code.as_u16());
                let message = truncate_at_char_boundary(&error.message, MAX_ERROR_MESSAGE_LEN);
                w.string("error_message", message, MAX_ERROR_MESSAGE_LEN)
            }
        }
    })
}

/// `s` cut to at most `max` bytes, at a character boundary.
///
/// ```
/// use pigeon_protocol::truncate_at_char_boundary;
/// assert_eq!(truncate_at_char_boundary("héllo", 2), "h");
/// assert_eq!(truncate_at_char_boundary("hello", 9), "hello");
/// ```
pub fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Reads the header fields common to requests and responses from a whole
/// frame (as returned by [`split_frame`]), returning a reader positioned
/// after the length field.
fn header_reader(frame: Bytes, limits: Limits) -> Result<(Reader, u16, u16, u32), CodecError> {
    let mut r = Reader::new(frame, 0, limits);
    let length = r.u32("frame_length")?;
    if length as usize != r.remaining() {
        return Err(CodecError::new(
            0,
            CodecErrorKind::InvalidValue {
                field: "frame_length",
                value: u64::from(length),
            },
        ));
    }
    let api_key = r.u16("api_key")?;
    let api_version = r.u16("api_version")?;
    let request_id = r.u32("request_id")?;
    Ok((r, api_key, api_version, request_id))
}

/// Decodes a whole request frame (length field included). `Err` only if
/// the header itself is cut short or the length field does not match the
/// bytes given (both impossible for frames from [`split_frame`]); body
/// errors land in
/// [`IncomingRequest::request`].
pub fn decode_request(frame: Bytes, limits: Limits) -> Result<IncomingRequest, CodecError> {
    let frame_bytes = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    let (mut r, api_key, api_version, request_id) = header_reader(frame, limits)?;
    let header = RequestHeader {
        api_key,
        api_version,
        request_id,
    };
    let request = Request::decode(api_key, api_version, &mut r);
    Ok(IncomingRequest {
        header,
        request,
        frame_bytes,
    })
}

/// Decodes a whole response frame (length field included). `Err` only if
/// the header itself is cut short or the length field does not match the
/// bytes given (both impossible for frames from [`split_frame`]); body
/// errors land in
/// [`IncomingResponse::body`].
pub fn decode_response(frame: Bytes, limits: Limits) -> Result<IncomingResponse, CodecError> {
    let (mut r, api_key, api_version, request_id) = header_reader(frame, limits)?;
    let error_code = ErrorCode::from_u16(r.u16("error_code")?);
    let header = ResponseHeader {
        api_key,
        api_version,
        request_id,
        error_code,
    };
    let body = if error_code == ErrorCode::None {
        Response::decode(api_key, api_version, &mut r).map(ResponseBody::Ok)
    } else {
        decode_error_body(api_key, error_code, &mut r)
    };
    Ok(IncomingResponse { header, body })
}

/// An error body has the same layout in every version of every API, so a
/// client can read it even for an API or version it does not know.
fn decode_error_body(
    api_key: u16,
    code: ErrorCode,
    r: &mut Reader,
) -> Result<ResponseBody, CodecError> {
    let message = r.string("error_message", MAX_ERROR_MESSAGE_LEN)?;
    r.finish()?;
    Ok(ResponseBody::Error(ErrorResponse {
        api_key,
        code,
        message,
    }))
}

/// Peeks the declared length of the frame at the front of `src`, if its
/// length field has arrived.
pub fn peek_frame_length(src: &[u8]) -> Option<u32> {
    let mut field = src.get(..LENGTH_FIELD_LEN)?;
    Some(field.get_u32_le())
}
