//! Shared helpers for the end-to-end tests in `tests/` and the benchmarks in
//! `benches/`: building and locating the real binaries, starting a broker on
//! ephemeral loopback ports with a temp data dir, stopping it (SIGTERM or
//! SIGKILL), and waiting for a condition with a deadline (never a fixed
//! sleep). [`crash_loop`] is the harness that kills a broker under load many
//! times and checks what the clients and the log say afterwards. [`resp`]
//! holds the Redis-protocol tools: a RESP client, a `redis-server` for
//! differential tests, and the script runner that compares the two.

pub mod resp;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod crash_loop;
pub mod load;
pub mod pki;
pub mod prometheus;

/// Path of a workspace binary (`pigeon-broker` or `pigeon`), building the
/// workspace's binaries once per test process if needed.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = profile_dir();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "pigeon-broker",
            "-p",
            "pigeon-cli",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            command.arg("--release");
        }
        let status = command
            .status()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build failed: {status}"))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    dir.join(name)
}

/// The `pigeon-broker` to start: `PIGEON_BENCH_BROKER` if set (a benchmark
/// comparing builds runs another build's binary), else this workspace's.
fn broker_binary() -> PathBuf {
    match std::env::var_os("PIGEON_BENCH_BROKER") {
        Some(path) => PathBuf::from(path),
        None => binary("pigeon-broker"),
    }
}

/// `target/<profile>`, from the path of the running test executable.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("exe dir");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile dir")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Bytes of every file under `path` (0 if it cannot be read), for the
/// benches that report disk use.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// A two-worker tokio runtime for tests that drive real processes.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Polls `condition` until it holds or `within` passes; panics with `what`.
pub fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `pigeon-broker` process. Killed when dropped.
pub struct Broker {
    child: Option<Child>,
    /// Protocol address.
    pub addr: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Redis Streams (RESP) address (`None` when started with `--resp off`).
    pub resp: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
    extra: Vec<String>,
}

