//! One client connection: frames in, requests handled concurrently,
//! responses out in completion order (matched by request id). Produces are
//! the one ordered part: each is queued at its partitions' writers before
//! the next frame is read, so pipelined batches of a partition are
//! appended in the order the client sent them.
//!
//! - Reading stops when the client closes, a frame is unreadable (its
//!   length is too large or too small: answered with a connection-level
//!   error, then closed), a frame is not whole within `frame_timeout` of
//!   its first byte (slowloris: trickling bytes does not reset the clock;
//!   an idle connection between frames is not timed; answered with a
//!   connection-level `RequestTimedOut`, then closed), the writer gave up
//!   (below), or the broker shuts down.
//! - At most `max_in_flight_per_connection` requests run at once; one more
//!   is answered with `TooManyRequestsInFlight` at once, so a client cannot
//!   queue unbounded work. A request id already in flight is refused.
//! - The writer drains a bounded channel: a client that stops reading its
//!   responses blocks only its own handlers, and once a response has waited
//!   `frame_timeout` for the client to read, the connection is closed (its
//!   slot, requests and group leases are freed). A response that would exceed
//!   the frame limit (a fetch or settle naming thousands of partitions or
//!   items) is replaced by a `FrameTooLarge` error for that request; the
//!   connection goes on.
//! - Produce batches count against the connection's produce budget (two
//!   frames' worth) from the read until the produce is answered: when
//!   produces in flight hold that much, the connection reads nothing more
//!   until one is answered, so a client pipelining large produces faster
//!   than the disk commits them pins at most that much memory.
//! - Fetched records count against the connection's read budget (two
//!   frames' worth) from the read until the response is in the socket's
//!   buffer: a fetch waits for budget before reading, so a client that
//!   does not read its responses pins at most that much memory, and its
//!   pipelined fetches stop reading the log.
//! - Malformed bodies get an error response and the connection goes on.
//! - With a produce quota (`produce_quota_bytes_per_sec`), each produce
//!   request's batch bytes are charged to the connection's
//!   [`TokenBucket`]; when it goes into debt the response carries
//!   `throttle_ms` (Produce v1) and the connection is muted: nothing more
//!   is read from it until the debt is paid. Responses still go out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use pigeon_protocol::*;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::Broker;
use super::handlers::{SubmittedProduce, handle, response_frame, submit_produce};
use super::quota::TokenBucket;
use crate::metrics;

