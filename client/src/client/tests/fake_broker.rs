//! An in-process fake broker for the client tests: a TCP listener on
//! loopback that speaks the real protocol with [`ServerCodec`] and keeps an
//! in-memory log per partition.
//!
//! It stores batches the way the real broker does: validated with
//! [`RecordBatch::validate`], then stamped with their base offset and append
//! time ([`stamp`]), so fetched batches carry real offsets and CRCs. Tests
//! steer it through [`Behavior`]: delay answers, answer out of order, drop
//! the connection after a request arrives, stall produce requests, corrupt
//! fetched data, fix the clock; and they can stop and restart listening.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::batch::{Record, RecordBatch, records_of, stamp};
use crate::protocol::*;

/// What the fake broker does differently from a well-behaved one.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Wait this long before answering each request (handshakes excepted).
    pub delay: Duration,
    /// Hold answers (handshakes excepted) until this many are ready, then
    /// send them in reverse order. 0 or 1: answer as soon as ready.
    pub reverse_batch: usize,
    /// Close the connection, without answering, on receiving each of the
    /// next this-many requests (handshakes excepted).
    pub drop_requests: usize,
    /// Flip a byte inside every fetched batch.
    pub corrupt_fetch: bool,
    /// The append time to stamp; `None`: the system clock.
    pub clock_ms: Option<i64>,
    /// `max_in_flight_requests` announced in the handshake; 0: 10 000.
    pub max_in_flight: u32,
    /// `throttle_ms` put in every Produce response (version 1 and later).
    pub throttle_ms: u32,
}

#[derive(Debug, Default)]
struct PartitionLog {
    /// Stored (stamped) batches with their base offsets.
    batches: Vec<(u64, Bytes)>,
    next_offset: u64,
}

#[derive(Debug)]
struct State {
    topics: Mutex<HashMap<String, Vec<PartitionLog>>>,
    behavior: Mutex<Behavior>,
    /// Bumped on every append, for long-poll fetches.
    appended: watch::Sender<u64>,
    /// While true, produce requests wait.
    stall_produce: watch::Sender<bool>,
    produce_requests: AtomicUsize,
    /// Record batches received in produce requests, over all partitions.
    produce_batches: AtomicUsize,
    /// When each produce request arrived, in order.
    produce_arrivals: Mutex<Vec<std::time::Instant>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    kill: Mutex<CancellationToken>,
    /// Registered producers: name → (producer id, epoch).
    producers: Mutex<HashMap<String, (i64, i16)>>,
}

/// A running fake broker.
#[derive(Debug)]
pub struct FakeBroker {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeBroker {
    /// Starts listening on an ephemeral loopback port.
    pub async fn start() -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            topics: Mutex::new(HashMap::new()),
            behavior: Mutex::new(Behavior::default()),
            appended: watch::channel(0).0,
            stall_produce: watch::channel(false).0,
            produce_requests: AtomicUsize::new(0),
            produce_batches: AtomicUsize::new(0),
            produce_arrivals: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            kill: Mutex::new(CancellationToken::new()),
            producers: Mutex::new(HashMap::new()),
        });
        let broker = FakeBroker {
            addr,
            state,
            accept: Mutex::new(None),
        };
        broker.spawn_accept(listener);
        broker
    }

    /// The address to connect to.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let kill = lock(&state.kill).clone();
                tokio::spawn(serve(stream, state.clone(), kill));
            }
        });
        *lock(&self.accept) = Some(task);
    }

    /// Stops listening (new connections are refused) and closes every
    /// open connection.
    pub async fn stop_listening(&self) {
        let task = lock(&self.accept).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let mut kill = lock(&self.state.kill);
        kill.cancel();
        *kill = CancellationToken::new();
    }

    /// Listens again on the same address.
    pub async fn start_listening(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.spawn_accept(listener);
    }

    /// Changes the behavior.
    pub fn behave(&self, change: impl FnOnce(&mut Behavior)) {
        change(&mut lock(&self.state.behavior));
    }

    /// Makes produce requests wait (true) or releases them (false).
    pub fn stall_produce(&self, stall: bool) {
        self.state.stall_produce.send_replace(stall);
    }

    /// Creates a topic directly.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let logs = (0..partitions).map(|_| PartitionLog::default()).collect();
        lock(&self.state.topics).insert(topic.to_string(), logs);
    }

    /// Produce requests received so far.
    pub fn produce_requests(&self) -> usize {
        self.state.produce_requests.load(Ordering::SeqCst)
    }

    /// Record batches received in produce requests so far, over all
    /// partitions of all requests.
    pub fn produce_batches(&self) -> usize {
        self.state.produce_batches.load(Ordering::SeqCst)
    }

    /// When each produce request arrived, in order.
    pub fn produce_arrivals(&self) -> Vec<std::time::Instant> {
        lock(&self.state.produce_arrivals).clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The most requests (handshakes excepted) ever handled at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }

    /// Sizes of the stored batches of a partition.
    pub fn batch_sizes(&self, topic: &str, partition: u32) -> Vec<usize> {
        let topics = lock(&self.state.topics);
        topics[topic][partition as usize]
            .batches
            .iter()
            .map(|(_, b)| b.len())
            .collect()
    }

    /// Every stored record of a partition, decoded.
    pub fn records(&self, topic: &str, partition: u32) -> Vec<Record> {
        let topics = lock(&self.state.topics);
        topics[topic][partition as usize]
            .batches
            .iter()
            .flat_map(|(_, b)| records_of(b.clone()).expect("stored batch"))
            .map(|r| r.expect("stored record"))
            .collect()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.accept).take() {
            task.abort();
        }
        lock(&self.state.kill).cancel();
    }
}

