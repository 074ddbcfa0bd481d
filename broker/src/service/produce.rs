//! Producing: registering an idempotent producer's name, and appending
//! record batches to partitions.
//!
//! A produce is two steps so that an adapter can keep a connection's
//! order: [`Broker::submit_produce`] validates the batches and queues them
//! at their partitions' writers, in order, waiting only for room in the
//! writers' queues; [`SubmittedProduce::finish`] waits for the commits
//! (each partition's `fsync` under `fsync=always`) and says, per
//! partition, where the batches landed or why they did not. An adapter
//! that submits each produce before it reads the next request gets a
//! producer's pipelined batches appended in the order sent while their
//! commits overlap.
//!
//! A produce names each partition once (a partition named twice is
//! refused as a whole: its batches' order between the entries would be a
//! guess) and at most `caps::MAX_REQUEST_ENTRIES` partitions.
//!
//! Both steps are bounded by the request's timeout. A partition that does
//! not answer in time is reported `TimedOut`: its batches may still be
//! appended (an idempotent producer's retry then gets the original
//! offsets back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pigeon_protocol::batch::RecordBatch;

use super::Broker;
use super::topics::partition_of;
use crate::error::{BrokerError, ErrorKind};
use crate::log::{AppendInfo, LogError, Submitted};
use crate::metrics;
use crate::registry::RegisterError;
use crate::topics::Topic;

/// The answer to a partition named without a batch (refused before the
/// log; a commit with no result falls back to it).
const NO_BATCH: &str = "the produce request carries no record batch for this partition";

/// The bound of a produce that asks for none.
const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Batches for one partition, as the producer sent them.
#[derive(Debug, Clone)]
pub struct PartitionBatches {
    /// The partition.
    pub partition: u32,
    /// Encoded record batches, appended in this order.
    pub batches: Vec<Bytes>,
}

/// Where a partition's batches landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// The broker's append time of the last batch, ms since the epoch.
    pub append_time_ms: i64,
    /// The partition's log start offset after the append.
    pub log_start_offset: u64,
}

/// The outcome of a produce, per partition in the request's order.
#[derive(Debug)]
pub struct ProduceOutcome {
    /// The topic.
    pub topic: String,
    /// Each partition's result.
    pub partitions: Vec<(u32, Result<Appended, BrokerError>)>,
}

/// A produce whose batches are queued at their partitions' writers (or
/// refused), waiting for their commits.
#[derive(Debug)]
pub struct SubmittedProduce {
    topic: Arc<Topic>,
    started: Instant,
    deadline: tokio::time::Instant,
    timeout: Duration,
    partitions: Vec<SubmittedPartition>,
}

#[derive(Debug)]
enum SubmittedPartition {
    /// Refused before reaching the log, or not queued in time.
    Answered(u32, Result<Appended, BrokerError>),
    /// Queued at the partition's writer (which counts what it appends,
    /// for the metrics).
    Queued {
        partition: u32,
        submitted: Submitted,
    },
}

impl Broker {
    /// Registers (or re-registers) an idempotent producer's name: its id
    /// and a new epoch, which fences every older session of the name.
    pub(super) fn register_producer(&self, name: &str) -> Result<(i64, i16), BrokerError> {
        let registered = tokio::task::block_in_place(|| self.producers.register(name));
        let (id, epoch) = registered.map_err(|e| {
            let kind = match e {
                RegisterError::InvalidName(_) | RegisterError::Full(_) => ErrorKind::InvalidRequest,
                RegisterError::Storage(_) => ErrorKind::Storage,
            };
            BrokerError::new(kind, e.to_string())
        })?;
        tracing::debug!(
            name,
            producer_id = id,
            producer_epoch = epoch,
            "producer registered"
        );
        Ok((id, epoch))
    }

