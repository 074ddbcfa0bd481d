//! Property tests: every request and response type survives encode →
//! decode, alone and through the codecs over a byte stream cut anywhere.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::strategies::*;
use super::support::*;
use crate::*;

fn check_request(request: Request, request_id: u32) -> Result<(), TestCaseError> {
    let frame = RequestFrame {
        request_id,
        api_version: 0,
        request: request.clone(),
    };
    let bytes = request_bytes(&frame);
    let length = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    prop_assert_eq!(length as usize, bytes.len() - 4);
    let incoming = decode_one_request(&bytes);
    prop_assert_eq!(
        incoming.header,
        RequestHeader {
            api_key: request.api_key().as_u16(),
            api_version: 0,
            request_id,
        }
    );
    prop_assert_eq!(incoming.request, Ok(request));
    Ok(())
}

fn check_response(frame: ResponseFrame) -> Result<(), TestCaseError> {
    let bytes = response_bytes(&frame);
    let incoming = decode_one_response(&bytes);
    let error_code = match &frame.body {
        ResponseBody::Ok(_) => ErrorCode::None,
        ResponseBody::Error(e) => e.code,
    };
    prop_assert_eq!(
        incoming.header,
        ResponseHeader {
            api_key: frame.api_key(),
            api_version: frame.api_version,
            request_id: frame.request_id,
            error_code,
        }
    );
    prop_assert_eq!(incoming.body, Ok(frame.body));
    Ok(())
}

fn check_ok_response(response: Response, request_id: u32) -> Result<(), TestCaseError> {
    check_response(ResponseFrame::ok(request_id, 0, response))
}

/// Request ids a client may use.
fn request_id() -> impl Strategy<Value = u32> {
    0..CONNECTION_ERROR_REQUEST_ID
}

