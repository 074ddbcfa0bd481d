//! One function per API: a decoded request in, a response frame out. Errors
//! of one partition go in that partition's entry; errors of the whole
//! request (unknown topic, bad configuration) in the top-level error code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::select_all;
use pigeon_protocol::batch::{BatchError, RecordBatch};
use pigeon_protocol::*;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Broker;
use crate::log::producers::SequenceError;
use crate::log::{AppendInfo, LogError};
use crate::metrics;
use crate::topics::{NewTopic, Topic, TopicError};

/// The answer to a produce naming a partition without a batch (refused
/// before the log; `committed` falls back to it for an empty result list).
const NO_BATCH: &str = "the produce request carries no record batch for this partition";

/// Longest long-poll a fetch may ask for.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

/// Bytes of one fetch response entry besides its topic name and records
/// (name length, partition, error code, empty message, high watermark, log
/// start, records length).
const FETCH_ENTRY_OVERHEAD: usize = 2 + 4 + 2 + 2 + 8 + 8 + 4;

/// Answers one request. `read_budget` is the connection's budget of
/// fetched bytes in memory, in KiB; the permit returned with the response
/// holds its share until the response is written.
pub async fn handle(
    broker: &Broker,
    members: &super::group_handlers::Membership,
    read_budget: &Arc<Semaphore>,
    header: &RequestHeader,
    request: Request,
) -> (ResponseFrame, Option<OwnedSemaphorePermit>) {
    let mut held = None;
    let result = match request {
        Request::Handshake(_) => Ok(Response::from(handshake(broker))),
        Request::CreateTopic(req) => create_topic(broker, req).await.map(Response::from),
        Request::DeleteTopic(req) => delete_topic(broker, req).await.map(Response::from),
        Request::ListTopics(_) => Ok(Response::from(list_topics(broker))),
        Request::DescribeTopic(req) => describe_topic(broker, req).map(Response::from),
        Request::Produce(req) => produce(broker, req).await.map(Response::from),
        Request::RegisterProducer(req) => register_producer(broker, req).map(Response::from),
        Request::Fetch(req) => fetch(broker, req, read_budget).await.map(|(r, permit)| {
            held = permit;
            Response::from(r)
        }),
        Request::ListOffsets(req) => Ok(Response::from(list_offsets(broker, req).await)),
        group_request => {
            match super::group_handlers::handle(broker, members, group_request).await {
                Some(result) => result,
                None => Err(TopicError {
                    code: ErrorCode::UnknownApi,
                    message: "this API is not served by this broker".into(),
                }),
            }
        }
    };
    (response_frame(header, result), held)
}

/// The frame answering `header`: the response, or the error (counted).
pub fn response_frame(
    header: &RequestHeader,
    result: Result<Response, TopicError>,
) -> ResponseFrame {
    match result {
        Ok(response) => ResponseFrame::ok(header.request_id, header.api_version, response),
        Err(e) => {
            metrics::error(e.code);
            ResponseFrame::error(header, e.code, e.message)
        }
    }
}

/// The APIs this broker serves, announced in the handshake.
const SERVED_APIS: [u16; 20] = [
    0, 10, 11, 12, 13, 20, 21, 30, 31, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50,
];

fn handshake(broker: &Broker) -> HandshakeResponse {
    HandshakeResponse {
        server_name: format!("pigeon-broker {}", env!("CARGO_PKG_VERSION")),
        api_versions: supported_api_versions()
            .into_iter()
            .filter(|range| SERVED_APIS.contains(&range.api_key))
            .collect(),
        max_frame_size: broker.config.max_frame_bytes,
        max_batch_size: broker.config.log.max_batch_bytes,
        max_in_flight_requests: broker.config.max_in_flight_per_connection,
    }
}

async fn create_topic(
    broker: &Broker,
    req: CreateTopicRequest,
) -> Result<CreateTopicResponse, TopicError> {
    let new = NewTopic {
        name: req.topic,
        partitions: req.partitions,
        retention_ms: req.retention_ms,
        retention_bytes: req.retention_bytes,
    };
    broker.topics.create(new).await.map(|_| CreateTopicResponse)
}