    /// Validates a produce and queues its batches at their partitions'
    /// writers, in order; waits only for room in the writers' queues, up
    /// to `timeout` (zero: the default of 30 s). Fails as a whole only for
    /// an unknown topic; a partition's own failure is in its result.
    pub(super) async fn submit_produce(
        &self,
        topic: &str,
        partitions: Vec<PartitionBatches>,
        timeout: Duration,
    ) -> Result<SubmittedProduce, BrokerError> {
        let started = Instant::now();
        let topic = self.topic(topic)?;
        crate::caps::check_entries("partitions", partitions.len())?;
        let repeated = crate::caps::repeats(partitions.iter().map(|p| p.partition));
        if let Some((part, _)) = partitions.iter().zip(repeated).find(|(_, r)| *r) {
            return Err(BrokerError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "partition {} of topic {} is named twice in one produce; put all its batches in one entry, in order",
                    part.partition, topic.metadata.name
                ),
            ));
        }
        let timeout = if timeout.is_zero() {
            DEFAULT_PRODUCE_TIMEOUT
        } else {
            timeout
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut submitted = Vec::with_capacity(partitions.len());
        for part in partitions {
            let partition = part.partition;
            let queued = tokio::time::timeout_at(deadline, self.submit_partition(&topic, part));
            let answered = queued.await.unwrap_or_else(|_| {
                SubmittedPartition::Answered(partition, Err(timed_out(timeout)))
            });
            submitted.push(answered);
        }
        Ok(SubmittedProduce {
            topic,
            started,
            deadline,
            timeout,
            partitions: submitted,
        })
    }

    /// Validates one partition's batches and queues them at its writer.
    async fn submit_partition(&self, topic: &Topic, part: PartitionBatches) -> SubmittedPartition {
        let partition = part.partition;
        let refused = |e: BrokerError| SubmittedPartition::Answered(partition, Err(e));
        let log = match partition_of(topic, partition) {
            Ok(log) => log,
            Err(e) => return refused(e),
        };
        if part.batches.is_empty() {
            return refused(BrokerError::new(ErrorKind::InvalidRequest, NO_BATCH));
        }
        let max = self.config.log.max_batch_bytes as usize;
        let mut batches = Vec::with_capacity(part.batches.len());
        for (i, raw) in part.batches.into_iter().enumerate() {
            match RecordBatch::validate(raw, max) {
                Ok(batch) => batches.push(batch),
                Err(e) => {
                    let message = format!("record batch {i} was refused: {e}");
                    return refused(BrokerError::new(ErrorKind::from(&e), message));
                }
            }
        }
        SubmittedPartition::Queued {
            partition,
            submitted: log.submit_all(batches).await,
        }
    }
}

impl SubmittedProduce {
    /// Waits for every queued batch to commit (up to the produce's
    /// timeout) and says where each partition's batches landed.
    pub async fn finish(self) -> ProduceOutcome {
        let mut partitions = Vec::with_capacity(self.partitions.len());
        for part in self.partitions {
            partitions.push(match part {
                SubmittedPartition::Answered(partition, result) => (partition, result),
                SubmittedPartition::Queued {
                    partition,
                    submitted,
                } => {
                    let committed = tokio::time::timeout_at(self.deadline, submitted.wait()).await;
                    let result = match committed {
                        Ok(results) => committed_range(results),
                        Err(_) => Err(timed_out(self.timeout)),
                    };
                    (partition, result)
                }
            });
        }
        metrics::produce_latency(self.started.elapsed());
        ProduceOutcome {
            topic: self.topic.metadata.name.clone(),
            partitions,
        }
    }
}

/// A partition's committed batches: the first and last offsets, or the
/// first error.
fn committed_range(results: Vec<Result<AppendInfo, LogError>>) -> Result<Appended, BrokerError> {
    let mut first: Option<AppendInfo> = None;
    let mut last: Option<AppendInfo> = None;
    for result in results {
        let info = result?;
        first.get_or_insert(info);
        last = Some(info);
    }
    match (first, last) {
        (Some(first), Some(last)) => Ok(Appended {
            base_offset: first.base_offset,
            last_offset: last.last_offset,
            append_time_ms: last.timestamp,
            log_start_offset: last.log_start_offset,
        }),
        _ => Err(BrokerError::new(ErrorKind::InvalidRequest, NO_BATCH)),
    }
}

fn timed_out(timeout: Duration) -> BrokerError {
    BrokerError::new(
        ErrorKind::TimedOut,
        format!(
            "the append was not durable within the request's timeout of {} ms; it may still be appended, so a retry can duplicate it unless the producer is idempotent",
            timeout.as_millis()
        ),
    )
}
