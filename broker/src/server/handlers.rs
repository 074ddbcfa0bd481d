//! One function per API of the binary protocol, each a translation:
//! decode the wire request into the service's values, make one call to
//! the service as the connection's caller ([`Checked`]: permissions
//! first), encode the answer. No domain question is decided here.
//! Errors of one partition or item go in that entry; errors of the whole
//! request in the response's error code (see [`super::errors`]).

use std::sync::Arc;
use std::time::Duration;

use pigeon_protocol::*;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::errors::{entry_error, error_frame};
use super::{admin_handlers, audit, group_handlers};
use crate::error::BrokerError;
use crate::service::{
    self, Broker, Caller, Checked, MemberOwner, ProduceOutcome, SubmittedProduce,
};
use crate::topics::NewTopic;

/// Bytes of one fetch response entry besides its topic name and records
/// (name length, partition, error code, empty message, high watermark, log
/// start, records length).
const FETCH_ENTRY_OVERHEAD: usize = 2 + 4 + 2 + 2 + 8 + 8 + 4;

/// What a request of a connection carries besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Owner of the consumers joined on the connection.
    pub owner: MemberOwner,
    /// The connection's budget of fetched bytes in memory, in KiB.
    pub read_budget: Arc<Semaphore>,
    /// Who makes the requests (changes when the connection authenticates).
    pub caller: Arc<Caller>,
}

/// Answers one request (a produce goes through [`submit_produce`]
/// instead, so the connection keeps its order). The permit returned with
/// the response holds its share of the read budget until it is written.
pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    header: &RequestHeader,
    request: Request,
) -> (ResponseFrame, Option<OwnedSemaphorePermit>) {
    let audited = audit::operation(&request);
    let (result, held) = answer(broker, context, header.api_version, request).await;
    if let Some(op) = &audited {
        audit::log(&context.caller, op, &result);
    }
    (response_frame(header, result), held)
}

/// The answer to one request (of version `api_version`), and the read
/// budget it holds.
async fn answer(
    broker: &Broker,
    context: &RequestContext,
    api_version: u16,
    request: Request,
) -> (Result<Response, BrokerError>, Option<OwnedSemaphorePermit>) {
    let mut held = None;
    // Every operation goes through the caller's permissions.
    let broker = &broker.checked(&context.caller);
    let result = match request {
        Request::Handshake(_) => Ok(Response::from(handshake(broker))),
        // Answered by the connection itself, in order (`server/auth.rs`).
        Request::SaslHandshake(_) | Request::SaslAuthenticate(_) => Err(BrokerError::new(
            crate::error::ErrorKind::InvalidRequest,
            "authentication requests are answered by the connection, not here",
        )),
        Request::CreateTopic(req) => create_topic(broker, req).await.map(Response::from),
        Request::DeleteTopic(req) => broker
            .delete_topic(&req.topic)
            .await
            .map(|()| DeleteTopicResponse.into()),
        Request::ListTopics(_) => list_topics(broker).map(Response::from),
        Request::DescribeTopic(req) => describe_topic(broker, req).map(Response::from),
        Request::Produce(req) => finish_produce(submit_produce(broker, req).await).await,
        Request::RegisterProducer(req) => register_producer(broker, req).map(Response::from),
        Request::Fetch(req) => fetch(broker, req, &context.read_budget)
            .await
            .map(|(r, permit)| {
                held = permit;
                Response::from(r)
            }),
        Request::ListOffsets(req) => list_offsets(broker, req).map(Response::from),
        Request::CreateGroup(req) => group_handlers::create(broker, req).await,
        Request::DeleteGroup(req) => group_handlers::delete(broker, req).await,
        Request::AlterGroup(req) => group_handlers::alter(broker, req).await,
        Request::DescribeGroup(req) => group_handlers::describe(broker, req).await,
        Request::SeekGroup(req) => group_handlers::seek(broker, req).await,
        Request::PauseGroup(req) => group_handlers::pause(broker, req).await,
        Request::JoinGroup(req) => group_handlers::join(broker, &context.owner, req).await,
        Request::Receive(req) => group_handlers::receive(broker, &context.owner, req).await,
        Request::Settle(req) => group_handlers::settle(broker, &context.owner, req).await,
        Request::MessageState(req) => group_handlers::message_state(broker, req).await,
        Request::Redrive(req) => group_handlers::redrive(broker, req, api_version).await,
        Request::AlterTopic(req) => admin_handlers::alter_topic(broker, req).await,
        Request::ListGroups(req) => admin_handlers::list_groups(broker, req).await,
        Request::DescribeBroker(_) => admin_handlers::describe_broker(broker).await,
    };
    (result, held)
}