async fn delete_topic(
    broker: &Broker,
    req: DeleteTopicRequest,
) -> Result<DeleteTopicResponse, TopicError> {
    if broker.topics.get(&req.topic).is_some() {
        // Its groups go first: a crash in between leaves a topic without
        // groups, never groups whose progress would apply to a new topic.
        let deleted = broker.groups.delete_all_of(&req.topic).await?;
        if !deleted.is_empty() {
            tracing::info!(topic = req.topic, groups = ?deleted, "deleted the topic's consumer groups");
        }
    }
    broker
        .topics
        .delete(&req.topic)
        .await
        .map(|()| DeleteTopicResponse)
}

fn list_topics(broker: &Broker) -> ListTopicsResponse {
    let topics = broker.topics.list();
    let topics = topics.iter().map(|t| TopicListing {
        topic: t.metadata.name.clone(),
        partitions: t.metadata.partitions,
    });
    ListTopicsResponse {
        topics: topics.collect(),
    }
}

fn describe_topic(
    broker: &Broker,
    req: DescribeTopicRequest,
) -> Result<DescribeTopicResponse, TopicError> {
    let topic = find_topic(broker, &req.topic)?;
    let partitions = topic.partitions.iter().enumerate().map(|(id, log)| {
        let reader = log.reader();
        PartitionDescription {
            partition: id as u32,
            log_start_offset: reader.start_offset(),
            log_end_offset: reader.end_offset(),
            size_bytes: reader.size_bytes(),
            segment_count: reader.segment_count() as u32,
        }
    });
    Ok(DescribeTopicResponse {
        topic: topic.metadata.name.clone(),
        retention_ms: topic.metadata.retention_ms,
        retention_bytes: topic.metadata.retention_bytes,
        partitions: partitions.collect(),
    })
}

fn find_topic(broker: &Broker, name: &str) -> Result<Arc<Topic>, TopicError> {
    broker.topics.get(name).ok_or_else(|| TopicError {
        code: ErrorCode::UnknownTopic,
        message: format!(
            "topic {name} does not exist; create it with `pigeon topic create {name}`"
        ),
    })
}

fn register_producer(
    broker: &Broker,
    req: RegisterProducerRequest,
) -> Result<RegisterProducerResponse, TopicError> {
    let registered = tokio::task::block_in_place(|| broker.producers.register(&req.name));
    let (producer_id, producer_epoch) = registered.map_err(|e| {
        let code = match e {
            crate::registry::RegisterError::InvalidName(_)
            | crate::registry::RegisterError::Full(_) => ErrorCode::InvalidRequest,
            crate::registry::RegisterError::Storage(_) => ErrorCode::StorageError,
        };
        TopicError {
            code,
            message: e.to_string(),
        }
    })?;
    tracing::debug!(name = %req.name, producer_id, producer_epoch, "producer registered");
    Ok(RegisterProducerResponse {
        producer_id,
        producer_epoch,
    })
}

async fn produce(broker: &Broker, req: ProduceRequest) -> Result<ProduceResponse, TopicError> {
    Ok(submit_produce(broker, req).await?.finish().await)
}

/// A produce request whose batches are queued at their partitions' writers
/// (or refused), waiting for their commits.
#[derive(Debug)]
pub struct SubmittedProduce {
    topic: Arc<Topic>,
    started: Instant,
    deadline: tokio::time::Instant,
    timeout_ms: u32,
    partitions: Vec<SubmittedPartition>,
}

#[derive(Debug)]
enum SubmittedPartition {
    /// Refused before reaching the log, or not queued in time.
    Answered(ProducePartitionResponse),
    /// Queued: records and bytes for the metrics once committed.
    Queued {
        partition: u32,
        records: u64,
        bytes: u64,
        submitted: crate::log::Submitted,
    },
}

