//! One client connection: frames in, requests handled concurrently,
//! responses out in completion order (matched by request id).
//!
//! - Reading stops when the client closes, a frame is unreadable (its
//!   length is too large or too small: answered with a connection-level
//!   error, then closed), a started frame stalls longer than the frame
//!   timeout, or the broker shuts down.
//! - At most `max_in_flight_per_connection` requests run at once; one more
//!   is answered with `TooManyRequestsInFlight` at once, so a client cannot
//!   queue unbounded work. A request id already in flight is refused.
//! - The writer drains a bounded channel: a client that stops reading its
//!   responses blocks only its own handlers.
//! - Malformed bodies get an error response and the connection goes on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use pigeon_client::protocol::*;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::Broker;
use super::handlers::handle;
use crate::metrics;

/// How long a frame may take to arrive once its first byte has.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

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
    let (responses, outbox) = mpsc::channel::<ResponseFrame>(max_in_flight);
    let writer = tokio::spawn(write_responses(
        FramedWrite::new(write, ServerCodec::new(limits)),
        outbox,
    ));
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let ids = Arc::new(Mutex::new(HashSet::new()));
    let members = Arc::new(super::group_handlers::Membership::default());
    loop {
        let next = async {
            if frames.read_buffer().is_empty() {
                Ok(frames.next().await)
            } else {
                tokio::time::timeout(FRAME_TIMEOUT, frames.next()).await
            }
        };
        let item = tokio::select! {
            item = next => item,
            _ = broker.shutdown.cancelled() => break,
        };
        let incoming = match item {
            Err(_) => {
                tracing::info!(%peer, "closing a connection whose frame stalled for {FRAME_TIMEOUT:?}");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(%peer, error = %e, "closing a connection after an unreadable frame");
                metrics::error(e.error_code());
                let _ = responses.send(ResponseFrame::connection_error(&e)).await;
                break;
            }
            Ok(Some(Ok(incoming))) => incoming,
        };
        let header = incoming.header;
        let request = match incoming.request {
            Ok(request) => request,
            Err(e) => {
                metrics::error(e.error_code());
                let _ = responses
                    .send(ResponseFrame::for_codec_error(&header, &e))
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
                .send(ResponseFrame::error(
                    &header,
                    ErrorCode::TooManyRequestsInFlight,
                    message,
                ))
                .await;
            continue;
        };
        if !ids.lock().insert(header.request_id) {
            let message = format!(
                "request id {} is already in flight on this connection",
                header.request_id
            );
            let _ = responses
                .send(ResponseFrame::error(
                    &header,
                    ErrorCode::DuplicateRequestId,
                    message,
                ))
                .await;
            continue;
        }
        let (broker, responses, ids, members) = (
            broker.clone(),
            responses.clone(),
            ids.clone(),
            members.clone(),
        );
        tokio::spawn(async move {
            let response = handle(&broker, &members, &header, request).await;
            ids.lock().remove(&header.request_id);
            let _ = responses.send(response).await;
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

async fn write_responses(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, ServerCodec>,
    mut outbox: mpsc::Receiver<ResponseFrame>,
) {
    while let Some(frame) = outbox.recv().await {
        // Write everything queued, then flush once.
        let mut result = sink.feed(frame).await;
        while result.is_ok()
            && let Ok(more) = outbox.try_recv()
        {
            result = sink.feed(more).await;
        }
        let flushed = match result {
            Ok(()) => SinkExt::<ResponseFrame>::flush(&mut sink).await,
            Err(e) => Err(e),
        };
        if let Err(e) = flushed {
            tracing::debug!(error = %e, "connection write failed");
            return;
        }
    }
}
