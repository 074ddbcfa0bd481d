//! The gatherer of one producer's Produce requests ([`Gatherer`]): the
//! batches its partition senders send are put together, per topic, into
//! multi-partition Produce requests.
//!
//! A producer spread over many partitions has, per partition, a batch of
//! a record or two at a time; one request per batch would cost the broker
//! (and this client) a request's whole work per record. The partition
//! senders hand their batches to one task per producer instead. It keeps
//! at most [`MAX_REQUESTS_IN_FLIGHT`] of its requests unanswered; when
//! one is answered, it takes every batch queued meanwhile (it never waits
//! for more) and sends them as few requests as the rules below allow, one
//! after another on the connection. An idle producer's batch goes at
//! once; a busy one's batches queue while its requests are out and then
//! go together: the busier the producer, the larger the requests. The
//! bound is four times [`MAX_IN_FLIGHT_BATCHES`], so one partition's
//! pipelined batches never wait for it, nor do a few busy partitions'
//! large batches.
//!
//! ## Rules of a gathered request
//!
//! - One topic per request (the protocol's shape); a partition at most
//!   once (the broker refuses a partition named twice); at most
//!   [`MAX_ENTRIES`] partitions; and batch bytes plus
//!   [`ENTRY_OVERHEAD`] per partition at most the producer's
//!   `max_batch_bytes`, unless the request is a single batch: a gathered
//!   request is never larger than the largest single-batch request.
//! - Order: a partition's batches reach the gatherer in the order its
//!   sender made them; each goes into a later request of its topic than
//!   the partition's batch before it, and a topic's requests are sent in
//!   the order they were made (one gathering after another), so the
//!   broker appends a partition's batches in order, as it did with one
//!   request per batch.
//! - Every batch gets exactly one [`Reply`]: a request of one batch hands
//!   its [`PendingRequest`] over (its answer reaches the sender with no
//!   extra task in between), with its place among the requests in flight,
//!   which is freed when the sender has read the answer (a sender reads
//!   its oldest batch's answer first, and the gatherer sends a
//!   partition's batches in order, so the place of a sender's oldest
//!   batch never waits on anything but its answer); a request of several
//!   is answered by a task that frees its place and splits the response,
//!   each batch getting its own partition's result. A whole-request error (the connection failed, the broker
//!   refused the request) is every batch's error. The response's
//!   `throttle_ms` is given to the first batch only, so the producer's
//!   throttle statistics count one throttled response per response.
//! - Each batch has a deadline for its answer, set when it is handed over
//!   (the request timeout from then, or its delivery deadline if nearer):
//!   time spent waiting in the gatherer counts. A batch whose deadline
//!   passed before its request went is not sent (it fails as never
//!   queued, so the sender may retry it); a request waits for its
//!   connection and its answer until the nearest deadline of its
//!   batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::config::MAX_IN_FLIGHT_BATCHES;
use crate::client::connection::{Client, PendingRequest};
use crate::client::error::ClientError;
use crate::protocol::{ProducePartition, ProduceRequest, ProduceResponse, Response};

/// Most partitions in one gathered request (the broker allows 10,000).
pub(super) const MAX_ENTRIES: usize = 1_000;

/// Most gathered requests of one producer unanswered at once.
pub(crate) const MAX_REQUESTS_IN_FLIGHT: usize = 4 * MAX_IN_FLIGHT_BATCHES;

/// Bytes a partition entry adds to a request besides its batch: its
/// partition id, batch count and batch length (12), rounded up.
pub(super) const ENTRY_OVERHEAD: usize = 16;

/// How the gatherer answers one batch.
pub(super) enum Reply {
    /// The batch went alone: its request, to await, and its place among
    /// the requests in flight, to hold until then.
    Alone(PendingRequest, OwnedSemaphorePermit),
    /// The batch's outcome: its partition's part of a gathered response,
    /// or the error of its whole request.
    Answered(Answer),
}

/// The outcome of one batch's request.
#[derive(Debug)]
pub(super) struct Answer {
    /// The response (holding this batch's partition), or the error.
    pub(super) result: Result<Response, ClientError>,
    /// Whether the request was queued on a connection (else the broker
    /// never saw it).
    pub(super) queued: bool,
}

