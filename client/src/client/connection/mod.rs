//! [`Client`]: one multiplexed, self-healing connection to a broker.
//!
//! This module owns the TCP connection, the handshake, reconnection and the
//! circuit breaker; request ids and the matching of responses to requests
//! are in [`pending`]. Everything else in the client library talks to the
//! broker through [`Client::request`].
//!
//! ## How a connection works
//!
//! One `Framed<BrokerStream, ClientCodec>` (plain TCP, or TLS with
//! [`ClientConfig::tls`]) is split in two tasks:
//!
//! - the *writer* drains a bounded queue of request frames into the socket
//!   (a full queue makes [`Client::request`] wait: back-pressure), batching
//!   whatever is queued into one flush;
//! - the *reader* decodes responses and completes the caller waiting on
//!   each `request_id` (a map `request_id → oneshot`, see [`pending`]), so
//!   any number of requests are in flight and answers may come in any order.
//!
//! ## Invariants
//!
//! - Request ids are unique among a connection's requests in flight, and a
//!   request that is cancelled or times out leaves nothing behind (see
//!   [`pending`]).
//! - When a connection dies, every request in flight on it fails with a
//!   retriable [`ClientError::Connection`] naming the broker address, and no
//!   request is ever registered on a dead connection.
//! - The next request after a failure reconnects. Consecutive failed
//!   attempts are spaced by an exponential backoff; concurrent callers that
//!   waited for the same attempt share its outcome instead of each trying
//!   again, so a dead broker is never hammered.
//! - Each connection starts with a Handshake, then (with
//!   [`ClientConfig::credentials`]) authenticates; the codec then adopts the
//!   server's limits, and each request is sent in the highest API version
//!   both sides speak. At most the broker's `max_in_flight_requests` are
//!   outstanding on a connection; further requests wait for a slot.
//!
//! ## Layout
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | [`Client`], [`ClientConfig`]: connecting, handshake, reconnects, circuit breaker, the writer and reader tasks |
//! | `pending.rs` | request ids, the table of callers waiting for answers, [`PendingRequest`] |
//! | `stream.rs` | plain TCP or TLS ([`TlsConfig`]); TLS failures as sentences |
//! | `sasl.rs` | authenticating as a user ([`Credentials`]): PLAIN over TLS, SCRAM-SHA-256 otherwise |

mod pending;
mod sasl;
mod stream;

pub use pending::PendingRequest;
pub use sasl::Credentials;
pub use stream::TlsConfig;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};

use self::stream::{BrokerStream, connect_tls, tls_verdict};
use tokio::time::Instant;
use tokio_util::codec::Framed;

use self::pending::{ConnShared, next_request_id};
use super::backoff::Backoff;
use super::breaker::{Admission, CircuitBreaker, CircuitConfig};
use super::error::ClientError;
use crate::protocol::{
    CONNECTION_ERROR_REQUEST_ID, ClientCodec, CodecErrorKind, HandshakeRequest, HandshakeResponse,
    Limits, Request, RequestFrame, Response, ResponseBody,
};

/// The broker's default address.
pub const DEFAULT_BROKER_ADDR: &str = "127.0.0.1:7420";

/// How a [`Client`] connects, times out and backs off.
///
/// ```
/// use std::time::Duration;
/// use pigeon_client::client::ClientConfig;
///
/// let config = ClientConfig { request_timeout: Duration::from_secs(5), ..ClientConfig::default() };
/// assert_eq!(config.connect_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name sent in the handshake (`pigeon-client <version>`).
    pub client_name: String,
    /// Longest wait for an answer to one request, connecting included (30 s).
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection to be accepted (10 s).
    pub connect_timeout: Duration,
    /// Spacing of consecutive failed connection attempts (100 ms doubling
    /// up to 5 s, ±20 %).
    pub reconnect_backoff: Backoff,
    /// Request frames that may wait for the socket before `request` waits
    /// too (1024).
    pub write_queue: usize,
    /// When to stop trying an unreachable broker.
    pub circuit: CircuitConfig,
    /// TLS to the broker (`None`: plain TCP).
    pub tls: Option<TlsConfig>,
    /// The user to authenticate as on every connection (`None`: none, for
    /// a broker without users or with a client certificate).
    pub credentials: Option<Credentials>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_name: format!("pigeon-client {}", env!("CARGO_PKG_VERSION")),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reconnect_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            write_queue: 1024,
            circuit: CircuitConfig::default(),
            tls: None,
            credentials: None,
        }
    }
}