/// Validates a produce request and queues its batches at their partitions'
/// writers, in the request's order. The connection calls this for each
/// produce before it reads the next request, so a producer's pipelined
/// requests to a partition are appended in the order it sent them (their
/// sequence numbers stay in order) while their commits overlap. Waits only
/// for room in the writers' queues, up to the request's timeout.
pub async fn submit_produce(
    broker: &Broker,
    req: ProduceRequest,
) -> Result<SubmittedProduce, TopicError> {
    let started = Instant::now();
    let topic = find_topic(broker, &req.topic)?;
    // 0 asks for no particular bound: use the default of 30 s.
    let timeout_ms = if req.timeout_ms == 0 {
        30_000
    } else {
        req.timeout_ms
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
    let mut partitions = Vec::with_capacity(req.partitions.len());
    for part in req.partitions {
        let partition = part.partition;
        let submitted = tokio::time::timeout_at(deadline, submit_partition(broker, &topic, part))
            .await
            .unwrap_or_else(|_| SubmittedPartition::Answered(timed_out(partition, timeout_ms)));
        partitions.push(submitted);
    }
    Ok(SubmittedProduce {
        topic,
        started,
        deadline,
        timeout_ms,
        partitions,
    })
}

impl SubmittedProduce {
    /// Waits for every queued batch to commit (up to the request's timeout)
    /// and builds the answer.
    pub async fn finish(self) -> ProduceResponse {
        let mut partitions = Vec::with_capacity(self.partitions.len());
        for part in self.partitions {
            let response = match part {
                SubmittedPartition::Answered(response) => response,
                SubmittedPartition::Queued {
                    partition,
                    records,
                    bytes,
                    submitted,
                } => match tokio::time::timeout_at(self.deadline, submitted.wait()).await {
                    Ok(results) => {
                        let response = committed(partition, results);
                        if response.error_code == ErrorCode::None {
                            metrics::produced(&self.topic.metadata.name, records, bytes);
                        }
                        response
                    }
                    Err(_) => timed_out(partition, self.timeout_ms),
                },
            };
            if response.error_code != ErrorCode::None {
                metrics::error(response.error_code);
            }
            partitions.push(response);
        }
        metrics::produce_latency(self.started.elapsed());
        ProduceResponse {
            topic: self.topic.metadata.name.clone(),
            partitions,
            // Set by the connection, which keeps the quota.
            throttle_ms: 0,
        }
    }
}

fn failed_partition(partition: u32, code: ErrorCode, message: String) -> ProducePartitionResponse {
    ProducePartitionResponse {
        partition,
        error_code: code,
        error_message: message,
        base_offset: 0,
        last_offset: 0,
        append_time_ms: -1,
        log_start_offset: 0,
    }
}

async fn submit_partition(
    broker: &Broker,
    topic: &Topic,
    part: ProducePartition,
) -> SubmittedPartition {
    let partition = part.partition;
    let failed = |code, message: String| {
        SubmittedPartition::Answered(failed_partition(partition, code, message))
    };
    let Some(log) = topic.partition(partition) else {
        return failed(
            ErrorCode::UnknownPartition,
            unknown_partition(topic, partition),
        );
    };
    if part.batches.is_empty() {
        return failed(ErrorCode::InvalidRequest, NO_BATCH.into());
    }
    let max = broker.config.log.max_batch_bytes as usize;
    let mut batches = Vec::with_capacity(part.batches.len());
    let mut bytes = 0;
    for (i, raw) in part.batches.into_iter().enumerate() {
        bytes += raw.len() as u64;
        match RecordBatch::validate(raw, max) {
            Ok(batch) => batches.push(batch),
            Err(e) => {
                return failed(
                    batch_error_code(&e),
                    format!("record batch {i} was refused: {e}"),
                );
            }
        }
    }
    let records = batches
        .iter()
        .map(|b| u64::from(b.header().record_count))
        .sum();
    SubmittedPartition::Queued {
        partition,
        records,
        bytes,
        submitted: log.submit_all(batches).await,
    }
}

/// The answer for a partition's committed batches: the first and last
/// offsets, or the first error.
fn committed(
    partition: u32,
    results: Vec<Result<AppendInfo, LogError>>,
) -> ProducePartitionResponse {
    let mut first: Option<AppendInfo> = None;
    let mut last: Option<AppendInfo> = None;
    for result in results {
        match result {
            Ok(info) => {
                first.get_or_insert(info);
                last = Some(info);
            }
            Err(e) => return failed_partition(partition, log_error_code(&e), e.to_string()),
        }
    }
    match (first, last) {
        (Some(first), Some(last)) => ProducePartitionResponse {
            partition,
            error_code: ErrorCode::None,
            error_message: String::new(),
            base_offset: first.base_offset,
            last_offset: last.last_offset,
            append_time_ms: last.timestamp,
            log_start_offset: last.log_start_offset,
        },
        _ => failed_partition(partition, ErrorCode::InvalidRequest, NO_BATCH.into()),
    }
}

fn timed_out(partition: u32, timeout_ms: u32) -> ProducePartitionResponse {
    failed_partition(
        partition,
        ErrorCode::RequestTimedOut,
        format!(
            "the append was not durable within the request's timeout of {timeout_ms} ms; it may still be appended, so a retry can duplicate it unless the producer is idempotent"
        ),
    )
}

fn unknown_partition(topic: &Topic, partition: u32) -> String {
    format!(
        "topic {} has partitions 0 to {}; partition {partition} does not exist",
        topic.metadata.name,
        topic.metadata.partitions - 1
    )
}

fn batch_error_code(e: &BatchError) -> ErrorCode {
    match e {
        BatchError::BadLength { reason, .. } if reason.contains("limit") => {
            ErrorCode::BatchTooLarge
        }
        _ => ErrorCode::CorruptMessage,
    }
}

/// The wire code of a log error.
pub fn log_error_code(e: &LogError) -> ErrorCode {
    match e {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::InvalidBatch(b) => batch_error_code(b),
        LogError::TimestampDelta(_) => ErrorCode::InvalidTimestamp,
        LogError::Corrupt { .. } => ErrorCode::CorruptStoredData,
        LogError::DiskFull { .. } => ErrorCode::DiskFull,
        LogError::ReadOnly { .. } => ErrorCode::PartitionReadOnly,
        LogError::Closed => ErrorCode::ShuttingDown,
        LogError::Sequence(SequenceError::Fenced { .. }) => ErrorCode::ProducerFenced,
        LogError::Sequence(SequenceError::OutOfOrder { .. }) => ErrorCode::OutOfOrderSequence,
        LogError::Sequence(SequenceError::Unknown { .. }) => ErrorCode::UnknownProducer,
        _ => ErrorCode::StorageError,
    }
}

async fn fetch(
    broker: &Broker,
    req: FetchRequest,
    read_budget: &Arc<Semaphore>,
) -> Result<(FetchResponse, Option<OwnedSemaphorePermit>), TopicError> {
    let started = Instant::now();
    // Each entry is one read: the same partition twice would let one small
    // request make thousands of reads.
    let mut named = std::collections::HashSet::with_capacity(req.partitions.len());
    for p in &req.partitions {
        if !named.insert((p.topic.as_str(), p.partition)) {
            return Err(TopicError {
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "the fetch names {}/{} more than once; name each partition once",
                    p.topic, p.partition
                ),
            });
        }
    }
    let deadline = started + Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_FETCH_WAIT);
    let min_bytes = (req.min_bytes as usize).max(1);
    // Records share the frame with every partition's entry: what is left
    // after those (and 1 KiB for the header and error messages) bounds them.
    let entries: usize = req
        .partitions
        .iter()
        .map(|p| FETCH_ENTRY_OVERHEAD + p.topic.len())
        .sum();
    let room = (broker.config.max_frame_bytes as usize).saturating_sub(1024 + entries);
    let max_total = (req.max_bytes as usize).min(room);
    // What this fetch may read, in KiB of the connection's read budget
    // (which always holds at least one frame).
    let want = u32::try_from(max_total.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    loop {
        // Bytes stored before the read: what grows past them is new.
        let before = log_state(broker, &req);
        let mut permit = tokio::select! {
            permit = read_budget.clone().acquire_many_owned(want) => permit.ok(),
            _ = broker.shutdown.cancelled() => None,
        };
        let (response, total, full) = fetch_once(broker, &req, max_total);
        let now = Instant::now();
        if total >= min_bytes || full || now >= deadline || broker.shutdown.is_cancelled() {
            metrics::fetched(total as u64, started.elapsed());
            // Keep only what was read.
            let used = total.div_ceil(1024);
            if let Some(permit) = &mut permit
                && permit.num_permits() > used
            {
                drop(permit.split(permit.num_permits() - used));
            }
            return Ok((response, permit));
        }
        drop(permit);
        // Wait for data beyond what this read saw (not beyond the offset
        // asked for, which would hold at once and spin), and read again
        // only once enough bytes may have arrived to reach `min_bytes`: a
        // long-poll does not re-read its partitions at every append.
        let mut seen: Vec<Option<u64>> = req
            .partitions
            .iter()
            .zip(&response.partitions)
            .map(|(p, r)| (r.error_code == ErrorCode::None).then(|| r.high_watermark.max(p.offset)))
            .collect();
        loop {
            wait_for_data(broker, &req, &seen, deadline).await;
            if Instant::now() >= deadline || broker.shutdown.is_cancelled() {
                break;
            }
            let now = log_state(broker, &req);
            let grown: u64 = before
                .iter()
                .zip(&now)
                .map(|(b, n)| match (b, n) {
                    (Some((_, then)), Some((_, size))) => size.saturating_sub(*then),
                    _ => 0,
                })
                .sum();
            if total as u64 + grown >= min_bytes as u64 {
                break;
            }
            for (seen, now) in seen.iter_mut().zip(&now) {
                if let (Some(seen), Some((end, _))) = (seen, now) {
                    *seen = (*seen).max(*end);
                }
            }
        }
    }
}

