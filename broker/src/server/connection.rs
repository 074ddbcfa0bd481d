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
//!   answered with a connection-level `RequestTimedOut`, then closed), the
//!   connection was idle (nothing in flight and no byte for
//!   `idle_timeout_ms`: closed), the writer gave up (below), or the
//!   broker shuts down.
//! - At most `max_in_flight_per_connection` requests run at once; one more
//!   is answered with `TooManyRequestsInFlight` at once, so a client cannot
//!   queue unbounded work. A request id already in flight is refused.
//! - The writer drains a bounded channel: a client that stops reading its
//!   responses blocks only its own handlers, and once a response has waited
//!   `frame_timeout` for the client to read, the connection is closed (its
//!   slot, requests and group leases are freed). A response that would exceed
//!   the frame limit (a fetch or settle naming thousands of partitions or
//!   items) is replaced by a `FrameTooLarge` error for that request; the
//!   connection goes on. List answers (ListTopics, ListGroups) do not get
//!   that far: their handlers stop building at the limit and answer
//!   `FrameTooLarge` themselves.
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
//!   request's whole frame is charged to the connection's produce bucket
//!   (its user's, shared by all of the user's connections, with users; see
//!   [`crate::service::quota`]); when it goes into debt the response carries
//!   `throttle_ms` (Produce v1) and the connection is muted: nothing more
//!   is read from it until the debt is paid. Responses still go out.
//! - With a fetch quota (`fetch_quota_bytes_per_sec`), the writer charges
//!   each Fetch and Receive response's whole encoded frame to the fetch
//!   bucket; a response that puts it into debt mutes the connection the
//!   same way: its next request is neither read nor started until the
//!   debt is paid.
//! - With users (`--users`), a connection starts unauthenticated (unless
//!   its client certificate names a user): it may send Handshake and the
//!   SASL requests, which the connection task answers itself, in order
//!   (see [`super::auth`]); any other request is answered
//!   `AuthenticationRequired`. A connection still unauthenticated
//!   `auth_timeout` after it was accepted gets a connection-level
//!   `AuthenticationRequired` and is closed.
//! - The connection is generic over its byte stream (any `AsyncRead` and
//!   `AsyncWrite` halves: plain TCP today, TLS over it later); the wait
//!   for a frame's first byte looks into the read buffer (`fill_buf`), not
//!   at the socket.
//!
//! All of one connection's state is in [`Connection`], one small method per
//! step: [`read_frame`](Connection::read_frame),
//! [`wait_out_mute`](Connection::wait_out_mute) (the quota),
//! [`admit`](Connection::admit) (in-flight limit and request
//! ids), [`dispatch`](Connection::dispatch) (queue a produce, or start the
//! request's task).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use pigeon_protocol::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::auth::{Link, SaslSession};
use super::handlers::{RequestContext, finish_produce, handle, response_frame, submit_produce};
use crate::error::BrokerError;
use crate::metrics;
use crate::service::quota::{Direction, Throttle};
use crate::service::{Broker, SubmittedProduce};

/// Serves one connection, given its two halves, until it ends.
pub async fn serve<R, W>(broker: Arc<Broker>, read: R, write: W, link: Link)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    Connection::new(broker, read, write, link).run().await;
}

/// One connection's state.
struct Connection<R> {
    broker: Arc<Broker>,
    peer: String,
    frames: FramedRead<BufReader<R>, ServerCodec>,
    /// Responses to the writer task.
    responses: mpsc::Sender<Outgoing>,
    writer: JoinHandle<()>,
    /// Requests running at once: at most `max_in_flight`.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// KiB of produce batches read and not yet answered: two frames' worth
    /// (a frame's batches are at most one frame, so one always fits).
    produce_budget: Arc<Semaphore>,
    /// Request ids in flight.
    ids: Arc<Mutex<HashSet<u32>>>,
    /// The connection's consumers' owner and its read budget.
    context: RequestContext,
    /// The quota buckets charged and the mute they set, shared with the
    /// writer (which charges fetch responses).
    throttle: Arc<Throttle>,
    /// Who the client is as the listener saw it (address, TLS, certificate).
    link: Link,
    /// Where the connection is in its authentication.
    sasl: SaslSession,
    /// While unauthenticated on a broker with users: when it is closed.
    auth_deadline: Option<Instant>,
}

/// What the read loop met next.
enum Next {
    /// A frame, or `None` once reading must stop.
    Frame(Option<IncomingRequest>),
    /// The connection did not authenticate in time.
    AuthTimedOut,
}

/// A request as the connection hands it to its task.
enum Work {
    /// A produce already queued at its partitions (or refused as a whole).
    Produce(Result<SubmittedProduce, BrokerError>),
    /// Anything else, handled entirely in the task.
    Other(Request),
}