/// How long a broker may take to start serving: 30 s, or
/// `PIGEON_BENCH_START_TIMEOUT_SECS` (a benchmark timing slow restarts).
fn start_timeout() -> Duration {
    let secs = std::env::var("PIGEON_BENCH_START_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

impl Broker {
    /// Starts a broker on `data_dir` with ephemeral ports and `extra` flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Broker {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir, extra)
    }

    /// Starts a `pigeon-broker` process logging to a new file next to
    /// `data_dir`; returns it without waiting for it to serve.
    fn launch(data_dir: &Path, extra: &[String]) -> (Child, PathBuf) {
        static LOG_ID: Mutex<u32> = Mutex::new(0);
        let id = {
            let mut n = LOG_ID.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let log = data_dir.with_extension(format!("broker-{}-{id}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("broker log file");
        let child = Command::new(broker_binary())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            // Logging at info, unless the test sets it.
            .args(if extra.iter().any(|a| a == "--log") {
                &[][..]
            } else {
                &["--log", "info"][..]
            })
            // The Redis listener on an ephemeral port too, unless the
            // test sets it.
            .args(if extra.iter().any(|a| a == "--resp") {
                &[][..]
            } else {
                &["--resp", "127.0.0.1:0"][..]
            })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start pigeon-broker");
        (child, log)
    }

    fn spawn(data_dir: &Path, extra: Vec<String>) -> Broker {
        let (child, log) = Self::launch(data_dir, &extra);
        let mut broker = Broker {
            child: Some(child),
            addr: "0.0.0.0:0".parse().expect("addr"),
            http: "0.0.0.0:0".parse().expect("addr"),
            resp: None,
            data_dir: data_dir.to_path_buf(),
            log,
            extra,
        };
        broker.await_serving();
        broker
    }

    /// Reads the addresses from the "serving" log line.
    fn await_serving(&mut self) {
        let deadline = Instant::now() + start_timeout();
        loop {
            if let Some((addr, http, resp)) = self.serving_line() {
                self.addr = addr;
                self.http = http;
                self.resp = resp;
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "pigeon-broker exited with {status} before serving:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "pigeon-broker did not start serving:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn serving_line(&self) -> Option<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
        let file = std::fs::File::open(&self.log).ok()?;
        let line = BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("pigeon-broker is serving"))
            .last()?;
        let field = |name: &str| -> Option<SocketAddr> {
            let start = line.find(&format!(" {name}="))? + name.len() + 2;
            line[start..].split_whitespace().next()?.parse().ok()
        };
        Some((field("listen")?, field("http")?, field("resp")))
    }

    /// What the broker logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: the process dies at once, nothing is flushed or marked clean.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "pigeon-broker did not stop within 30 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A crash during start-up: SIGKILL of the running process (if any),
    /// then a new process on the same data dir and flags, itself killed
    /// `after` its start, whether or not it was serving yet (it may be in
    /// the middle of recovery). Nothing is serving afterwards: call
    /// [`restart`](Self::restart).
    pub fn crash_while_starting(&mut self, after: Duration) {
        self.kill();
        let (mut child, log) = Self::launch(&self.data_dir, &self.extra);
        std::thread::sleep(after);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(log);
    }

    /// Starts a new broker process on the same data dir and flags (new ports).
    /// SIGTERM (asserting a clean exit, code 0), start again, and assert
    /// that the start scanned no log tail: every partition log and group
    /// journal was closed cleanly.
    pub fn restart_after_clean_stop(&mut self) {
        assert_eq!(
            self.terminate(),
            Some(0),
            "clean exit:\n{}",
            self.log_text()
        );
        self.restart();
        assert!(
            !self.log_text().contains("recovering the log tail"),
            "a restart after a clean stop scanned a log tail (a log or a group journal was not closed cleanly):\n{}",
            self.log_text()
        );
    }

    pub fn restart(&mut self) {
        self.kill();
        let next = Self::spawn(&self.data_dir.clone(), self.extra.clone());
        *self = next;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A minimal protocol client for tests: one connection, one request at a
/// time (or raw bytes), no retries, so that tests see exactly what the
/// broker answers.
pub mod raw {
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use pigeon_client::batch::{BatchBuilder, ProducerStamp};
    use pigeon_client::protocol::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    use tokio_util::codec::Framed;

    /// How long a test waits for one response.
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

    /// A connection speaking the protocol.
    pub struct RawClient {
        framed: Framed<TcpStream, ClientCodec>,
        next_id: u32,
    }

    impl RawClient {
        /// Connects and performs the handshake.
        pub async fn connect(addr: SocketAddr) -> RawClient {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let mut client = RawClient {
                framed: Framed::new(stream, ClientCodec::default()),
                next_id: 1,
            };
            match client
                .call(HandshakeRequest::for_this_build("e2e-test").into())
                .await
            {
                ResponseBody::Ok(Response::Handshake(_)) => client,
                other => panic!("handshake failed: {other:?}"),
            }
        }

        /// Connects without a handshake (for hostile tests that speak
        /// first); `None` if the connection is refused.
        pub async fn connect_bare(addr: SocketAddr) -> Option<RawClient> {
            let stream = TcpStream::connect(addr).await.ok()?;
            Some(RawClient {
                framed: Framed::new(stream, ClientCodec::default()),
                next_id: 1,
            })
        }

        /// Sends one request and waits for its response.
        pub async fn call(&mut self, request: Request) -> ResponseBody {
            self.call_version(request, 0).await
        }

        /// Sends one request at `api_version` and waits for its response.
        pub async fn call_version(&mut self, request: Request, api_version: u16) -> ResponseBody {
            let request_id = self.next_id;
            self.next_id += 1;
            let frame = RequestFrame {
                request_id,
                api_version,
                request,
            };
            self.framed.send(frame).await.expect("send request");
            let response = tokio::time::timeout(RESPONSE_TIMEOUT, self.framed.next())
                .await
                .expect("response in time")
                .expect("connection open")
                .expect("decodable response");
            assert_eq!(
                response.header.request_id, request_id,
                "response to another request"
            );
            response.body.expect("decodable body")
        }

        /// Sends one request without waiting for its answer (for
        /// pipelining); returns its request id.
        pub async fn send(&mut self, request: Request) -> u32 {
            let request_id = self.next_id;
            self.next_id += 1;
            let frame = RequestFrame {
                request_id,
                api_version: 0,
                request,
            };
            self.framed.send(frame).await.expect("send request");
            request_id
        }

        /// Writes raw bytes on the connection.
        pub async fn send_raw(&mut self, bytes: &[u8]) {
            self.framed
                .get_mut()
                .write_all(bytes)
                .await
                .expect("write raw bytes");
        }

        /// Writes raw bytes; `false` if the broker already closed.
        pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
            self.framed.get_mut().write_all(bytes).await.is_ok()
        }

        /// Closes the sending side (the broker sees the end of the stream).
        pub async fn shutdown_write(&mut self) {
            let _ = self.framed.get_mut().shutdown().await;
        }

        /// The next frame, or `None` once the broker closed, or `Err` if
        /// nothing happened within `within`.
        pub async fn next_frame_within(
            &mut self,
            within: Duration,
        ) -> Result<Option<Result<IncomingResponse, CodecError>>, tokio::time::error::Elapsed>
        {
            tokio::time::timeout(within, self.framed.next()).await
        }

        /// The next frame, `None` when the broker closed the connection.
        pub async fn next_frame(&mut self) -> Option<Result<IncomingResponse, CodecError>> {
            tokio::time::timeout(RESPONSE_TIMEOUT, self.framed.next())
                .await
                .expect("frame or close in time")
        }

        /// The answer to `request`, panicking on an error response.
        pub async fn ok(&mut self, request: Request) -> Response {
            match self.call(request).await {
                ResponseBody::Ok(response) => response,
                ResponseBody::Error(e) => panic!("{:?}: {}", e.code, e.message),
            }
        }

        /// Settles `items` of `group` of `topic` as `consumer`; each
        /// item's result.
        pub async fn settle(
            &mut self,
            topic: &str,
            group: &str,
            consumer: u64,
            items: Vec<SettleItem>,
        ) -> Vec<SettleResult> {
            let request = SettleRequest {
                topic: topic.into(),
                group: group.into(),
                consumer_id: consumer,
                items,
            };
            match self.ok(request.into()).await {
                Response::Settle(r) => r.results,
                other => panic!("{other:?}"),
            }
        }

        /// [`settle`](Self::settle), panicking unless every item settled
        /// (with the first failure's message).
        pub async fn settle_ok(
            &mut self,
            topic: &str,
            group: &str,
            consumer: u64,
            items: Vec<SettleItem>,
        ) {
            for result in self.settle(topic, group, consumer, items).await {
                assert_eq!(
                    result.error_code,
                    ErrorCode::None,
                    "{}",
                    result.error_message
                );
            }
        }

        /// Joins `group` of `topic` as `consumer_name`; the consumer id.
        pub async fn join_group(&mut self, topic: &str, group: &str, consumer_name: &str) -> u64 {
            let join = JoinGroupRequest {
                topic: topic.into(),
                group: group.into(),
                consumer_name: consumer_name.into(),
            };
            match self.ok(join.into()).await {
                Response::JoinGroup(j) => j.consumer_id,
                other => panic!("{other:?}"),
            }
        }

        /// One Receive of up to `max` deliveries, waiting up to `wait_ms`.
        pub async fn receive(
            &mut self,
            topic: &str,
            group: &str,
            consumer: u64,
            max: u32,
            wait_ms: u32,
        ) -> Vec<Delivery> {
            let request = ReceiveRequest {
                topic: topic.into(),
                group: group.into(),
                consumer_id: consumer,
                max_messages: max,
                max_wait_ms: wait_ms,
                max_bytes: 0,
            };
            match self.ok(request.into()).await {
                Response::Receive(r) => r.deliveries,
                other => panic!("{other:?}"),
            }
        }

        /// Creates a topic, panicking on failure.
        pub async fn create_topic(&mut self, topic: &str, partitions: u32) {
            let request = CreateTopicRequest {
                topic: topic.into(),
                partitions,
                retention_ms: None,
                retention_bytes: None,
            };
            match self.call(request.into()).await {
                ResponseBody::Ok(_) => {}
                other => panic!("create topic {topic}: {other:?}"),
            }
        }

        /// Produces one batch of `values` to a partition; returns the
        /// partition's response.
        pub async fn produce(
            &mut self,
            topic: &str,
            partition: u32,
            values: &[&[u8]],
        ) -> ProducePartitionResponse {
            let request = produce_request(topic, partition, vec![batch(values)], 30_000);
            match self.call(request).await {
                ResponseBody::Ok(Response::Produce(mut r)) => r.partitions.remove(0),
                other => panic!("produce: {other:?}"),
            }
        }

        /// Sends a produce of `batches` to a partition without waiting
        /// (pipelining); returns its request id.
        pub async fn send_produce(
            &mut self,
            topic: &str,
            partition: u32,
            batches: Vec<Bytes>,
            timeout_ms: u32,
        ) -> u32 {
            self.send(produce_request(topic, partition, batches, timeout_ms))
                .await
        }

        /// The next answer, which must be a produce answer: its request id
        /// and its (first) partition's response.
        pub async fn next_produce_answer(&mut self) -> (u32, ProducePartitionResponse) {
            let frame = self
                .next_frame()
                .await
                .expect("connection open")
                .expect("decodable frame");
            match frame.body.expect("decodable body") {
                ResponseBody::Ok(Response::Produce(mut r)) => {
                    (frame.header.request_id, r.partitions.remove(0))
                }
                other => panic!("produce: {other:?}"),
            }
        }

        /// Fetches from one partition.
        pub async fn fetch(
            &mut self,
            topic: &str,
            partition: u32,
            offset: u64,
            max_wait_ms: u32,
        ) -> FetchPartitionResponse {
            let request = FetchRequest {
                max_wait_ms,
                min_bytes: 1,
                max_bytes: 4 << 20,
                partitions: vec![FetchPartition {
                    topic: topic.into(),
                    partition,
                    offset,
                    max_bytes: 1 << 20,
                }],
            };
            match self.call(request.into()).await {
                ResponseBody::Ok(Response::Fetch(mut r)) => r.partitions.remove(0),
                other => panic!("fetch: {other:?}"),
            }
        }

        /// Every record value of a partition from `offset` to the current end.
        pub async fn read_values(
            &mut self,
            topic: &str,
            partition: u32,
            mut offset: u64,
        ) -> Vec<(u64, Vec<u8>)> {
            let mut out = Vec::new();
            loop {
                let response = self.fetch(topic, partition, offset, 0).await;
                assert_eq!(
                    response.error_code,
                    ErrorCode::None,
                    "{}",
                    response.error_message
                );
                if response.records.is_empty() {
                    return out;
                }
                for record in decode_records(&response.records) {
                    if record.offset >= offset {
                        out.push((record.offset, record.value.to_vec()));
                    }
                }
                offset = out.last().map_or(offset, |r| r.0 + 1);
            }
        }
    }

    /// A produce of `batches` to one partition.
    fn produce_request(
        topic: &str,
        partition: u32,
        batches: Vec<Bytes>,
        timeout_ms: u32,
    ) -> Request {
        ProduceRequest {
            timeout_ms,
            topic: topic.into(),
            partitions: vec![ProducePartition { partition, batches }],
        }
        .into()
    }

    /// A batch holding `values`.
    pub fn batch(values: &[&[u8]]) -> Bytes {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(None, value, &[]);
        }
        builder.build(ProducerStamp::NONE, 0)
    }

    /// Decodes whole batches back to back, checking each CRC.
    pub fn decode_records(mut bytes: &[u8]) -> Vec<pigeon_client::batch::Record> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (_, length) = pigeon_client::batch::read_prefix(bytes).expect("batch prefix");
            let total = 12 + length as usize;
            pigeon_client::batch::verify_stored(&bytes[..total], 64 << 20)
                .expect("served batch verifies");
            let records = pigeon_client::batch::records_of(Bytes::copy_from_slice(&bytes[..total]))
                .expect("batch");
            out.extend(records.map(|r| r.expect("record")));
            bytes = &bytes[total..];
        }
        out
    }
}

/// A TCP proxy between clients and a broker that injects faults: after a
/// request has been forwarded to the broker, it may drop the connection
/// before relaying the response, so the client cannot know whether its
/// request took effect. The upstream address can change (a restarted broker
/// gets new ports) while clients keep the proxy's address.
pub mod proxy {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// The broker address, changeable at run time.
    #[derive(Debug)]
    struct Upstream(std::sync::Mutex<SocketAddr>);

    impl Upstream {
        fn new(addr: SocketAddr) -> Upstream {
            Upstream(std::sync::Mutex::new(addr))
        }
        fn get(&self) -> SocketAddr {
            *self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
        fn set(&self, addr: SocketAddr) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        }
    }

    /// A running proxy (its tasks end with the runtime that started it).
    #[derive(Debug, Clone)]
    pub struct FaultyProxy {
        /// Where clients connect.
        pub addr: SocketAddr,
        upstream: Arc<Upstream>,
        /// Chance, in parts per million, that a response chunk is dropped
        /// together with the connection.
        drop_ppm: Arc<AtomicU32>,
        /// Connections dropped so far.
        drops: Arc<AtomicUsize>,
        seed: Arc<AtomicU32>,
    }

    impl FaultyProxy {
        /// Starts a proxy to `upstream` on an ephemeral loopback port.
        pub async fn start(upstream: SocketAddr, drop_ppm: u32, seed: u32) -> FaultyProxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
            let proxy = FaultyProxy {
                addr: listener.local_addr().expect("proxy addr"),
                upstream: Arc::new(Upstream::new(upstream)),
                drop_ppm: Arc::new(AtomicU32::new(drop_ppm)),
                drops: Arc::new(AtomicUsize::new(0)),
                seed: Arc::new(AtomicU32::new(seed.max(1))),
            };
            let running = proxy.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let proxy = running.clone();
                    tokio::spawn(async move { proxy.relay(client).await });
                }
            });
            proxy
        }

        /// Points the proxy at a new broker address.
        pub fn set_upstream(&self, addr: SocketAddr) {
            self.upstream.set(addr);
        }

        /// Changes the drop chance (parts per million per response chunk).
        pub fn set_drop_ppm(&self, ppm: u32) {
            self.drop_ppm.store(ppm, Ordering::SeqCst);
        }

        /// Connections dropped so far.
        pub fn drops(&self) -> usize {
            self.drops.load(Ordering::SeqCst)
        }

        /// A xorshift step of the shared seed: deterministic given the seed
        /// and the interleaving.
        fn roll(&self) -> u32 {
            let mut x = self.seed.load(Ordering::Relaxed);
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.seed.store(x, Ordering::Relaxed);
            x % 1_000_000
        }

        async fn relay(&self, client: TcpStream) {
            let Ok(broker) = TcpStream::connect(self.upstream.get()).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = broker.set_nodelay(true);
            let (mut client_read, mut client_write) = client.into_split();
            let (mut broker_read, mut broker_write) = broker.into_split();
            let upstream = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if broker_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            let downstream = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match broker_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if self.roll() < self.drop_ppm.load(Ordering::Relaxed) {
                                // The broker has done the work; the client
                                // never hears of it.
                                self.drops.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = upstream => {}
                _ = downstream => {}
            }
        }
    }
}