async fn serve(stream: TcpStream, state: Arc<State>, kill: CancellationToken) {
    let (mut sink, mut source) = Framed::new(stream, ServerCodec::default()).split();
    let (answers, mut to_send) = mpsc::unbounded_channel::<ResponseFrame>();
    let writer_state = state.clone();
    let writer = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(frame) = to_send.recv().await {
            let reverse = lock(&writer_state.behavior).reverse_batch;
            if reverse > 1 && frame.api_key() != ApiKey::Handshake.as_u16() {
                held.push(frame);
                if held.len() >= reverse {
                    for frame in held.drain(..).rev() {
                        if sink.feed(frame).await.is_err() {
                            return;
                        }
                    }
                }
            } else if sink.feed(frame).await.is_err() {
                return;
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    // Completed (sent or dropped) when the last produce read is appended.
    let mut previous_produce = {
        let (done, previous) = oneshot::channel::<()>();
        drop(done);
        previous
    };
    loop {
        let item = tokio::select! {
            _ = kill.cancelled() => break,
            item = source.next() => item,
        };
        let Some(Ok(incoming)) = item else { break };
        let is_handshake = incoming.header.api_key == ApiKey::Handshake.as_u16();
        if !is_handshake {
            let mut behavior = lock(&state.behavior);
            if behavior.drop_requests > 0 {
                behavior.drop_requests -= 1;
                break;
            }
        }
        // Like the real broker, a connection's produces are appended in
        // the order they were read: each waits for the one before.
        let is_produce = incoming.header.api_key == ApiKey::Produce.as_u16();
        if is_produce {
            state.produce_requests.fetch_add(1, Ordering::SeqCst);
            lock(&state.produce_arrivals).push(std::time::Instant::now());
        }
        let turn = is_produce.then(|| {
            let (done, next) = oneshot::channel::<()>();
            (std::mem::replace(&mut previous_produce, next), done)
        });
        let state = state.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            if !is_handshake {
                let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                state.most_in_flight.fetch_max(now, Ordering::SeqCst);
            }
            let done = match turn {
                Some((before, done)) => {
                    let _ = before.await;
                    Some(done)
                }
                None => None,
            };
            let answer = handle(&state, incoming).await;
            drop(done);
            if !is_handshake {
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            let _ = answers.send(answer);
        });
    }
    writer.abort();
}

fn now_ms(state: &State) -> i64 {
    lock(&state.behavior).clock_ms.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

async fn handle(state: &State, incoming: IncomingRequest) -> ResponseFrame {
    let header = incoming.header;
    let request = match incoming.request {
        Ok(request) => request,
        Err(err) => return ResponseFrame::for_codec_error(&header, &err),
    };
    let version = header.api_version;
    let id = header.request_id;
    if !matches!(request, Request::Handshake(_)) {
        let delay = lock(&state.behavior).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    match request {
        Request::Handshake(_) => ResponseFrame::ok(
            id,
            version,
            HandshakeResponse {
                server_name: "fake-broker".into(),
                api_versions: HandshakeRequest::for_this_build("fake").api_versions,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                max_batch_size: DEFAULT_MAX_BATCH_SIZE,
                max_in_flight_requests: match lock(&state.behavior).max_in_flight {
                    0 => 10_000,
                    n => n,
                },
            },
        ),
        Request::CreateTopic(req) => {
            let mut topics = lock(&state.topics);
            if req.partitions == 0 {
                return ResponseFrame::error(&header, ErrorCode::InvalidConfig, "zero partitions");
            }
            match topics.entry(req.topic) {
                std::collections::hash_map::Entry::Occupied(entry) => ResponseFrame::error(
                    &header,
                    ErrorCode::TopicAlreadyExists,
                    entry.key().clone(),
                ),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(
                        (0..req.partitions)
                            .map(|_| PartitionLog::default())
                            .collect(),
                    );
                    ResponseFrame::ok(id, version, CreateTopicResponse)
                }
            }
        }
        Request::RegisterProducer(req) => {
            let mut producers = lock(&state.producers);
            let next_id = producers.len() as i64;
            let entry = producers.entry(req.name).or_insert((next_id, -1));
            entry.1 += 1;
            ResponseFrame::ok(
                id,
                version,
                RegisterProducerResponse {
                    producer_id: entry.0,
                    producer_epoch: entry.1,
                },
            )
        }
        Request::DeleteTopic(req) => match lock(&state.topics).remove(&req.topic) {
            Some(_) => ResponseFrame::ok(id, version, DeleteTopicResponse),
            None => ResponseFrame::error(&header, ErrorCode::UnknownTopic, req.topic),
        },
        Request::ListTopics(_) => {
            let topics = lock(&state.topics)
                .iter()
                .map(|(name, logs)| TopicListing {
                    topic: name.clone(),
                    partitions: logs.len() as u32,
                })
                .collect();
            ResponseFrame::ok(id, version, ListTopicsResponse { topics })
        }
        Request::DescribeTopic(req) => {
            let topics = lock(&state.topics);
            match topics.get(&req.topic) {
                None => ResponseFrame::error(&header, ErrorCode::UnknownTopic, req.topic),
                Some(logs) => ResponseFrame::ok(
                    id,
                    version,
                    DescribeTopicResponse {
                        topic: req.topic.clone(),
                        retention_ms: None,
                        retention_bytes: None,
                        partitions: logs
                            .iter()
                            .enumerate()
                            .map(|(p, log)| PartitionDescription {
                                partition: p as u32,
                                log_start_offset: 0,
                                log_end_offset: log.next_offset,
                                size_bytes: log.batches.iter().map(|(_, b)| b.len() as u64).sum(),
                                segment_count: 1,
                            })
                            .collect(),
                    },
                ),
            }
        }
        Request::Produce(req) => {
            let mut stall = state.stall_produce.subscribe();
            let _ = stall.wait_for(|stalled| !*stalled).await;
            produce(state, &header, req)
        }
        Request::Fetch(req) => fetch(state, id, version, req).await,
        Request::ListOffsets(req) => {
            let topics = lock(&state.topics);
            let partitions = req
                .partitions
                .into_iter()
                .map(|p| {
                    let log = topics
                        .get(&p.topic)
                        .and_then(|logs| logs.get(p.partition as usize));
                    let (error_code, offset, timestamp_ms) = match log {
                        None => (ErrorCode::UnknownPartition, 0, None),
                        Some(log) => match p.spec {
                            OffsetSpec::Earliest => (ErrorCode::None, 0, None),
                            OffsetSpec::Latest => (ErrorCode::None, log.next_offset, None),
                            OffsetSpec::ByTimestamp(ts) => log
                                .batches
                                .iter()
                                .find_map(|(base, b)| {
                                    let h = crate::batch::BatchHeader::parse(b).ok()?;
                                    (h.max_timestamp >= ts).then_some((
                                        ErrorCode::None,
                                        *base,
                                        Some(h.max_timestamp),
                                    ))
                                })
                                .unwrap_or((ErrorCode::None, log.next_offset, None)),
                        },
                    };
                    ListOffsetsPartitionResponse {
                        error_message: String::new(),
                        topic: p.topic,
                        partition: p.partition,
                        error_code,
                        offset,
                        timestamp_ms,
                    }
                })
                .collect();
            ResponseFrame::ok(id, version, ListOffsetsResponse { partitions })
        }
        Request::CreateGroup(_)
        | Request::DescribeGroup(_)
        | Request::AlterGroup(_)
        | Request::SeekGroup(_)
        | Request::PauseGroup(_)
        | Request::DeleteGroup(_)
        | Request::JoinGroup(_)
        | Request::Receive(_)
        | Request::Settle(_)
        | Request::MessageState(_)
        | Request::SaslHandshake(_)
        | Request::SaslAuthenticate(_)
        | Request::Redrive(_)
        | Request::AlterTopic(_)
        | Request::ListGroups(_)
        | Request::DescribeBroker(_) => ResponseFrame::error(
            &header,
            ErrorCode::UnknownApi,
            "not supported by the fake broker",
        ),
    }
}

fn produce(state: &State, header: &RequestHeader, req: ProduceRequest) -> ResponseFrame {
    let now = now_ms(state);
    let mut topics = lock(&state.topics);
    let Some(logs) = topics.get_mut(&req.topic) else {
        return ResponseFrame::error(header, ErrorCode::UnknownTopic, req.topic);
    };
    let mut partitions = Vec::new();
    let batches = req.partitions.iter().map(|p| p.batches.len()).sum();
    state.produce_batches.fetch_add(batches, Ordering::SeqCst);
    for part in req.partitions {
        let mut result = ProducePartitionResponse {
            error_message: String::new(),
            partition: part.partition,
            error_code: ErrorCode::None,
            base_offset: 0,
            last_offset: 0,
            append_time_ms: -1,
            log_start_offset: 0,
        };
        let Some(log) = logs.get_mut(part.partition as usize) else {
            result.error_code = ErrorCode::UnknownPartition;
            partitions.push(result);
            continue;
        };
        let validated: Result<Vec<RecordBatch>, _> = part
            .batches
            .into_iter()
            .map(|b| RecordBatch::validate(b, DEFAULT_MAX_BATCH_SIZE as usize))
            .collect();
        let Ok(validated) = validated else {
            result.error_code = ErrorCode::CorruptMessage;
            partitions.push(result);
            continue;
        };
        // Fencing, as the real broker does it: a batch of an epoch older
        // than the producer id's latest registration is refused.
        let fenced = validated.iter().any(|batch| {
            let stamp = batch.header().producer;
            stamp.producer_id >= 0
                && lock(&state.producers)
                    .values()
                    .any(|(id, epoch)| *id == stamp.producer_id && *epoch > stamp.producer_epoch)
        });
        if fenced {
            result.error_code = ErrorCode::ProducerFenced;
            result.error_message = "a newer epoch of this producer exists".into();
            partitions.push(result);
            continue;
        }
        result.base_offset = log.next_offset;
        for batch in validated {
            let base = log.next_offset;
            let mut buf = batch.bytes().to_vec();
            let max_ts = now + i64::from(batch.max_timestamp_delta());
            stamp(&mut buf, base, now, max_ts, batch.records_crc());
            log.next_offset += u64::from(batch.header().record_count);
            log.batches.push((base, Bytes::from(buf)));
        }
        result.last_offset = log.next_offset - 1;
        result.append_time_ms = now;
        partitions.push(result);
    }
    drop(topics);
    state.appended.send_modify(|v| *v += 1);
    ResponseFrame::ok(
        header.request_id,
        header.api_version,
        ProduceResponse {
            topic: req.topic,
            partitions,
            throttle_ms: lock(&state.behavior).throttle_ms,
        },
    )
}

/// What a fetch of one partition finds right now.
fn read_partition(state: &State, p: &FetchPartition) -> FetchPartitionResponse {
    let topics = lock(&state.topics);
    let mut answer = FetchPartitionResponse {
        topic: p.topic.clone(),
        partition: p.partition,
        error_code: ErrorCode::None,
        error_message: String::new(),
        high_watermark: 0,
        log_start_offset: 0,
        records: Bytes::new(),
    };
    let Some(log) = topics
        .get(&p.topic)
        .and_then(|logs| logs.get(p.partition as usize))
    else {
        answer.error_code = ErrorCode::UnknownPartition;
        return answer;
    };
    answer.high_watermark = log.next_offset;
    if p.offset > log.next_offset {
        answer.error_code = ErrorCode::OffsetOutOfRange;
        return answer;
    }
    let mut out = BytesMut::new();
    for (base, batch) in &log.batches {
        let header = crate::batch::BatchHeader::parse(batch).expect("stored header");
        if base + u64::from(header.record_count) <= p.offset {
            continue;
        }
        if !out.is_empty() && out.len() + batch.len() > p.max_bytes as usize {
            break;
        }
        out.extend_from_slice(batch);
        if lock(&state.behavior).corrupt_fetch {
            let last = out.len() - 1;
            out[last] ^= 0xff;
        }
    }
    answer.records = out.freeze();
    answer
}

async fn fetch(state: &State, id: u32, version: u16, req: FetchRequest) -> ResponseFrame {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(req.max_wait_ms));
    let mut appended = state.appended.subscribe();
    loop {
        let partitions: Vec<_> = req
            .partitions
            .iter()
            .map(|p| read_partition(state, p))
            .collect();
        let bytes: usize = partitions.iter().map(|p| p.records.len()).sum();
        let errors = partitions.iter().any(|p| p.error_code != ErrorCode::None);
        if errors || bytes >= req.min_bytes as usize {
            return ResponseFrame::ok(id, version, FetchResponse { partitions });
        }
        if tokio::time::timeout_at(deadline, appended.changed())
            .await
            .is_err()
        {
            return ResponseFrame::ok(id, version, FetchResponse { partitions });
        }
    }
}