/// Serves one connection until it ends.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let limits = Limits {
        max_frame_size: broker.config.max_frame_bytes,
        max_batch_size: broker.config.log.max_batch_bytes,
    };
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, ServerCodec::new(limits));
    let max_in_flight = broker.config.max_in_flight_per_connection as usize;
    let (responses, outbox) = mpsc::channel::<Outgoing>(max_in_flight);
    // Bytes (in KiB) of fetched records read for this connection and not
    // yet handed to the socket: a client that reads slowly, or not at all,
    // pins at most two frames' worth of them.
    let read_budget = Arc::new(Semaphore::new(
        (2 * broker.config.max_frame_bytes as usize).div_ceil(1024),
    ));
    let writer = tokio::spawn(write_responses(
        FramedWrite::new(write, ServerCodec::new(limits)),
        outbox,
        broker.config.frame_timeout,
        peer.clone(),
    ));
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    // KiB of produce batches read and not yet answered: two frames' worth
    // (a frame's batches are at most one frame, so one always fits).
    let produce_budget = Arc::new(Semaphore::new(
        (2 * broker.config.max_frame_bytes as usize).div_ceil(1024),
    ));
    let ids = Arc::new(Mutex::new(HashSet::new()));
    let members = Arc::new(super::group_handlers::Membership::default());
    let frame_timeout = broker.config.frame_timeout;
    let mut quota = broker
        .config
        .produce_quota_bytes_per_sec
        .map(|rate| TokenBucket::new(rate, Instant::now()));
    let mut muted_until: Option<Instant> = None;
    loop {
        // Throttled: read nothing until the connection's debt is paid.
        if let Some(until) = muted_until.take() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = broker.shutdown.cancelled() => break,
            }
        }
        // Between frames the connection may idle as long as it likes; the
        // frame clock starts with the first byte of the next frame.
        if frames.read_buffer().is_empty() {
            let mut first = [0u8; 1];
            tokio::select! {
                // An error or the end of the stream shows up in `next` below.
                _ = frames.get_mut().peek(&mut first) => {}
                _ = broker.shutdown.cancelled() => break,
                // The writer gave up on a client that does not read.
                _ = responses.closed() => break,
            }
        }
        let item = tokio::select! {
            item = tokio::time::timeout(frame_timeout, frames.next()) => item,
            _ = broker.shutdown.cancelled() => break,
            _ = responses.closed() => break,
        };
        let incoming = match item {
            Err(_) => {
                tracing::info!(%peer, buffered = frames.read_buffer().len(),
                    "closing a connection whose frame did not arrive whole within {frame_timeout:?}");
                metrics::frame_timed_out();
                metrics::error(ErrorCode::RequestTimedOut);
                let message = format!(
                    "a request frame did not arrive whole within {} ms of its first byte (frame_timeout_ms); the connection is closed",
                    frame_timeout.as_millis()
                );
                let _ = responses
                    .try_send(connection_error(ErrorCode::RequestTimedOut, message).into());
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) if matches!(e.kind, CodecErrorKind::Io { .. }) => {
                // The client closed mid-frame or the socket failed: nobody
                // is left to tell.
                tracing::debug!(%peer, error = %e, "connection ended");
                break;
            }
            Ok(Some(Err(e))) => {
                tracing::info!(%peer, error = %e, "closing a connection after an unreadable frame");
                metrics::error(e.error_code());
                let _ = responses
                    .send(ResponseFrame::connection_error(&e).into())
                    .await;
                break;
            }
            Ok(Some(Ok(incoming))) => incoming,
        };
        let header = incoming.header;
        let produce_bytes: u64 = match &incoming.request {
            Ok(Request::Produce(produce)) => produce
                .partitions
                .iter()
                .flat_map(|p| &p.batches)
                .map(|b| b.len() as u64)
                .sum(),
            _ => 0,
        };
        let throttle = match (&mut quota, &incoming.request) {
            (Some(bucket), Ok(Request::Produce(_))) => {
                let now = Instant::now();
                let wait = bucket.charge(produce_bytes, now);
                if !wait.is_zero() {
                    metrics::produce_throttled(wait);
                    muted_until = Some(now + wait);
                }
                wait
            }
            _ => Duration::ZERO,
        };
        let request = match incoming.request {
            Ok(request) => request,
            Err(e) => {
                metrics::error(e.error_code());
                let _ = responses
                    .send(ResponseFrame::for_codec_error(&header, &e).into())
                    .await;
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            metrics::error(ErrorCode::TooManyRequestsInFlight);
            let message = format!(
                "{max_in_flight} requests are already in flight on this connection; wait for responses"
            );
            let _ = responses
                .send(
                    ResponseFrame::error(&header, ErrorCode::TooManyRequestsInFlight, message)
                        .into(),
                )
                .await;
            continue;
        };
        if !ids.lock().insert(header.request_id) {
            let message = format!(
                "request id {} is already in flight on this connection",
                header.request_id
            );
            let _ = responses
                .send(ResponseFrame::error(&header, ErrorCode::DuplicateRequestId, message).into())
                .await;
            continue;
        }
        // A produce is queued at its partitions' writers here, before the
        // next frame is read: pipelined produces reach a partition in the
        // order the client sent them. Only the wait for the commit runs in
        // the request's task.
        let (work, produce_permit) = match request {
            Request::Produce(req) => {
                // Held until the produce is answered: while a connection's
                // produces in flight carry this many bytes, it reads no
                // more (back-pressure instead of memory growth).
                let kib = u32::try_from(produce_bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
                let permit = tokio::select! {
                    permit = produce_budget.clone().acquire_many_owned(kib) => permit.ok(),
                    _ = broker.shutdown.cancelled() => None,
                };
                (Work::Produce(submit_produce(&broker, req).await), permit)
            }
            other => (Work::Other(other), None),
        };
        let (broker, responses, ids, members, read_budget) = (
            broker.clone(),
            responses.clone(),
            ids.clone(),
            members.clone(),
            read_budget.clone(),
        );
        tokio::spawn(async move {
            let (mut response, held) = match work {
                Work::Produce(submitted) => (produce_response(&header, submitted).await, None),
                Work::Other(request) => {
                    handle(&broker, &members, &read_budget, &header, request).await
                }
            };
            if let ResponseBody::Ok(Response::Produce(produce)) = &mut response.body {
                produce.throttle_ms = u32::try_from(throttle.as_millis()).unwrap_or(u32::MAX);
            }
            ids.lock().remove(&header.request_id);
            drop(produce_permit);
            let _ = responses
                .send(Outgoing {
                    frame: response,
                    _held: held,
                })
                .await;
            drop(permit);
        });
    }
    // Let the requests already accepted finish and their responses go out;
    // then the connection's consumers leave: their leases return at once.
    let _ = in_flight.acquire_many(max_in_flight as u32).await;
    members.leave_all().await;
    drop(responses);
    let _ = writer.await;
}

