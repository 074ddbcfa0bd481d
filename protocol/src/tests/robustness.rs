//! Property tests: no input makes the decoders panic, and whatever they
//! accept is canonical (re-encoding it gives back the same bytes).

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tokio_util::codec::Decoder;

use super::strategies::*;
use super::support::*;
use crate::*;

/// Small limits, so that arbitrary input also hits the limit checks.
const SMALL: Limits = Limits {
    max_frame_size: 300,
    max_batch_size: 40,
};

/// Decodes frames from `bytes` until the codec wants more or fails.
fn drain<D: Decoder>(codec: &mut D, bytes: &[u8]) -> Vec<D::Item> {
    let mut buf = BytesMut::from(bytes);
    let mut items = Vec::new();
    while let Ok(Some(item)) = codec.decode(&mut buf) {
        items.push(item);
    }
    items
}

/// Whatever decoded successfully re-encodes to exactly the same bytes.
fn check_request_canonical(frame: &[u8], limits: Limits) -> Result<(), TestCaseError> {
    let Ok(incoming) = decode_request(Bytes::copy_from_slice(frame), limits) else {
        return Ok(());
    };
    let Ok(request) = incoming.request else {
        return Ok(());
    };
    let mut out = BytesMut::new();
    let reencoded = encode_request(
        &RequestFrame {
            request_id: incoming.header.request_id,
            api_version: incoming.header.api_version,
            request,
        },
        limits,
        &mut out,
    );
    if incoming.header.request_id == CONNECTION_ERROR_REQUEST_ID {
        prop_assert!(reencoded.is_err());
    } else {
        prop_assert_eq!(reencoded, Ok(()));
        prop_assert_eq!(&out[..], frame);
    }
    Ok(())
}

fn check_response_canonical(frame: &[u8], limits: Limits) -> Result<(), TestCaseError> {
    let Ok(incoming) = decode_response(Bytes::copy_from_slice(frame), limits) else {
        return Ok(());
    };
    let Ok(body) = incoming.body else {
        return Ok(());
    };
    let mut out = BytesMut::new();
    let reencoded = encode_response(
        &ResponseFrame {
            request_id: incoming.header.request_id,
            api_version: incoming.header.api_version,
            body,
        },
        limits,
        &mut out,
    );
    prop_assert_eq!(reencoded, Ok(()));
    prop_assert_eq!(&out[..], frame);
    Ok(())
}

/// One edit of a valid frame.
#[derive(Debug, Clone)]
enum Mutation {
    Overwrite(Index, u8),
    Flip(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Remove),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        if bytes.is_empty() {
            return;
        }
        match m {
            Mutation::Overwrite(i, b) => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Mutation::Flip(i, bit) => {
                let at = i.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
            Mutation::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, *b);
            }
            Mutation::Remove(i) => {
                let at = i.index(bytes.len());
                bytes.remove(at);
            }
            Mutation::Truncate(i) => {
                let at = i.index(bytes.len());
                bytes.truncate(at);
            }
        }
    }
}

/// Rewrites the length field to match the bytes after it, so a mutated
/// body gets past framing and into the body decoders.
fn fix_length(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let len = (bytes.len() - 4) as u32;
        bytes[..4].copy_from_slice(&len.to_le_bytes());
    }
}

fn known_api_key() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => proptest::sample::select(ALL_API_KEYS.map(ApiKey::as_u16).to_vec()),
        1 => any::<u16>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        drain(&mut ServerCodec::default(), &bytes);
        drain(&mut ClientCodec::default(), &bytes);
        drain(&mut ServerCodec::new(SMALL), &bytes);
        drain(&mut ClientCodec::new(SMALL), &bytes);
    }

    /// Well-framed, arbitrary bodies reach every body decoder.
    #[test]
    fn arbitrary_bodies_never_panic(
        api_key in known_api_key(),
        request_id in any::<u32>(),
        error_code in prop_oneof![3 => Just(0u16), 1 => any::<u16>()],
        body in vec(any::<u8>(), 0..300),
    ) {
        let request = raw_request(api_key, 0, request_id, &body);
        drain(&mut ServerCodec::default(), &request);
        check_request_canonical(&request, Limits::default())?;
        check_request_canonical(&request, SMALL)?;
        let response = raw_response(api_key, request_id, error_code, &body);
        drain(&mut ClientCodec::default(), &response);
        check_response_canonical(&response, Limits::default())?;
        check_response_canonical(&response, SMALL)?;
    }

    #[test]
    fn mutated_requests_never_panic(
        frame in request_frame(),
        mutations in vec(mutation(), 1..6),
        keep_length in any::<bool>(),
    ) {
        let mut bytes = request_bytes(&frame).to_vec();
        mutate(&mut bytes, &mutations);
        if !keep_length {
            fix_length(&mut bytes);
        }
        drain(&mut ServerCodec::default(), &bytes);
        drain(&mut ServerCodec::new(SMALL), &bytes);
        check_request_canonical(&bytes, Limits::default())?;
    }

    #[test]
    fn mutated_responses_never_panic(
        frame in response_frame(),
        mutations in vec(mutation(), 1..6),
        keep_length in any::<bool>(),
    ) {
        let mut bytes = response_bytes(&frame).to_vec();
        mutate(&mut bytes, &mutations);
        if !keep_length {
            fix_length(&mut bytes);
        }
        drain(&mut ClientCodec::default(), &bytes);
        drain(&mut ClientCodec::new(SMALL), &bytes);
        check_response_canonical(&bytes, Limits::default())?;
    }

    /// A truncated body is always reported, never silently accepted, and
    /// the reported offset lies inside the frame.
    #[test]
    fn truncated_requests_are_rejected_inside_the_frame(
        frame in request_frame(),
        cut in any::<Index>(),
    ) {
        let full = request_bytes(&frame);
        let body_len = full.len() - REQUEST_HEADER_LEN;
        prop_assume!(body_len > 0);
        let keep = REQUEST_HEADER_LEN + cut.index(body_len);
        let mut bytes = full[..keep].to_vec();
        fix_length(&mut bytes);
        let incoming = decode_one_request(&bytes);
        let err = incoming.request.expect_err("a truncated body must not decode");
        prop_assert!(err.offset <= bytes.len(), "{} beyond {}", err, bytes.len());
        prop_assert!(err.offset >= REQUEST_HEADER_LEN, "{}", err);
    }
}