proptest! {
    #[test]
    fn handshake_request_round_trips(body in handshake_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn handshake_response_round_trips(body in handshake_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn create_topic_request_round_trips(body in create_topic_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn create_topic_response_round_trips(id in any::<u32>()) {
        check_ok_response(CreateTopicResponse.into(), id)?;
    }

    #[test]
    fn delete_topic_request_round_trips(body in delete_topic_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn register_producer_request_round_trips(body in register_producer_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn register_producer_response_round_trips(body in register_producer_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn delete_topic_response_round_trips(id in any::<u32>()) {
        check_ok_response(DeleteTopicResponse.into(), id)?;
    }

    #[test]
    fn list_topics_request_round_trips(id in request_id()) {
        check_request(ListTopicsRequest.into(), id)?;
    }

    #[test]
    fn list_topics_response_round_trips(body in list_topics_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn describe_topic_request_round_trips(body in describe_topic_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn describe_topic_response_round_trips(body in describe_topic_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn produce_request_round_trips(body in produce_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn produce_response_round_trips(body in produce_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn produce_v1_round_trips_with_its_throttle(
        request in produce_request(),
        body in produce_response(),
        throttle_ms in any::<u32>(),
        id in request_id(),
    ) {
        // The request layout is unchanged in version 1.
        let frame = RequestFrame { request_id: id, api_version: 1, request: request.clone().into() };
        let incoming = decode_one_request(&request_bytes(&frame));
        prop_assert_eq!(incoming.header.api_version, 1);
        prop_assert_eq!(incoming.request, Ok(Request::from(request)));
        let body = ProduceResponse { throttle_ms, ..body };
        check_response(ResponseFrame::ok(id, 1, body))?;
    }

    #[test]
    fn fetch_request_round_trips(body in fetch_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn fetch_response_round_trips(body in fetch_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn list_offsets_request_round_trips(body in list_offsets_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn list_offsets_response_round_trips(body in list_offsets_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn create_group_request_round_trips(body in create_group_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn create_group_response_round_trips(id in any::<u32>()) {
        check_ok_response(CreateGroupResponse.into(), id)?;
    }

    #[test]
    fn describe_group_request_round_trips(body in describe_group_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn describe_group_response_round_trips(body in describe_group_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn alter_group_request_round_trips(body in alter_group_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn alter_group_response_round_trips(id in any::<u32>()) {
        check_ok_response(AlterGroupResponse.into(), id)?;
    }

    #[test]
    fn seek_group_request_round_trips(body in seek_group_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn seek_group_response_round_trips(body in seek_group_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn pause_group_request_round_trips(body in pause_group_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn pause_group_response_round_trips(id in any::<u32>()) {
        check_ok_response(PauseGroupResponse.into(), id)?;
    }

    #[test]
    fn delete_group_request_round_trips(body in delete_group_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn delete_group_response_round_trips(id in any::<u32>()) {
        check_ok_response(DeleteGroupResponse.into(), id)?;
    }

    #[test]
    fn join_group_request_round_trips(body in join_group_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn join_group_response_round_trips(body in join_group_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn receive_request_round_trips(body in receive_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn receive_response_round_trips(body in receive_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn settle_request_round_trips(body in settle_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn settle_v1_round_trips_with_attempts(
        body in settle_request(),
        attempts in proptest::collection::vec(any::<u32>(), 6),
        id in request_id(),
    ) {
        let mut body = body;
        for (item, attempt) in body.items.iter_mut().zip(attempts) {
            item.attempt = attempt;
        }
        let frame = RequestFrame { request_id: id, api_version: 1, request: body.clone().into() };
        let incoming = decode_one_request(&request_bytes(&frame));
        prop_assert_eq!(incoming.header.api_version, 1);
        prop_assert_eq!(incoming.request, Ok(Request::from(body)));
    }

    #[test]
    fn settle_v2_round_trips_with_releases(
        body in settle_request(),
        releases in proptest::collection::vec(any::<bool>(), 6),
        id in request_id(),
    ) {
        let mut body = body;
        for (item, release) in body.items.iter_mut().zip(releases) {
            if release {
                item.action = SettleAction::Release;
            }
        }
        let frame = RequestFrame { request_id: id, api_version: 2, request: body.clone().into() };
        let incoming = decode_one_request(&request_bytes(&frame));
        prop_assert_eq!(incoming.header.api_version, 2);
        prop_assert_eq!(incoming.request, Ok(Request::from(body)));
    }

    #[test]
    fn receive_v1_round_trips_with_its_byte_bound(
        body in receive_request(),
        max_bytes in any::<u32>(),
        id in request_id(),
    ) {
        let body = ReceiveRequest { max_bytes, ..body };
        let frame = RequestFrame { request_id: id, api_version: 1, request: body.clone().into() };
        let incoming = decode_one_request(&request_bytes(&frame));
        prop_assert_eq!(incoming.header.api_version, 1);
        prop_assert_eq!(incoming.request, Ok(Request::from(body)));
    }

    #[test]
    fn settle_response_round_trips(body in settle_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn message_state_request_round_trips(body in message_state_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn message_state_response_round_trips(body in message_state_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn redrive_request_round_trips(body in redrive_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn redrive_response_round_trips(body in redrive_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn alter_topic_request_round_trips(body in alter_topic_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn alter_topic_response_round_trips(body in alter_topic_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn list_groups_request_round_trips(body in list_groups_request(), id in request_id()) {
        check_request(body.into(), id)?;
    }

    #[test]
    fn list_groups_response_round_trips(body in list_groups_response(), id in any::<u32>()) {
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn describe_broker_round_trips(body in describe_broker_response(), id in request_id()) {
        check_request(DescribeBrokerRequest.into(), id)?;
        check_ok_response(body.into(), id)?;
    }

    #[test]
    fn redrive_v1_request_and_response_round_trip(
        request in redrive_request(),
        body in redrive_response_v1(),
        id in request_id(),
    ) {
        // The request layout is unchanged in version 1.
        let frame = RequestFrame { request_id: id, api_version: 1, request: request.clone().into() };
        let incoming = decode_one_request(&request_bytes(&frame));
        prop_assert_eq!(incoming.header.api_version, 1);
        prop_assert_eq!(incoming.request, Ok(Request::from(request)));
        check_response(ResponseFrame::ok(id, 1, body))?;
    }

    #[test]
    fn error_responses_round_trip(frame in response_frame()) {
        check_response(frame)?;
    }

    /// Many requests back to back, delivered in arbitrary pieces, come out
    /// whole and in order; nothing is left over.
    #[test]
    fn request_stream_split_anywhere(
        frames in vec(request_frame(), 1..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(&request_bytes(frame));
        }
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        let (items, rest) = decode_chunked(&mut ServerCodec::default(), &stream, &cuts);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(items.len(), frames.len());
        for (item, frame) in items.into_iter().zip(frames) {
            prop_assert_eq!(item.header.request_id, frame.request_id);
            prop_assert_eq!(item.request, Ok(frame.request));
        }
    }

    /// The same for responses on the client side.
    #[test]
    fn response_stream_split_anywhere(
        frames in vec(response_frame(), 1..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(&response_bytes(frame));
        }
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        let (items, rest) = decode_chunked(&mut ClientCodec::default(), &stream, &cuts);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(items.len(), frames.len());
        for (item, frame) in items.into_iter().zip(frames) {
            prop_assert_eq!(item.header.request_id, frame.request_id);
            prop_assert_eq!(item.body, Ok(frame.body));
        }
    }

    /// Record batches are handed over as slices of the frame, not copies.
    #[test]
    fn record_batches_are_zero_copy(body in produce_request()) {
        let frame = request_bytes(&RequestFrame {
            request_id: 1,
            api_version: 0,
            request: body.into(),
        });
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let incoming = decode_request(frame.clone(), Limits::default()).expect("header");
        let Ok(Request::Produce(decoded)) = incoming.request else {
            return Err(TestCaseError::fail("not a produce request"));
        };
        for batch in decoded.partitions.iter().flat_map(|p| &p.batches) {
            if !batch.is_empty() {
                let at = batch.as_ptr() as usize;
                prop_assert!(range.contains(&at) && at + batch.len() <= range.end);
            }
        }
    }

    /// Delivered keys, values and header values are slices of the frame.
    #[test]
    fn delivered_bytes_are_zero_copy(body in receive_response()) {
        let frame = response_bytes(&ResponseFrame::ok(1, 0, body));
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let incoming = decode_response(frame.clone(), Limits::default()).expect("header");
        let Ok(ResponseBody::Ok(Response::Receive(decoded))) = incoming.body else {
            return Err(TestCaseError::fail("not a receive response"));
        };
        let slices = decoded.deliveries.iter().flat_map(|d| {
            d.key
                .iter()
                .chain(std::iter::once(&d.value))
                .chain(d.headers.iter().map(|h| &h.value))
        });
        for bytes in slices.filter(|b| !b.is_empty()) {
            let at = bytes.as_ptr() as usize;
            prop_assert!(range.contains(&at) && at + bytes.len() <= range.end);
        }
    }

    /// Fetched records are slices of the frame too.
    #[test]
    fn fetched_records_are_zero_copy(body in fetch_response()) {
        let frame = response_bytes(&ResponseFrame::ok(1, 0, body));
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let incoming = decode_response(frame.clone(), Limits::default()).expect("header");
        let Ok(ResponseBody::Ok(Response::Fetch(decoded))) = incoming.body else {
            return Err(TestCaseError::fail("not a fetch response"));
        };
        for records in decoded.partitions.iter().map(|p| &p.records).filter(|r| !r.is_empty()) {
            let at = records.as_ptr() as usize;
            prop_assert!(range.contains(&at) && at + records.len() <= range.end);
        }
    }
}

#[test]
fn a_stream_of_one_byte_chunks_decodes() {
    let frame = RequestFrame {
        request_id: 42,
        api_version: 0,
        request: ProduceRequest {
            timeout_ms: 1000,
            topic: "orders".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                batches: vec![Bytes::from_static(b"batch-one"), Bytes::from_static(b"two")],
            }],
        }
        .into(),
    };
    let bytes = request_bytes(&frame);
    let cuts: Vec<usize> = (0..bytes.len()).collect();
    let (items, rest) = decode_chunked(&mut ServerCodec::default(), &bytes, &cuts);
    assert!(rest.is_empty());
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].request, Ok(frame.request));
}