/// A handle on a broker: cheap to clone (an `Arc`), safe to share between
/// tasks; all clones use the same connection.
///
/// ```no_run
/// use pigeon_client::client::Client;
/// use pigeon_client::protocol::{ListTopicsRequest, Response};
///
/// # async fn demo() -> Result<(), pigeon_client::client::ClientError> {
/// let client = Client::connect("127.0.0.1:7420").await?;
/// if let Response::ListTopics(list) = client.request(ListTopicsRequest.into()).await? {
///     println!("{} topics", list.topics.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: String,
    config: ClientConfig,
    next_id: AtomicU32,
    /// Connection attempts started, to let callers that waited for an
    /// attempt share its outcome.
    attempts: AtomicU64,
    /// Connections established so far: a change tells state bound to a
    /// connection (a consumer's group membership) that it was lost.
    generation: AtomicU64,
    link: tokio::sync::Mutex<Link>,
    breaker: Mutex<CircuitBreaker>,
    server: Mutex<Option<HandshakeResponse>>,
    closed: AtomicBool,
}

/// The current connection and the reconnect state.
#[derive(Debug, Default)]
struct Link {
    conn: Option<Conn>,
    last_error: Option<ClientError>,
    failed_attempts: u32,
    next_attempt: Option<Instant>,
}

/// One live (or dead) connection, as seen by callers.
#[derive(Debug, Clone)]
struct Conn {
    queue: mpsc::Sender<RequestFrame>,
    shared: Arc<ConnShared>,
    handshake: Arc<HandshakeResponse>,
    /// Permits for the requests the broker serves at once on a connection
    /// (`max_in_flight_requests` from the handshake); more wait here rather
    /// than be refused with `TooManyRequestsInFlight`.
    in_flight: Arc<Semaphore>,
}

/// Locks `mutex`, ignoring poisoning.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every
    // critical section is a handful of map or field operations).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(conn) = &self.link.get_mut().conn {
            conn.shared.shutdown.cancel();
        }
    }
}

type Sink = SplitSink<Framed<BrokerStream, ClientCodec>, RequestFrame>;
type Source = SplitStream<Framed<BrokerStream, ClientCodec>>;