/// Each fetched partition's end offset and bytes stored (`None` for a
/// partition that does not exist).
fn log_state(broker: &Broker, req: &FetchRequest) -> Vec<Option<(u64, u64)>> {
    req.partitions
        .iter()
        .map(|p| {
            let log = partition_of(broker, &p.topic, p.partition).ok()?;
            let reader = log.reader();
            Some((reader.end_offset(), reader.size_bytes()))
        })
        .collect()
}

/// Reads every partition once; returns the response, its record bytes,
/// and whether it is as full as it can get now (some partition has data it
/// could not include): then waiting for `min_bytes` cannot help.
fn fetch_once(
    broker: &Broker,
    req: &FetchRequest,
    max_total: usize,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut full = false;
    let mut partitions = Vec::with_capacity(req.partitions.len());
    for p in &req.partitions {
        let budget = (p.max_bytes as usize).min(max_total.saturating_sub(total));
        let mut entry = FetchPartitionResponse {
            topic: p.topic.clone(),
            partition: p.partition,
            error_code: ErrorCode::None,
            error_message: String::new(),
            high_watermark: 0,
            log_start_offset: 0,
            records: Bytes::new(),
        };
        match partition_of(broker, &p.topic, p.partition) {
            Err(e) => set_error(&mut entry, e.code, e.message),
            Ok(log) if budget == 0 => {
                entry.high_watermark = log.reader().end_offset();
                entry.log_start_offset = log.reader().start_offset();
                full |= p.offset < entry.high_watermark;
            }
            Ok(log) => match tokio::task::block_in_place(|| log.reader().read(p.offset, budget)) {
                Ok(read) => {
                    entry.high_watermark = read.high_watermark;
                    entry.log_start_offset = read.log_start_offset;
                    // A read returns at least one whole batch; past the first
                    // partition, one that does not fit waits for the next fetch.
                    if total == 0 || read.bytes.len() <= budget {
                        total += read.bytes.len();
                        full |= next_offset_after(&read.bytes)
                            .is_some_and(|next| next < read.high_watermark);
                        entry.records = read.bytes;
                    } else {
                        full = true;
                    }
                }
                Err(e) => {
                    entry.high_watermark = log.reader().end_offset();
                    entry.log_start_offset = log.reader().start_offset();
                    set_error(&mut entry, log_error_code(&e), e.to_string());
                }
            },
        }
        partitions.push(entry);
    }
    (FetchResponse { partitions }, total, full)
}