/// One batch handed to the gatherer.
pub(super) struct Part {
    /// Its topic.
    pub(super) topic: Arc<str>,
    /// Its partition.
    pub(super) partition: u32,
    /// The encoded batch.
    pub(super) bytes: Bytes,
    /// The wait it was given for a connection and the answer, from when
    /// it was handed over (for the error that reports it).
    pub(super) timeout: Duration,
    /// When that wait ends.
    pub(super) deadline: Instant,
    /// Where its reply goes.
    pub(super) reply: oneshot::Sender<Reply>,
}

/// The queue of a producer's gatherer task.
#[derive(Debug)]
pub(super) struct Gatherer {
    parts: mpsc::UnboundedSender<Part>,
}

impl Gatherer {
    /// Starts the gatherer of a producer on `client` (on the current
    /// tokio runtime); it exits once the returned handle is dropped and
    /// every batch handed to it is sent.
    pub(super) fn start(client: Client, request_timeout: Duration, max_bytes: usize) -> Gatherer {
        let (parts, queue) = mpsc::unbounded_channel();
        let broker_timeout_ms = u32::try_from(request_timeout.as_millis()).unwrap_or(u32::MAX);
        tokio::spawn(run(client, broker_timeout_ms, max_bytes, queue));
        Gatherer { parts }
    }

    /// Hands a batch over; its reply comes on `part.reply`.
    pub(super) fn send(&self, part: Part) {
        if let Err(mpsc::error::SendError(part)) = self.parts.send(part) {
            // The task is gone (only if it panicked): the batch was never
            // sent.
            let _ = part.reply.send(Reply::Answered(Answer {
                result: Err(ClientError::Closed),
                queued: false,
            }));
        }
    }
}

/// The batches of one request being gathered, all of one topic, each
/// of a different partition.
struct Gathered {
    topic: Arc<str>,
    parts: Vec<Part>,
    bytes: usize,
}

impl Gathered {
    fn new(topic: Arc<str>) -> Gathered {
        Gathered {
            topic,
            parts: Vec::new(),
            bytes: 0,
        }
    }

    /// Whether `part` fits in this request (a first batch always does).
    fn admits(&self, part: &Part, max_bytes: usize) -> bool {
        self.parts.is_empty()
            || (self.parts.len() < MAX_ENTRIES
                && self.bytes + part.bytes.len() + ENTRY_OVERHEAD <= max_bytes)
    }

    fn push(&mut self, part: Part) {
        self.bytes += part.bytes.len() + ENTRY_OVERHEAD;
        self.parts.push(part);
    }
}

/// The requests being gathered for one topic, in the order they must be
/// sent: a partition's batches go into requests further and further
/// along, so they reach the broker in the order they came.
struct TopicRequests {
    topic: Arc<str>,
    requests: Vec<Gathered>,
    /// Per partition, the first request its next batch may join (one
    /// after the request holding its last batch).
    next: HashMap<u32, usize>,
}

impl TopicRequests {
    fn add(&mut self, part: Part, max_bytes: usize) {
        let from = self.next.get(&part.partition).copied().unwrap_or(0);
        let at = (from..self.requests.len())
            .find(|&i| self.requests[i].admits(&part, max_bytes))
            .unwrap_or(self.requests.len());
        if at == self.requests.len() {
            self.requests.push(Gathered::new(self.topic.clone()));
        }
        self.next.insert(part.partition, at + 1);
        self.requests[at].push(part);
    }
}

/// The gatherer's loop: gathers what is queued into requests and sends
/// them in order, until every handle is dropped.
async fn run(
    client: Client,
    broker_timeout_ms: u32,
    max_bytes: usize,
    mut queue: mpsc::UnboundedReceiver<Part>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        // Room for one more request; what queues meanwhile goes with it.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut permit = Some(permit);
        for request in gather(first, &mut queue, max_bytes) {
            let permit = match permit.take() {
                Some(permit) => permit,
                None => match in_flight.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            send(&client, broker_timeout_ms, request, permit).await;
        }
    }
}