impl Client {
    /// Connects to the broker at `addr` (e.g. `127.0.0.1:7420`) with the
    /// default configuration, and shakes hands.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), pigeon_client::client::ClientError> {
    /// let client = pigeon_client::client::Client::connect("127.0.0.1:7420").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(addr: impl Into<String>) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientConfig::default()).await
    }

    /// Connects to the broker at `addr` with `config`, and shakes hands.
    ///
    /// ```no_run
    /// use pigeon_client::client::{Client, ClientConfig};
    /// # async fn demo() -> Result<(), pigeon_client::client::ClientError> {
    /// let client = Client::connect_with("127.0.0.1:7420", ClientConfig::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        addr: impl Into<String>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let client = Client::lazy(addr, config);
        client.connection().await?;
        Ok(client)
    }

    /// A client that connects on its first request (no I/O now). Must be
    /// called within a Tokio runtime only when a request is made.
    ///
    /// ```
    /// use pigeon_client::client::{Client, ClientConfig};
    /// let client = Client::lazy("127.0.0.1:7420", ClientConfig::default());
    /// assert_eq!(client.addr(), "127.0.0.1:7420");
    /// ```
    pub fn lazy(addr: impl Into<String>, config: ClientConfig) -> Client {
        let breaker = CircuitBreaker::new(config.circuit);
        Client {
            inner: Arc::new(Inner {
                addr: addr.into(),
                config,
                next_id: AtomicU32::new(0),
                attempts: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                link: tokio::sync::Mutex::new(Link::default()),
                breaker: Mutex::new(breaker),
                server: Mutex::new(None),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The broker address this client connects to.
    ///
    /// ```
    /// # use pigeon_client::client::{Client, ClientConfig};
    /// assert_eq!(Client::lazy("b:7420", ClientConfig::default()).addr(), "b:7420");
    /// ```
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The configuration.
    ///
    /// ```
    /// # use pigeon_client::client::{Client, ClientConfig};
    /// let client = Client::lazy("b:7420", ClientConfig::default());
    /// assert_eq!(client.config().write_queue, 1024);
    /// ```
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// How many connections this client has established: it changes when
    /// the client reconnects, so state the broker ties to a connection
    /// (group membership) knows it must be set up again.
    pub fn connection_generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// The limits the broker announced in the last handshake, if any.
    ///
    /// ```
    /// # use pigeon_client::client::{Client, ClientConfig};
    /// assert_eq!(Client::lazy("b:7420", ClientConfig::default()).server_limits(), None);
    /// ```
    pub fn server_limits(&self) -> Option<Limits> {
        lock(&self.inner.server).as_ref().map(|hs| hs.limits())
    }

    /// Whether requests are currently failing fast because the broker has
    /// been unreachable (and no probe is due).
    ///
    /// ```
    /// # use pigeon_client::client::{Client, ClientConfig};
    /// assert!(!Client::lazy("b:7420", ClientConfig::default()).is_circuit_open());
    /// ```
    pub fn is_circuit_open(&self) -> bool {
        self.check_circuit().is_err()
    }

    /// `Err(CircuitOpen)` if a request now would fail fast; claims nothing.
    pub(crate) fn check_circuit(&self) -> Result<(), ClientError> {
        let now = std::time::Instant::now();
        lock(&self.inner.breaker)
            .check(now)
            .map_err(|unreachable_for| ClientError::CircuitOpen {
                addr: self.inner.addr.clone(),
                unreachable_for,
            })
    }

    /// Closes the connection; every later request fails with
    /// [`ClientError::Closed`], on every clone.
    ///
    /// ```no_run
    /// # async fn demo(client: pigeon_client::client::Client) {
    /// client.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let link = self.inner.link.lock().await;
        if let Some(conn) = &link.conn {
            conn.shared.fail_all(ClientError::Closed);
        }
    }

    /// Sends `request` and waits for its answer, up to the configured
    /// request timeout. A top-level error answer becomes
    /// [`ClientError::Broker`]; per-partition errors are left in the body.
    ///
    /// ```no_run
    /// use pigeon_client::protocol::{DescribeTopicRequest, Response};
    /// # async fn demo(client: pigeon_client::client::Client) -> Result<(), pigeon_client::client::ClientError> {
    /// let answer = client.request(DescribeTopicRequest { topic: "orders".into() }.into()).await?;
    /// assert!(matches!(answer, Response::DescribeTopic(_)));
    /// # Ok(()) }
    /// ```
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        self.request_with_timeout(request, self.inner.config.request_timeout)
            .await
    }

    /// [`Client::request`] with an explicit timeout.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pigeon_client::protocol::ListTopicsRequest;
    /// # async fn demo(client: pigeon_client::client::Client) -> Result<(), pigeon_client::client::ClientError> {
    /// client.request_with_timeout(ListTopicsRequest.into(), Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_with_timeout(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        match tokio::time::timeout(timeout, self.round_trip(request)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { after: timeout }),
        }
    }

    async fn round_trip(&self, request: Request) -> Result<Response, ClientError> {
        self.queue_request(request).await?.answer().await
    }

    /// Queues `request` on the connection and returns once it is queued
    /// (connecting first if needed, and waiting for an in-flight slot),
    /// without waiting for the answer: [`PendingRequest::answer`] does.
    /// Requests queued one after another by one caller go out on the
    /// connection in that order, so a caller can pipeline requests whose
    /// order matters (a producer's batches of one partition) and still have
    /// several in flight. The timeout bounds the wait to queue and the
    /// wait for the answer together.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pigeon_client::protocol::ListTopicsRequest;
    /// # async fn demo(client: pigeon_client::client::Client) -> Result<(), pigeon_client::client::ClientError> {
    /// let first = client.send_request(ListTopicsRequest.into(), Duration::from_secs(1)).await?;
    /// let second = client.send_request(ListTopicsRequest.into(), Duration::from_secs(1)).await?;
    /// first.answer().await?;
    /// second.answer().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<PendingRequest, ClientError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.queue_request(request)).await {
            Ok(Ok(mut pending)) => {
                pending.set_deadline(deadline, timeout);
                Ok(pending)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(ClientError::Timeout { after: timeout }),
        }
    }

    async fn queue_request(&self, request: Request) -> Result<PendingRequest, ClientError> {
        let conn = self.connection().await?;
        let slot = conn
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| conn.shared.dead_error())?;
        let api = request.api_key();
        let api_version = conn.handshake.negotiate(api).ok_or_else(|| {
            ClientError::broker(
                crate::protocol::ErrorCode::UnsupportedVersion,
                format!("the broker speaks no version of {api:?} that this client speaks"),
            )
        })?;
        let (reply, answer) = oneshot::channel();
        let request_id = conn.shared.register(&self.inner.next_id, reply, slot)?;
        let pending = PendingRequest::new(conn.shared.clone(), request_id, answer);
        let frame = RequestFrame {
            request_id,
            api_version,
            request,
        };
        if conn.queue.send(frame).await.is_err() {
            return Err(conn.shared.dead_error());
        }
        Ok(pending)
    }

    /// The live connection, connecting if there is none (see the module
    /// documentation for backoff and the circuit breaker).
    async fn connection(&self) -> Result<Conn, ClientError> {
        let inner = &self.inner;
        let observed = inner.attempts.load(Ordering::SeqCst);
        let mut link = inner.link.lock().await;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        if let Some(conn) = &link.conn {
            if conn.shared.is_alive() {
                return Ok(conn.clone());
            }
            link.conn = None;
        }
        // Someone attempted while we waited for the lock, and failed: share
        // that outcome rather than trying again at once.
        if inner.attempts.load(Ordering::SeqCst) != observed
            && let Some(err) = &link.last_error
        {
            return Err(err.clone());
        }
        let admission = lock(&inner.breaker).admit(std::time::Instant::now());
        match admission {
            Admission::Rejected(unreachable_for) => {
                return Err(ClientError::CircuitOpen {
                    addr: inner.addr.clone(),
                    unreachable_for,
                });
            }
            Admission::Probe => tracing::info!(addr = %inner.addr, "probing the broker"),
            Admission::Closed => {
                if let Some(at) = link.next_attempt {
                    tokio::time::sleep_until(at).await;
                }
            }
        }
        inner.attempts.fetch_add(1, Ordering::SeqCst);
        match self.open().await {
            Ok(conn) => {
                inner.generation.fetch_add(1, Ordering::SeqCst);
                lock(&inner.breaker).record_success();
                *lock(&inner.server) = Some((*conn.handshake).clone());
                link.conn = Some(conn.clone());
                link.last_error = None;
                link.failed_attempts = 0;
                link.next_attempt = None;
                Ok(conn)
            }
            Err(err) => {
                if matches!(
                    err,
                    ClientError::Connection { .. } | ClientError::Timeout { .. }
                ) {
                    lock(&inner.breaker).record_failure(std::time::Instant::now());
                }
                let delay = inner.config.reconnect_backoff.delay(link.failed_attempts);
                link.failed_attempts = link.failed_attempts.saturating_add(1);
                link.next_attempt = Some(Instant::now() + delay);
                link.last_error = Some(err.clone());
                tracing::debug!(addr = %inner.addr, error = %err, ?delay, "connection attempt failed");
                Err(err)
            }
        }
    }

    /// Connects, shakes hands and starts the connection's tasks.
    async fn open(&self) -> Result<Conn, ClientError> {
        let inner = &self.inner;
        let addr = inner.addr.as_str();
        let stream = match tokio::time::timeout(
            inner.config.connect_timeout,
            TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(ClientError::io(addr, &err)),
            Err(_) => {
                return Err(ClientError::Connection {
                    addr: addr.to_string(),
                    kind: std::io::ErrorKind::TimedOut,
                    message: format!(
                        "connect timed out after {} ms",
                        inner.config.connect_timeout.as_millis()
                    ),
                });
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        let stream = match &inner.config.tls {
            None => BrokerStream::Plain(stream),
            Some(tls) => {
                let shaken = tokio::time::timeout(
                    inner.config.connect_timeout,
                    connect_tls(tls, stream, addr),
                );
                shaken.await.map_err(|_| ClientError::Timeout {
                    after: inner.config.connect_timeout,
                })??
            }
        };
        let mut framed = Framed::new(stream, ClientCodec::default());
        let handshake =
            match tokio::time::timeout(inner.config.request_timeout, self.handshake(&mut framed))
                .await
            {
                Ok(Err(err)) if inner.config.tls.is_some() => return Err(tls_verdict(addr, err)),
                Ok(result) => result?,
                Err(_) => {
                    return Err(ClientError::Timeout {
                        after: inner.config.request_timeout,
                    });
                }
            };
        if let Some(credentials) = &inner.config.credentials {
            let authenticated = self.authenticate(&mut framed, &handshake, credentials);
            match tokio::time::timeout(inner.config.request_timeout, authenticated).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(ClientError::Timeout {
                        after: inner.config.request_timeout,
                    });
                }
            }
        }
        framed.codec_mut().set_limits(handshake.limits());
        tracing::debug!(addr, server = %handshake.server_name, "connected");
        let (sink, source) = framed.split();
        let (queue, frames) = mpsc::channel(inner.config.write_queue.max(1));
        let shared = Arc::new(ConnShared::new(addr.to_string()));
        tokio::spawn(write_loop(sink, frames, shared.clone()));
        tokio::spawn(read_loop(source, shared.clone()));
        Ok(Conn {
            queue,
            shared,
            in_flight: Arc::new(Semaphore::new(
                (handshake.max_in_flight_requests as usize).clamp(1, Semaphore::MAX_PERMITS),
            )),
            handshake: Arc::new(handshake),
        })
    }

    async fn handshake(
        &self,
        framed: &mut Framed<BrokerStream, ClientCodec>,
    ) -> Result<HandshakeResponse, ClientError> {
        let request = HandshakeRequest::for_this_build(self.inner.config.client_name.clone());
        let answer = self.exchange(framed, request.into()).await?;
        expect_response!(answer, Handshake)
    }

    /// Authenticates the new connection as `credentials` (see [`sasl`]).
    async fn authenticate(
        &self,
        framed: &mut Framed<BrokerStream, ClientCodec>,
        handshake: &HandshakeResponse,
        credentials: &Credentials,
    ) -> Result<(), ClientError> {
        if handshake
            .negotiate(crate::protocol::ApiKey::SaslAuthenticate)
            .is_none()
        {
            return Err(ClientError::broker(
                crate::protocol::ErrorCode::UnsupportedVersion,
                "the broker does not support authentication (no SaslAuthenticate); connect without a user",
            ));
        }
        let mechanism = sasl::mechanism(framed.get_ref().is_tls());
        let answer = self
            .exchange(framed, sasl::handshake(mechanism).into())
            .await?;
        expect_response!(answer, SaslHandshake)?;
        if mechanism == "PLAIN" {
            let answer = self
                .exchange(framed, sasl::plain(credentials).into())
                .await?;
            expect_response!(answer, SaslAuthenticate)?;
            return Ok(());
        }
        let (scram, first) = sasl::Scram::start(credentials)?;
        let answer = self.exchange(framed, first.into()).await?;
        let server_first = expect_response!(answer, SaslAuthenticate)?;
        let (proof, last) = scram.prove(credentials, &server_first.auth_bytes)?;
        let answer = self.exchange(framed, last.into()).await?;
        proof.verify(&expect_response!(answer, SaslAuthenticate)?.auth_bytes)
    }

    /// Sends one request on a connection not yet handed to its tasks and
    /// waits for its answer (or a connection-level error).
    async fn exchange(
        &self,
        framed: &mut Framed<BrokerStream, ClientCodec>,
        request: Request,
    ) -> Result<Response, ClientError> {
        let addr = self.inner.addr.as_str();
        let request_id = next_request_id(&self.inner.next_id);
        framed
            .send(RequestFrame {
                request_id,
                api_version: 0,
                request,
            })
            .await
            .map_err(|err| codec_to_client(addr, err))?;
        loop {
            let Some(incoming) = framed.next().await else {
                return Err(ClientError::connection(
                    addr,
                    "the broker closed the connection during the handshake",
                ));
            };
            let incoming = incoming.map_err(|err| codec_to_client(addr, err))?;
            if incoming.header.request_id != request_id
                && incoming.header.request_id != CONNECTION_ERROR_REQUEST_ID
            {
                tracing::debug!(
                    id = incoming.header.request_id,
                    "stray response before the handshake"
                );
                continue;
            }
            return match incoming.body? {
                ResponseBody::Ok(response) => Ok(response),
                ResponseBody::Error(err) => Err(ClientError::Broker {
                    code: err.code,
                    message: err.message,
                }),
            };
        }
    }
}