/// Running the `pigeon` CLI (or any command) from tests: stdin fed on a
/// thread, stdout and stderr drained on threads, the wait bounded.
pub mod process {
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// What a finished command left.
    #[derive(Debug)]
    pub struct Output {
        /// Exit code (`None` if killed by a signal).
        pub code: Option<i32>,
        /// Everything written to stdout.
        pub stdout: Vec<u8>,
        /// Everything written to stderr.
        pub stderr: String,
        /// How long it ran.
        pub took: Duration,
    }

    /// `pigeon --broker ADDR`, ready for arguments; `PIGEON_BROKER` unset.
    pub fn pigeon_command(broker: SocketAddr) -> Command {
        let mut command = Command::new(super::binary("pigeon"));
        command
            .arg("--broker")
            .arg(broker.to_string())
            .env_remove("PIGEON_BROKER");
        command
    }

    /// Runs `command` to completion with `stdin`, killing it after `within`.
    pub fn run(mut command: Command, stdin: &[u8], within: Duration) -> Output {
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the command");
        let mut input = child.stdin.take().expect("stdin");
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            // The command may exit without reading everything (an error).
            let _ = input.write_all(&stdin);
        });
        let stdout = drain(child.stdout.take().expect("stdout"));
        let stderr = drain(child.stderr.take().expect("stderr"));
        let code = wait_bounded(&mut child, within);
        let _ = writer.join();
        Output {
            code,
            stdout: stdout.recv().expect("stdout collected"),
            stderr: String::from_utf8_lossy(&stderr.recv().expect("stderr collected")).into_owned(),
            took: started.elapsed(),
        }
    }

    /// Reads a pipe to its end on a thread.
    pub fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
        let (done, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = done.send(bytes);
        });
        receiver
    }

    /// Waits for `child` to exit; kills it and panics after `within`.
    pub fn wait_bounded(child: &mut Child, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the command") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the command did not finish within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// What `/proc/<pid>/status` says of a process's memory, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`, the high-water mark).
    pub peak_kib: u64,
}

/// The memory of process `pid` (Linux `/proc`); `None` elsewhere or if it
/// is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// A plain HTTP GET over loopback: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// A plain HTTP GET over loopback: the status code and the body, or the
/// I/O error (the server is gone, or closed the connection unanswered).
pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

/// The value of one series of the broker's `/metrics` (e.g.
/// `pigeon_produce_bytes_total{topic="t"}`); 0 if it is not there yet.
pub fn metric(http: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(http, "/metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// A deterministic xorshift64* generator for hostile inputs (the seed is
/// printed by the tests that use it, so a failure can be replayed).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced by a fixed odd number).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The test seed: `PIGEON_TEST_SEED` if set, else from the clock.
pub fn seed() -> u64 {
    std::env::var("PIGEON_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// CPU time process `pid` has used so far, all threads, user and system
/// (Linux `/proc/<pid>/stat`, in clock ticks of 1/100 s); `None` elsewhere.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold
    // spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