/// A request as the connection hands it to its task.
enum Work {
    /// A produce already queued at its partitions (or refused as a whole).
    Produce(Result<SubmittedProduce, crate::topics::TopicError>),
    /// Anything else, handled entirely in the task.
    Other(Request),
}

/// The response frame of a submitted produce, once its batches committed.
async fn produce_response(
    header: &RequestHeader,
    submitted: Result<SubmittedProduce, crate::topics::TopicError>,
) -> ResponseFrame {
    let result = match submitted {
        Ok(submitted) => Ok(Response::from(submitted.finish().await)),
        Err(e) => Err(e),
    };
    response_frame(header, result)
}

/// A response on its way to the writer, with what it holds of the
/// connection's read budget (released once it is written).
struct Outgoing {
    frame: ResponseFrame,
    _held: Option<OwnedSemaphorePermit>,
}

impl From<ResponseFrame> for Outgoing {
    fn from(frame: ResponseFrame) -> Self {
        Outgoing { frame, _held: None }
    }
}

/// Writes responses until the connection ends. A client that reads
/// nothing for `stall_timeout` while a response waits to be written is
/// given up on: the writer ends, which ends the connection.
async fn write_responses(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, ServerCodec>,
    mut outbox: mpsc::Receiver<Outgoing>,
    stall_timeout: Duration,
    peer: String,
) {
    let stalled = || {
        tracing::info!(%peer, "closing a connection that read none of its responses for {stall_timeout:?}");
        metrics::frame_timed_out();
    };
    // Each response's read budget is released once it is in the socket's
    // write buffer (the outgoing value is dropped after `feed`).
    while let Some(out) = outbox.recv().await {
        // Write everything queued, then flush once.
        let Ok(mut result) = tokio::time::timeout(stall_timeout, feed(&mut sink, out.frame)).await
        else {
            return stalled();
        };
        while result.is_ok()
            && let Ok(more) = outbox.try_recv()
        {
            let Ok(fed) = tokio::time::timeout(stall_timeout, feed(&mut sink, more.frame)).await
            else {
                return stalled();
            };
            result = fed;
        }
        let flushed = match result {
            Ok(()) => {
                let flush = SinkExt::<ResponseFrame>::flush(&mut sink);
                let Ok(flushed) = tokio::time::timeout(stall_timeout, flush).await else {
                    return stalled();
                };
                flushed
            }
            Err(e) => Err(e),
        };
        if let Err(e) = flushed {
            tracing::debug!(error = %e, "connection write failed");
            return;
        }
    }
}

/// A connection-level error: request id `0xFFFFFFFF`, API key `0xFFFF`.
pub(super) fn connection_error(code: ErrorCode, message: String) -> ResponseFrame {
    let header = RequestHeader {
        api_key: CONNECTION_ERROR_API_KEY,
        api_version: 0,
        request_id: CONNECTION_ERROR_REQUEST_ID,
    };
    ResponseFrame::error(&header, code, message)
}

/// Queues one response for writing. A response that cannot be encoded (it
/// would exceed the frame limit) is replaced by an error answering the same
/// request, so that the client learns why and the connection goes on; only
/// a failed write ends the connection.
async fn feed(
    sink: &mut FramedWrite<tokio::net::tcp::OwnedWriteHalf, ServerCodec>,
    frame: ResponseFrame,
) -> Result<(), CodecError> {
    let header = RequestHeader {
        api_key: frame.api_key(),
        api_version: frame.api_version,
        request_id: frame.request_id,
    };
    match sink.feed(frame).await {
        Err(e) if !matches!(e.kind, CodecErrorKind::Io { .. }) => {
            let code = match e.kind {
                CodecErrorKind::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
                _ => ErrorCode::Internal,
            };
            tracing::info!(request_id = header.request_id, error = %e, "a response could not be encoded");
            metrics::error(code);
            let message = format!(
                "the response to this request could not be sent: {e}; ask for less in one request (fewer partitions, items or bytes)"
            );
            sink.feed(ResponseFrame::error(&header, code, message))
                .await
        }
        other => other,
    }
}