/// The frame answering `header`: the response, or the error (counted).
pub fn response_frame(
    header: &RequestHeader,
    result: Result<Response, BrokerError>,
) -> ResponseFrame {
    match result {
        Ok(response) => ResponseFrame::ok(header.request_id, header.api_version, response),
        Err(e) => error_frame(header, e),
    }
}

/// Every API this build speaks is served: [`handle`] matches every
/// request exhaustively, so a new API cannot be announced without a
/// handler.
fn handshake(broker: &Checked<'_>) -> HandshakeResponse {
    HandshakeResponse {
        server_name: format!("pigeon-broker {}", env!("CARGO_PKG_VERSION")),
        api_versions: supported_api_versions(),
        max_frame_size: broker.config.max_frame_bytes,
        max_batch_size: broker.config.log.max_batch_bytes,
        max_in_flight_requests: broker.config.max_in_flight_per_connection,
    }
}

async fn create_topic(
    broker: &Checked<'_>,
    req: CreateTopicRequest,
) -> Result<CreateTopicResponse, BrokerError> {
    let new = NewTopic {
        name: req.topic,
        partitions: req.partitions,
        retention_ms: req.retention_ms,
        retention_bytes: req.retention_bytes,
    };
    broker.create_topic(new).await.map(|()| CreateTopicResponse)
}

/// The topics the caller may see, built listing by listing: as soon as the
/// encoded answer would pass `max_frame_bytes`, the request is answered
/// `FrameTooLarge` instead (nothing more is built).
fn list_topics(broker: &Checked<'_>) -> Result<ListTopicsResponse, BrokerError> {
    let summaries = broker.list_topics();
    let what = format!("{} topics", summaries.len());
    let mut room = ListRoom::new(broker.config.max_frame_bytes);
    let mut topics = Vec::new();
    for t in summaries {
        room.take(
            TopicListing::encoded_len(&t.name),
            &what,
            "raise the broker's max_frame_bytes",
        )?;
        topics.push(TopicListing {
            topic: t.name,
            partitions: t.partitions,
        });
    }
    Ok(ListTopicsResponse { topics })
}

/// What is left of one response frame for a list answer's listings
/// (ListTopics, ListGroups), counted as the listings are found.
pub(super) struct ListRoom {
    max_frame: u32,
    room: usize,
    used: usize,
    fitted: usize,
}

impl ListRoom {
    /// The room of a list answer in a frame of `max_frame` bytes.
    pub(super) fn new(max_frame: u32) -> ListRoom {
        ListRoom {
            max_frame,
            room: (max_frame as usize).saturating_sub(LIST_RESPONSE_OVERHEAD),
            used: 0,
            fitted: 0,
        }
    }

    /// Counts one more listing of `len` encoded bytes; once the answer
    /// would pass the frame, the `FrameTooLarge` error saying the list of
    /// `what` does not fit, how many did, and `advice`.
    pub(super) fn take(&mut self, len: usize, what: &str, advice: &str) -> Result<(), BrokerError> {
        self.used += len;
        if self.used > self.room {
            return Err(BrokerError::new(
                crate::error::ErrorKind::FrameTooLarge,
                format!(
                    "the list of {what} does not fit in one response of max_frame_bytes ({} bytes; {} fit); {advice}",
                    self.max_frame, self.fitted
                ),
            ));
        }
        self.fitted += 1;
        Ok(())
    }
}

fn describe_topic(
    broker: &Checked<'_>,
    req: DescribeTopicRequest,
) -> Result<DescribeTopicResponse, BrokerError> {
    let topic = broker.describe_topic(&req.topic)?;
    let partitions = topic.partitions.into_iter().map(|p| PartitionDescription {
        partition: p.partition,
        log_start_offset: p.log_start_offset,
        log_end_offset: p.log_end_offset,
        size_bytes: p.size_bytes,
        segment_count: p.segment_count,
    });
    Ok(DescribeTopicResponse {
        topic: topic.name,
        retention_ms: topic.retention_ms,
        retention_bytes: topic.retention_bytes,
        partitions: partitions.collect(),
    })
}

fn register_producer(
    broker: &Checked<'_>,
    req: RegisterProducerRequest,
) -> Result<RegisterProducerResponse, BrokerError> {
    let (producer_id, producer_epoch) = broker.register_producer(&req.name)?;
    Ok(RegisterProducerResponse {
        producer_id,
        producer_epoch,
    })
}