/// An I/O failure inside the codec is a connection error; anything else
/// stays a codec error.
fn codec_to_client(addr: &str, err: crate::protocol::CodecError) -> ClientError {
    match &err.kind {
        CodecErrorKind::Io { kind, message } => ClientError::Connection {
            addr: addr.to_string(),
            kind: *kind,
            message: message.clone(),
        },
        _ => ClientError::Codec(err),
    }
}

async fn write_loop(
    mut sink: Sink,
    mut frames: mpsc::Receiver<RequestFrame>,
    shared: Arc<ConnShared>,
) {
    loop {
        let first = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            frame = frames.recv() => frame,
        };
        let Some(first) = first else {
            // Every handle on the connection is gone.
            shared.fail_all(ClientError::Closed);
            break;
        };
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            let id = frame.request_id;
            if let Err(err) = sink.feed(frame).await {
                let err = codec_to_client(&shared.addr, err);
                if matches!(err, ClientError::Connection { .. }) {
                    shared.fail_all(err);
                    return;
                }
                // This one request cannot be encoded (e.g. too large).
                shared.complete(id, Err(err));
            }
            next = frames.try_recv().ok();
        }
        let flushed = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            flushed = sink.flush() => flushed,
        };
        if let Err(err) = flushed {
            shared.fail_all(codec_to_client(&shared.addr, err));
            return;
        }
    }
}