impl<R: AsyncRead + Unpin + Send + 'static> Connection<R> {
    fn new<W>(broker: Arc<Broker>, read: R, write: W, link: Link) -> Connection<R>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let peer = link.peer.to_string();
        let config = &broker.config;
        let limits = Limits {
            max_frame_size: config.max_frame_bytes,
            max_batch_size: config.log.max_batch_bytes,
        };
        let max_in_flight = config.max_in_flight_per_connection as usize;
        let (responses, outbox) = mpsc::channel::<Outgoing>(max_in_flight);
        let caller = broker.new_caller(link.peer, link.tls, link.certificate_user.as_deref());
        let throttle = Arc::new(Throttle::new(broker.connection_quota(&caller)));
        let codec = MeteredCodec {
            inner: ServerCodec::new(limits),
            throttle: throttle.clone(),
        };
        let writer = tokio::spawn(write_responses(
            FramedWrite::new(write, codec),
            outbox,
            config.frame_timeout,
            peer.clone(),
        ));
        // Bytes (in KiB) of fetched records read for this connection and
        // not yet handed to the socket: a client that reads slowly, or not
        // at all, pins at most two frames' worth of them.
        let two_frames_kib = (2 * config.max_frame_bytes as usize).div_ceil(1024);
        let auth_deadline =
            (!caller.is_authenticated()).then(|| Instant::now() + config.auth_timeout);
        let context = RequestContext {
            owner: broker.members.new_connection(),
            read_budget: Arc::new(Semaphore::new(two_frames_kib)),
            caller: Arc::new(caller),
        };
        Connection {
            frames: FramedRead::new(BufReader::new(read), ServerCodec::new(limits)),
            responses,
            writer,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            produce_budget: Arc::new(Semaphore::new(two_frames_kib)),
            ids: Arc::new(Mutex::new(HashSet::new())),
            context,
            throttle,
            peer,
            broker,
            link,
            sasl: SaslSession::default(),
            auth_deadline,
        }
    }

    async fn run(mut self) {
        loop {
            let next = match self.auth_deadline {
                None => Next::Frame(self.read_frame().await),
                Some(deadline) => tokio::select! {
                    frame = self.read_frame() => Next::Frame(frame),
                    _ = tokio::time::sleep_until(deadline.into()) => Next::AuthTimedOut,
                },
            };
            match next {
                Next::Frame(Some(incoming)) => {
                    // A fetch response written meanwhile may have put the
                    // connection in debt: the request waits it out.
                    if !self.wait_out_mute().await {
                        break;
                    }
                    self.take(incoming).await
                }
                Next::Frame(None) => break,
                Next::AuthTimedOut => {
                    self.auth_timed_out();
                    break;
                }
            }
        }
        self.close().await;
    }

    /// The connection did not authenticate within `auth_timeout`: says
    /// why, then the connection closes.
    fn auth_timed_out(&self) {
        let timeout = self.broker.config.auth_timeout;
        tracing::info!(peer = %self.peer, "closing a connection that did not authenticate within {timeout:?}");
        metrics::error(ErrorCode::AuthenticationRequired);
        let message = format!(
            "the connection did not authenticate within {} ms of connecting (auth_timeout_ms); it is closed. Authenticate first (pigeon --user NAME, with PIGEON_PASSWORD or --password-file)",
            timeout.as_millis()
        );
        let _ = self
            .responses
            .try_send(connection_error(ErrorCode::AuthenticationRequired, message).into());
    }

    /// Runs one SASL step here, before the next frame is read, so that the
    /// requests after it act as the user it authenticated.
    async fn authenticate(&mut self, header: RequestHeader, request: Request) {
        let (result, caller) = self.sasl.answer(&self.broker, &self.link, request).await;
        if let Some(caller) = caller {
            self.throttle.set(self.broker.connection_quota(&caller));
            self.context.caller = Arc::new(caller);
            self.auth_deadline = None;
        }
        let _ = self
            .responses
            .send(response_frame(&header, result).into())
            .await;
    }

    /// Whether `request` must wait for authentication: answers it if so.
    async fn refused_unauthenticated(&mut self, header: &RequestHeader, request: &Request) -> bool {
        if self.context.caller.is_authenticated() || matches!(request, Request::Handshake(_)) {
            return false;
        }
        metrics::error(ErrorCode::AuthenticationRequired);
        let message = format!(
            "{:?} needs an authenticated connection: authenticate first with SaslHandshake and SaslAuthenticate (pigeon --user NAME, with PIGEON_PASSWORD or --password-file)",
            request.api_key()
        );
        let frame = ResponseFrame::error(header, ErrorCode::AuthenticationRequired, message);
        let _ = self.responses.send(frame.into()).await;
        true
    }

    /// The next whole frame, or `None` once the connection must stop
    /// reading (closed, unreadable frame, frame timeout, writer gone,
    /// shutdown); a fatal error is answered before.
    async fn read_frame(&mut self) -> Option<IncomingRequest> {
        let shutdown = self.broker.shutdown.clone();
        // Throttled: read nothing until the connection's debt is paid.
        if !self.wait_out_mute().await {
            return None;
        }
        // Between frames the connection may idle as long as it likes; the
        // frame clock starts with the first byte of the next frame.
        if self.frames.read_buffer().is_empty() {
            let idle = self.broker.config.caps.idle_timeout;
            loop {
                tokio::select! {
                    // An error or the end of the stream shows up in `next` below.
                    _ = self.frames.get_mut().fill_buf() => break,
                    _ = shutdown.cancelled() => return None,
                    // The writer gave up on a client that does not read.
                    _ = self.responses.closed() => return None,
                    _ = idle_for(idle) => {
                        // Idle only with nothing in flight (a long-poll
                        // waiting for data is not idleness).
                        if self.in_flight.available_permits() == self.max_in_flight {
                            tracing::info!(peer = %self.peer, "closing a connection idle for {:?} (idle_timeout_ms)", idle.unwrap_or_default());
                            return None;
                        }
                    }
                }
            }
        }
        let frame_timeout = self.broker.config.frame_timeout;
        let item = tokio::select! {
            item = tokio::time::timeout(frame_timeout, self.frames.next()) => item,
            _ = shutdown.cancelled() => return None,
            _ = self.responses.closed() => return None,
        };
        match item {
            Err(_) => {
                self.frame_timed_out();
                None
            }
            Ok(None) => None,
            Ok(Some(Err(e))) if matches!(e.kind, CodecErrorKind::Io { .. }) => {
                // The client closed mid-frame or the socket failed: nobody
                // is left to tell.
                tracing::debug!(peer = %self.peer, error = %e, "connection ended");
                None
            }
            Ok(Some(Err(e))) => {
                tracing::info!(peer = %self.peer, error = %e, "closing a connection after an unreadable frame");
                metrics::error(e.error_code());
                let _ = self
                    .responses
                    .send(ResponseFrame::connection_error(&e).into())
                    .await;
                None
            }
            Ok(Some(Ok(incoming))) => Some(incoming),
        }
    }

    /// Waits until the connection's quota debt is paid, if it is muted;
    /// false if the broker shuts down meanwhile.
    async fn wait_out_mute(&self) -> bool {
        let Some(until) = self.throttle.take_mute() else {
            return true;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => true,
            _ = self.broker.shutdown.cancelled() => false,
        }
    }

    /// A frame did not arrive whole in time (slowloris): says why, then
    /// the connection closes.
    fn frame_timed_out(&self) {
        let frame_timeout = self.broker.config.frame_timeout;
        tracing::info!(peer = %self.peer, buffered = self.frames.read_buffer().len(),
            "closing a connection whose frame did not arrive whole within {frame_timeout:?}");
        metrics::frame_timed_out();
        metrics::error(ErrorCode::RequestTimedOut);
        let message = format!(
            "a request frame did not arrive whole within {} ms of its first byte (frame_timeout_ms); the connection is closed",
            frame_timeout.as_millis()
        );
        let _ = self
            .responses
            .try_send(connection_error(ErrorCode::RequestTimedOut, message).into());
    }

    /// Takes one decoded frame: charges the quota, answers a malformed
    /// body, admits the request and dispatches it.
    async fn take(&mut self, incoming: IncomingRequest) {
        let header = incoming.header;
        let produce_bytes = match &incoming.request {
            Ok(Request::Produce(produce)) => Some(batch_bytes(produce)),
            _ => None,
        };
        // The whole frame, header and body: many tiny produces pay for
        // their overhead as much as one large one for its records.
        let throttle = if header.api_key == ApiKey::Produce.as_u16() {
            self.throttle
                .charge(Direction::Produce, u64::from(incoming.frame_bytes))
        } else {
            Duration::ZERO
        };
        let request = match incoming.request {
            Ok(request) => request,
            Err(e) => {
                metrics::error(e.error_code());
                let frame = ResponseFrame::for_codec_error(&header, &e);
                let _ = self.responses.send(frame.into()).await;
                return;
            }
        };
        if matches!(
            request,
            Request::SaslHandshake(_) | Request::SaslAuthenticate(_)
        ) {
            return self.authenticate(header, request).await;
        }
        if self.refused_unauthenticated(&header, &request).await {
            return;
        }
        if let Some(permit) = self.admit(&header).await {
            self.dispatch(
                header,
                request,
                produce_bytes.unwrap_or(0),
                throttle,
                permit,
            )
            .await;
        }
    }

    /// A slot for the request, unless `max_in_flight` requests already run
    /// or its id is already in flight (both answered at once).
    async fn admit(&mut self, header: &RequestHeader) -> Option<OwnedSemaphorePermit> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            metrics::error(ErrorCode::TooManyRequestsInFlight);
            let message = format!(
                "{} requests are already in flight on this connection; wait for responses",
                self.max_in_flight
            );
            let frame = ResponseFrame::error(header, ErrorCode::TooManyRequestsInFlight, message);
            let _ = self.responses.send(frame.into()).await;
            return None;
        };
        if !self.ids.lock().insert(header.request_id) {
            let message = format!(
                "request id {} is already in flight on this connection",
                header.request_id
            );
            let frame = ResponseFrame::error(header, ErrorCode::DuplicateRequestId, message);
            let _ = self.responses.send(frame.into()).await;
            return None;
        }
        Some(permit)
    }

    /// Starts the request's task. A produce is queued at its partitions'
    /// writers here, before the next frame is read: pipelined produces
    /// reach a partition in the order the client sent them. Only the wait
    /// for the commit runs in the task.
    async fn dispatch(
        &mut self,
        header: RequestHeader,
        request: Request,
        produce_bytes: u64,
        throttle: Duration,
        permit: OwnedSemaphorePermit,
    ) {
        let (work, produce_permit) = match request {
            Request::Produce(req) => {
                // Held until the produce is answered: while a connection's
                // produces in flight carry this many bytes, it reads no
                // more (back-pressure instead of memory growth).
                let kib = u32::try_from(produce_bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
                let produce_permit = tokio::select! {
                    permit = self.produce_budget.clone().acquire_many_owned(kib) => permit.ok(),
                    _ = self.broker.shutdown.cancelled() => None,
                };
                let checked = self.broker.checked(&self.context.caller);
                let submitted = submit_produce(&checked, req).await;
                (Work::Produce(submitted), produce_permit)
            }
            other => (Work::Other(other), None),
        };
        let (broker, responses) = (self.broker.clone(), self.responses.clone());
        let (ids, context) = (self.ids.clone(), self.context.clone());
        tokio::spawn(async move {
            let (mut response, held) = match work {
                Work::Produce(submitted) => (
                    response_frame(&header, finish_produce(submitted).await),
                    None,
                ),
                Work::Other(request) => handle(&broker, &context, &header, request).await,
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

    /// Ends the connection. When the client went away (or is closed for
    /// misbehaving), its consumers leave first: their leases return at
    /// once and their pending long-polls end, so nothing more is leased to
    /// a member nobody will hear from. At a broker shutdown, the requests
    /// already accepted finish and are answered first (acks just before
    /// the stop count), then the consumers leave. Then the writer drains.
    async fn close(self) {
        if !self.broker.shutdown.is_cancelled() {
            self.broker.leave_all(&self.context.owner).await;
        }
        let _ = self.in_flight.acquire_many(self.max_in_flight as u32).await;
        self.broker.leave_all(&self.context.owner).await;
        drop(self.responses);
        let _ = self.writer.await;
    }
}

/// Sleeps `idle` (for ever with `None`).
async fn idle_for(idle: Option<Duration>) {
    match idle {
        Some(idle) => tokio::time::sleep(idle).await,
        None => std::future::pending().await,
    }
}

/// A produce's record-batch bytes.
fn batch_bytes(produce: &ProduceRequest) -> u64 {
    produce
        .partitions
        .iter()
        .flat_map(|p| &p.batches)
        .map(|b| b.len() as u64)
        .sum()
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
async fn write_responses<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, MeteredCodec>,
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

/// The server codec, charging every Fetch and Receive response's encoded
/// frame to the connection's fetch quota as it is written.
struct MeteredCodec {
    inner: ServerCodec,
    throttle: Arc<Throttle>,
}

impl tokio_util::codec::Encoder<ResponseFrame> for MeteredCodec {
    type Error = CodecError;

    fn encode(
        &mut self,
        frame: ResponseFrame,
        dst: &mut bytes::BytesMut,
    ) -> Result<(), CodecError> {
        let api_key = frame.api_key();
        let before = dst.len();
        self.inner.encode(frame, dst)?;
        if api_key == ApiKey::Fetch.as_u16() || api_key == ApiKey::Receive.as_u16() {
            let written = dst.len().saturating_sub(before) as u64;
            self.throttle.charge(Direction::Fetch, written);
        }
        Ok(())
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
async fn feed<W: AsyncWrite + Unpin>(
    sink: &mut FramedWrite<W, MeteredCodec>,
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