/// The offset after the last record of batches laid back to back.
fn next_offset_after(mut batches: &[u8]) -> Option<u64> {
    let mut next = None;
    while !batches.is_empty() {
        let header = pigeon_protocol::batch::BatchHeader::parse(batches).ok()?;
        next = Some(header.next_offset());
        batches = batches.get(header.total_len()..)?;
    }
    next
}

fn set_error(entry: &mut FetchPartitionResponse, code: ErrorCode, message: String) {
    metrics::error(code);
    entry.error_code = code;
    entry.error_message = message;
}

/// Waits until a fetched partition's end moves past `seen` (`None`:
/// not watched), the deadline passes, or the broker shuts down. No
/// polling: each partition log announces its end offset through a watch
/// channel.
async fn wait_for_data(
    broker: &Broker,
    req: &FetchRequest,
    seen: &[Option<u64>],
    deadline: Instant,
) {
    let mut watches = Vec::new();
    for (p, seen) in req.partitions.iter().zip(seen) {
        let Some(seen) = *seen else { continue };
        if let Ok(log) = partition_of(broker, &p.topic, p.partition) {
            let mut end = log.watch_end();
            watches.push(Box::pin(async move {
                let _ = end.wait_for(|e| *e > seen).await;
            }));
        }
    }
    let timeout = tokio::time::sleep_until(deadline.into());
    if watches.is_empty() {
        tokio::select! {
            _ = timeout => {}
            _ = broker.shutdown.cancelled() => {}
        }
        return;
    }
    tokio::select! {
        _ = select_all(watches) => {}
        _ = timeout => {}
        _ = broker.shutdown.cancelled() => {}
    }
}