/// `first` and every batch already queued behind it (up to
/// [`MAX_ENTRIES`] times 16 batches in one go), as requests in an order
/// that keeps each partition's batches in the order they came.
fn gather(
    first: Part,
    queue: &mut mpsc::UnboundedReceiver<Part>,
    max_bytes: usize,
) -> Vec<Gathered> {
    let mut topics: Vec<TopicRequests> = Vec::new();
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(part) = next.take() {
        taken += 1;
        let at = match topics.iter().position(|t| t.topic == part.topic) {
            Some(at) => at,
            None => {
                topics.push(TopicRequests {
                    topic: part.topic.clone(),
                    requests: Vec::new(),
                    next: HashMap::new(),
                });
                topics.len() - 1
            }
        };
        topics[at].add(part, max_bytes);
        if taken < MAX_ENTRIES * 16 {
            next = queue.try_recv().ok();
        }
    }
    topics.into_iter().flat_map(|t| t.requests).collect()
}

/// Sends one gathered request and sees that each of its batches gets its
/// reply.
async fn send(
    client: &Client,
    broker_timeout_ms: u32,
    request: Gathered,
    permit: OwnedSemaphorePermit,
) {
    let Gathered { topic, parts, .. } = request;
    let now = Instant::now();
    let (parts, expired): (Vec<Part>, Vec<Part>) =
        parts.into_iter().partition(|p| p.deadline > now);
    for part in expired {
        let result = Err(ClientError::Timeout {
            after: part.timeout,
        });
        let _ = part.reply.send(Reply::Answered(Answer {
            result,
            queued: false,
        }));
    }
    let Some(deadline) = parts.iter().map(|p| p.deadline).min() else {
        return;
    };
    let timeout = deadline.saturating_duration_since(now);
    let produce = ProduceRequest {
        timeout_ms: broker_timeout_ms,
        topic: topic.to_string(),
        partitions: parts
            .iter()
            .map(|p| ProducePartition {
                partition: p.partition,
                batches: vec![p.bytes.clone()],
            })
            .collect(),
    };
    let pending = match client.send_request(produce.into(), timeout).await {
        Ok(pending) => pending,
        Err(err) => {
            for part in parts {
                let result = Err(err.clone());
                let _ = part.reply.send(Reply::Answered(Answer {
                    result,
                    queued: false,
                }));
            }
            return;
        }
    };
    let mut parts = parts;
    if parts.len() == 1
        && let Some(part) = parts.pop()
    {
        let _ = part.reply.send(Reply::Alone(pending, permit));
        return;
    }
    tokio::spawn(async move {
        let answer = pending.answer().await;
        drop(permit);
        split(answer, parts);
    });
}