/// Queues a produce's batches at their partitions (see
/// [`Broker::submit_produce`]).
pub async fn submit_produce(
    broker: &Checked<'_>,
    req: ProduceRequest,
) -> Result<SubmittedProduce, BrokerError> {
    let partitions = req
        .partitions
        .into_iter()
        .map(|p| service::PartitionBatches {
            partition: p.partition,
            batches: p.batches,
        });
    let timeout = Duration::from_millis(u64::from(req.timeout_ms));
    broker
        .submit_produce(&req.topic, partitions.collect(), timeout)
        .await
}

/// Waits for a submitted produce's commits (if it was submitted) and
/// encodes the answer.
pub async fn finish_produce(
    submitted: Result<SubmittedProduce, BrokerError>,
) -> Result<Response, BrokerError> {
    Ok(produce_response(submitted?.finish().await).into())
}

fn produce_response(outcome: ProduceOutcome) -> ProduceResponse {
    let partitions = outcome.partitions.into_iter().map(|(partition, result)| {
        let (appended, error) = match result {
            Ok(appended) => (Some(appended), None),
            Err(e) => (None, Some(e)),
        };
        let (error_code, error_message) = entry_error(error);
        ProducePartitionResponse {
            partition,
            error_code,
            error_message,
            base_offset: appended.map_or(0, |a| a.base_offset),
            last_offset: appended.map_or(0, |a| a.last_offset),
            append_time_ms: appended.map_or(-1, |a| a.append_time_ms),
            log_start_offset: appended.map_or(0, |a| a.log_start_offset),
        }
    });
    ProduceResponse {
        topic: outcome.topic,
        partitions: partitions.collect(),
        // Set by the connection, which keeps the quota.
        throttle_ms: 0,
    }
}

async fn fetch(
    broker: &Checked<'_>,
    req: FetchRequest,
    read_budget: &Arc<Semaphore>,
) -> Result<(FetchResponse, Option<OwnedSemaphorePermit>), BrokerError> {
    // Records share the frame with every partition's entry: what is left
    // after those (and 1 KiB for the header and error messages) bounds them.
    let entries: usize = req
        .partitions
        .iter()
        .map(|p| FETCH_ENTRY_OVERHEAD + p.topic.len())
        .sum();
    let room = (broker.config.max_frame_bytes as usize).saturating_sub(1024 + entries);
    let reads = req.partitions.into_iter().map(|p| service::FetchRead {
        topic: p.topic,
        partition: p.partition,
        offset: p.offset,
        max_bytes: p.max_bytes,
    });
    let query = service::FetchQuery {
        partitions: reads.collect(),
        max_wait: Duration::from_millis(u64::from(req.max_wait_ms)),
        min_bytes: req.min_bytes,
        max_bytes: (req.max_bytes as usize).min(room),
    };
    let outcome = broker.fetch(&query, read_budget).await?;
    let partitions = outcome.partitions.into_iter().map(|p| {
        let (error_code, error_message) = entry_error(p.error);
        FetchPartitionResponse {
            topic: p.topic,
            partition: p.partition,
            error_code,
            error_message,
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records: p.records,
        }
    });
    let response = FetchResponse {
        partitions: partitions.collect(),
    };
    Ok((response, outcome.held))
}

fn list_offsets(
    broker: &Checked<'_>,
    req: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, BrokerError> {
    let queries = req.partitions.iter().map(|p| {
        let spec = match p.spec {
            OffsetSpec::Earliest => service::OffsetSpec::Earliest,
            OffsetSpec::Latest => service::OffsetSpec::Latest,
            OffsetSpec::ByTimestamp(ts) => service::OffsetSpec::ByTimestamp(ts),
        };
        (p.topic.as_str(), p.partition, spec)
    });
    let answers = broker.list_offsets(&queries.collect::<Vec<_>>())?;
    let partitions = req.partitions.into_iter().zip(answers).map(|(p, answer)| {
        let (found, error) = match answer {
            Ok(found) => (Some(found), None),
            Err(e) => (None, Some(e)),
        };
        let (error_code, error_message) = entry_error(error);
        ListOffsetsPartitionResponse {
            topic: p.topic,
            partition: p.partition,
            error_code,
            error_message,
            offset: found.map_or(0, |f| f.offset),
            timestamp_ms: found.and_then(|f| f.timestamp_ms),
        }
    });
    Ok(ListOffsetsResponse {
        partitions: partitions.collect(),
    })
}