fn partition_of(
    broker: &Broker,
    topic: &str,
    partition: u32,
) -> Result<crate::log::PartitionLog, TopicError> {
    let topic = find_topic(broker, topic)?;
    topic
        .partition(partition)
        .cloned()
        .ok_or_else(|| TopicError {
            code: ErrorCode::UnknownPartition,
            message: unknown_partition(&topic, partition),
        })
}

async fn list_offsets(broker: &Broker, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut partitions = Vec::with_capacity(req.partitions.len());
    for p in req.partitions {
        let mut entry = ListOffsetsPartitionResponse {
            topic: p.topic.clone(),
            partition: p.partition,
            error_code: ErrorCode::None,
            error_message: String::new(),
            offset: 0,
            timestamp_ms: None,
        };
        match partition_of(broker, &p.topic, p.partition) {
            Err(e) => {
                entry.error_code = e.code;
                entry.error_message = e.message;
            }
            Ok(log) => {
                let reader = log.reader();
                match p.spec {
                    OffsetSpec::Earliest => entry.offset = reader.start_offset(),
                    OffsetSpec::Latest => entry.offset = reader.end_offset(),
                    OffsetSpec::ByTimestamp(ts) => {
                        match tokio::task::block_in_place(|| reader.record_at_or_after(ts)) {
                            Ok(Some((offset, found))) => {
                                entry.offset = offset;
                                entry.timestamp_ms = Some(found);
                            }
                            Ok(None) => entry.offset = reader.end_offset(),
                            Err(e) => {
                                entry.error_code = log_error_code(&e);
                                entry.error_message = e.to_string();
                            }
                        }
                    }
                }
            }
        }
        partitions.push(entry);
    }
    ListOffsetsResponse { partitions }
}