/// Gives each batch of a gathered request its partition's result.
fn split(result: Result<Response, ClientError>, parts: Vec<Part>) {
    let answered = |part: Part, result| {
        let _ = part.reply.send(Reply::Answered(Answer {
            result,
            queued: true,
        }));
    };
    match result {
        Ok(Response::Produce(response)) => {
            let ProduceResponse {
                topic,
                partitions,
                throttle_ms,
            } = response;
            let mut results: HashMap<u32, _> =
                partitions.into_iter().map(|p| (p.partition, p)).collect();
            for (i, part) in parts.into_iter().enumerate() {
                let own = ProduceResponse {
                    topic: topic.clone(),
                    // A partition the broker left out stays out: the
                    // sender reports the answer as incomplete.
                    partitions: results.remove(&part.partition).into_iter().collect(),
                    throttle_ms: if i == 0 { throttle_ms } else { 0 },
                };
                answered(part, Ok(own.into()));
            }
        }
        other => {
            for part in parts {
                answered(part, other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use crate::batch::{BatchBuilder, ProducerStamp};
    use crate::client::tests::fake_broker::FakeBroker;
    use crate::client::tests::{eventually, fast_client_config};
    use crate::protocol::ErrorCode;

    const MAX_BYTES: usize = 1 << 20;

    /// A one-record batch of `value`, and where its reply comes.
    fn part(topic: &str, partition: u32, value: &str) -> (Part, oneshot::Receiver<Reply>) {
        let mut builder = BatchBuilder::new();
        builder.push(None, value.as_bytes(), &[]);
        let (reply, replied) = oneshot::channel();
        let part = Part {
            topic: topic.into(),
            partition,
            bytes: builder.build(ProducerStamp::NONE, 0),
            timeout: Duration::from_secs(5),
            deadline: Instant::now() + Duration::from_secs(5),
            reply,
        };
        (part, replied)
    }

    /// Each request's (topic, partitions), in sending order.
    fn shapes(requests: &[Gathered]) -> Vec<(String, Vec<u32>)> {
        requests
            .iter()
            .map(|g| {
                let partitions = g.parts.iter().map(|p| p.partition).collect();
                (g.topic.to_string(), partitions)
            })
            .collect()
    }

    #[tokio::test]
    async fn gathering_splits_by_topic_and_moves_a_partitions_next_batch_to_a_later_request() {
        let (queue, mut queued) = mpsc::unbounded_channel();
        let mut replies = Vec::new();
        for (topic, partition) in [("t", 0), ("u", 0), ("t", 1), ("t", 0), ("t", 0), ("t", 2)] {
            let (part, replied) = part(topic, partition, "v");
            queue.send(part).unwrap();
            replies.push(replied);
        }
        let first = queued.recv().await.unwrap();
        let requests = gather(first, &mut queued, MAX_BYTES);
        assert_eq!(
            shapes(&requests),
            [
                ("t".to_string(), vec![0, 1, 2]),
                ("t".to_string(), vec![0]),
                ("t".to_string(), vec![0]),
                ("u".to_string(), vec![0]),
            ]
        );
    }

    #[tokio::test]
    async fn a_gathered_request_stays_within_the_byte_and_entry_bounds() {
        let (queue, mut queued) = mpsc::unbounded_channel();
        let mut replies = Vec::new();
        let (probe, _) = part("t", 0, "v");
        let each = probe.bytes.len() + ENTRY_OVERHEAD;
        // Ten batches' worth of bytes allowed; 25 partitions queued.
        for partition in 0..25 {
            let (part, replied) = part("t", partition, "v");
            queue.send(part).unwrap();
            replies.push(replied);
        }
        let first = queued.recv().await.unwrap();
        let requests = gather(first, &mut queued, 10 * each);
        let sizes: Vec<usize> = requests.iter().map(|g| g.parts.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        // One batch larger than the bound still goes, alone.
        let (big, _reply) = part("t", 0, &"x".repeat(100));
        let requests = gather(big, &mut queued, each);
        assert_eq!(requests.len(), 1);

        for partition in 0..(MAX_ENTRIES as u32 + 1) {
            let (part, replied) = part("t", partition, "v");
            queue.send(part).unwrap();
            replies.push(replied);
        }
        let first = queued.recv().await.unwrap();
        let requests = gather(first, &mut queued, usize::MAX);
        let sizes: Vec<usize> = requests.iter().map(|g| g.parts.len()).collect();
        assert_eq!(sizes, [MAX_ENTRIES, 1]);
    }

    /// Each part gets its own partition's result; the throttle goes to the
    /// first only; a partition missing from the answer gets none; a
    /// whole-request error reaches every part.
    #[test]
    fn a_gathered_answer_is_split_per_partition() {
        let result = |partition, base| crate::protocol::ProducePartitionResponse {
            partition,
            error_code: ErrorCode::None,
            error_message: String::new(),
            base_offset: base,
            last_offset: base,
            append_time_ms: 1,
            log_start_offset: 0,
        };
        let (parts, mut replies): (Vec<_>, Vec<_>) =
            [0, 1, 2].into_iter().map(|p| part("t", p, "v")).unzip();
        let response = ProduceResponse {
            topic: "t".into(),
            // Out of order, and without partition 2.
            partitions: vec![result(1, 10), result(0, 20)],
            throttle_ms: 7,
        };
        split(Ok(response.into()), parts);
        let mut seen = BTreeMap::new();
        for (partition, replied) in replies.iter_mut().enumerate() {
            let Ok(Reply::Answered(answer)) = replied.try_recv() else {
                panic!("no answer for partition {partition}");
            };
            assert!(answer.queued);
            let Ok(Response::Produce(own)) = answer.result else {
                panic!("not a produce response");
            };
            let bases: Vec<u64> = own.partitions.iter().map(|p| p.base_offset).collect();
            assert!(
                own.partitions
                    .iter()
                    .all(|p| p.partition == partition as u32)
            );
            seen.insert(partition, (bases, own.throttle_ms));
        }
        assert_eq!(seen[&0], (vec![20], 7));
        assert_eq!(seen[&1], (vec![10], 0));
        assert_eq!(seen[&2], (vec![], 0));

        let (parts, replies): (Vec<_>, Vec<_>) =
            [0, 1].into_iter().map(|p| part("t", p, "v")).unzip();
        split(Err(ClientError::Closed), parts);
        for mut replied in replies {
            let Ok(Reply::Answered(answer)) = replied.try_recv() else {
                panic!("no answer");
            };
            assert!(matches!(answer.result, Err(ClientError::Closed)));
        }
    }

    /// A gatherer on a fake broker (topics `t` and `u`, 100 partitions
    /// each) that holds every produce, with its window full: twenty
    /// batches of `t`/0 sent as twenty requests, unanswered. Returns their
    /// replies, in order.
    async fn full_window() -> (FakeBroker, Gatherer, Vec<oneshot::Receiver<Reply>>) {
        let broker = FakeBroker::start().await;
        broker.create_topic("t", 100);
        broker.create_topic("u", 100);
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        let gatherer = Gatherer::start(client, Duration::from_secs(5), MAX_BYTES);
        broker.stall_produce(true);
        let mut early = Vec::new();
        for i in 0..MAX_REQUESTS_IN_FLIGHT {
            let (part, replied) = part("t", 0, &format!("early-{i}"));
            gatherer.send(part);
            early.push(replied);
        }
        eventually("the window is full", || {
            broker.produce_requests() == MAX_REQUESTS_IN_FLIGHT
        })
        .await;
        (broker, gatherer, early)
    }

    /// A batch whose deadline passes while it waits in the gatherer is
    /// answered as timed out and never queued, and not sent.
    #[tokio::test]
    async fn a_batch_past_its_deadline_in_the_queue_is_not_sent() {
        let (broker, gatherer, early) = full_window().await;
        let (mut late, replied) = part("t", 0, "late");
        late.timeout = Duration::from_millis(10);
        late.deadline = Instant::now() + late.timeout;
        let deadline = late.deadline;
        gatherer.send(late);
        while Instant::now() <= deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The early batches' senders read their answers (releasing their
        // places in flight), as partition senders do.
        let early = tokio::spawn(async move {
            for replied in early {
                match replied.await.unwrap() {
                    Reply::Alone(pending, _in_flight) => assert!(pending.answer().await.is_ok()),
                    Reply::Answered(answer) => panic!("{answer:?}"),
                }
            }
        });
        broker.stall_produce(false);
        let Reply::Answered(answer) = replied.await.unwrap() else {
            panic!("the late batch was sent");
        };
        assert!(!answer.queued);
        assert!(
            matches!(answer.result, Err(ClientError::Timeout { .. })),
            "{:?}",
            answer.result
        );
        early.await.unwrap();
        assert_eq!(broker.produce_batches(), MAX_REQUESTS_IN_FLIGHT);
    }

    /// While its requests in flight are at their bound, what the senders
    /// hand over waits, and then goes as one request per topic and
    /// batch level, not one per batch; every batch gets its partition's
    /// offsets, in the order handed over.
    #[tokio::test]
    async fn batches_queued_behind_a_full_window_go_together() {
        let (broker, gatherer, early) = full_window().await;
        let mut replies: Vec<_> = early.into_iter().map(|r| (("t", 0), r)).collect();
        for round in 0..2 {
            for partition in 0..100 {
                for topic in ["t", "u"] {
                    let (part, replied) = part(topic, partition, &format!("{round}"));
                    gatherer.send(part);
                    replies.push(((topic, partition), replied));
                }
            }
        }
        broker.stall_produce(false);
        let mut offsets: BTreeMap<(&str, u32), Vec<u64>> = BTreeMap::new();
        for (key, replied) in replies {
            let answer = match replied.await.unwrap() {
                Reply::Alone(pending, _in_flight) => pending.answer().await,
                Reply::Answered(answer) => answer.result,
            };
            let Ok(Response::Produce(response)) = answer else {
                panic!("{key:?}: {answer:?}");
            };
            let [result] = response.partitions.as_slice() else {
                panic!("{key:?}: {response:?}");
            };
            assert_eq!(
                (result.partition, result.error_code),
                (key.1, ErrorCode::None)
            );
            offsets.entry(key).or_default().push(result.base_offset);
        }
        assert_eq!(
            broker.produce_requests(),
            MAX_REQUESTS_IN_FLIGHT + 4,
            "two topics, two batches per partition"
        );
        assert_eq!(offsets[&("t", 0)], (0..22).collect::<Vec<u64>>());
        assert_eq!(offsets[&("u", 7)], [0, 1]);
        assert!(offsets.values().all(|o| o.windows(2).all(|w| w[0] < w[1])));
    }
}