async fn read_loop(mut source: Source, shared: Arc<ConnShared>) {
    loop {
        let item = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            item = source.next() => item,
        };
        match item {
            Some(Ok(incoming)) => {
                let id = incoming.header.request_id;
                if id == CONNECTION_ERROR_REQUEST_ID {
                    let detail = match incoming.body {
                        Ok(ResponseBody::Error(err)) => format!("{}: {}", err.code, err.message),
                        _ => format!("{}", incoming.header.error_code),
                    };
                    shared.fail_all(ClientError::connection(
                        &shared.addr,
                        format!("the broker closed the connection: {detail}"),
                    ));
                    return;
                }
                let result = match incoming.body {
                    Ok(ResponseBody::Ok(response)) => Ok(response),
                    Ok(ResponseBody::Error(err)) => Err(ClientError::Broker {
                        code: err.code,
                        message: err.message,
                    }),
                    Err(err) => Err(ClientError::Codec(err)),
                };
                shared.complete(id, result);
            }
            Some(Err(err)) => {
                let err = match codec_to_client(&shared.addr, err) {
                    ClientError::Codec(err) => ClientError::connection(
                        &shared.addr,
                        format!("unreadable frame from the broker: {err}"),
                    ),
                    other => other,
                };
                shared.fail_all(err);
                return;
            }
            None => {
                shared.fail_all(ClientError::connection(
                    &shared.addr,
                    "connection closed by the broker",
                ));
                return;
            }
        }
    }
}

/// Checks that a response is of the expected API, extracting its body.
macro_rules! expect_response {
    ($response:expr, $variant:ident) => {
        match $response {
            $crate::protocol::Response::$variant(body) => Ok(body),
            other => Err($crate::client::ClientError::UnexpectedResponse(format!(
                "{:?} in answer to a {}",
                other.api_key(),
                stringify!($variant)
            ))),
        }
    };
}
pub(crate) use expect_response;
