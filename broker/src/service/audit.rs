//! The audit trail: with users, every administrative operation (whatever
//! its outcome), every failed authentication and every permission refusal
//! is appended to the internal topic `__audit` as one JSON record.
//!
//! ## Record
//!
//! The record's value (no key, no headers) is one JSON object:
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `time` | string | RFC 3339, UTC, milliseconds: when the broker recorded it |
//! | `user` | string | the user; `(unauthenticated)` for a failed authentication |
//! | `peer` | string | the client's address, `ip:port` |
//! | `op` | string | `topic create`, `topic delete`, `group create`, `group delete`, `group alter`, `group seek`, `group pause`, `group resume`, `dlq redrive`, `message show`; `authenticate`; for a refusal, the operation refused (`produce`, `fetch`, `consume`, …) |
//! | `resource` | string | `topic:<name>`, `group:<topic>/<group>`, `user:<name>` (authentication), `producer:<name>` |
//! | `result` | string | `ok`, `refused` (permission) or `failed` (the operation or the authentication failed) |
//! | `reason` | string | for `refused` and `failed` only: the error's sentence (never a password) |
//!
//! ## Writing, and its crash story
//!
//! Recording never blocks or fails an operation: a record is queued (at
//! most [`QUEUE`]; beyond, it is dropped, counted in
//! `pigeon_audit_dropped_total` and logged) and one writer task appends
//! what is queued as one record batch to partition 0 of `__audit`, under
//! the broker's fsync policy. A record is durable once that append
//! returns; one still queued when the broker crashes is lost (the
//! operation itself may have completed: the trail can miss the last
//! operations before a crash, never show one that did not happen). An
//! append that fails (disk full, a read-only partition) is logged and its
//! records counted as dropped. At a clean shutdown the queue is drained
//! before the partition logs close.
//!
//! `__audit` is created at the first start with users: one partition,
//! retention [`RETENTION_MS`] (30 days) and [`RETENTION_BYTES`] (1 GiB),
//! so the trail stays bounded. Its name is reserved: no client creates,
//! deletes or produces to it; whoever the rules let read it reads it
//! (`pigeon read __audit`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Broker;
use super::auth::Caller;
use crate::error::BrokerError;
use crate::security::metrics as security_metrics;
use crate::topics::{NewTopic, Topic};

/// The audit topic.
pub const AUDIT_TOPIC: &str = "__audit";
/// Records waiting for the writer at most.
pub const QUEUE: usize = 4096;
/// Retention of `__audit` by age: 30 days.
pub const RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;
/// Retention of `__audit` by size: 1 GiB.
pub const RETENTION_BYTES: u64 = 1 << 30;
/// Records appended in one batch at most.
const BATCH_RECORDS: usize = 512;

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused by the rules.
    Refused,
    /// Failed (the operation, or an authentication).
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// The audit trail's queue and writer.
#[derive(Debug, Default)]
pub struct AuditLog {
    queue: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Queues one record; never waits.
    fn push(&self, record: Vec<u8>) {
        let queued = match &*self.queue.lock() {
            Some(queue) => queue.try_send(record).is_ok(),
            None => false,
        };
        if !queued {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            security_metrics::audit_dropped(1);
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "audit records dropped: the audit queue is full or closed"
                );
            }
        }
    }
}

/// One record, its fields in the order the documentation lists them.
#[derive(serde::Serialize)]
struct Record<'a> {
    time: String,
    user: &'a str,
    peer: String,
    op: &'a str,
    resource: &'a str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// One record's JSON bytes.
pub fn record(
    time_ms: i64,
    caller: &Caller,
    op: &str,
    resource: &str,
    outcome: Outcome,
    reason: Option<&str>,
) -> Vec<u8> {
    let time = jiff::Timestamp::from_millisecond(time_ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default();
    let record = Record {
        time,
        user: caller.name(),
        peer: caller.peer.to_string(),
        op,
        resource,
        result: outcome.as_str(),
        reason,
    };
    serde_json::to_vec(&record).unwrap_or_default()
}

impl Broker {
    /// Starts the audit trail (with users only): creates `__audit` if it is
    /// missing and starts its writer. Called once, before serving.
    pub async fn start_audit(&self) -> Result<(), BrokerError> {
        if !self.requires_authentication() {
            return Ok(());
        }
        let topic = match self.topics.get(AUDIT_TOPIC) {
            Some(topic) => topic,
            None => {
                let new = NewTopic {
                    name: AUDIT_TOPIC.into(),
                    partitions: 1,
                    retention_ms: Some(RETENTION_MS),
                    retention_bytes: Some(RETENTION_BYTES),
                };
                self.topics.create(new).await?
            }
        };
        let (queue, records) = mpsc::channel(QUEUE);
        let dropped = self.audit.dropped.clone();
        let max_batch = self.config.log.max_batch_bytes as usize;
        let writer = tokio::spawn(write_records(topic, records, dropped, max_batch));
        *self.audit.queue.lock() = Some(queue);
        *self.audit.writer.lock() = Some(writer);
        Ok(())
    }

    /// Records one event of `caller` (a no-op without the audit trail).
    pub fn audit(
        &self,
        caller: &Caller,
        op: &str,
        resource: &str,
        outcome: Outcome,
        reason: Option<&str>,
    ) {
        if !self.requires_authentication() {
            return;
        }
        let now = crate::log::Clock::now_ms(&crate::log::SystemClock);
        self.audit
            .push(record(now, caller, op, resource, outcome, reason));
    }

    /// Records the outcome of an administrative operation.
    pub fn audit_result<T>(
        &self,
        caller: &Caller,
        op: &str,
        resource: &str,
        result: &Result<T, BrokerError>,
    ) {
        match result {
            Ok(_) => self.audit(caller, op, resource, Outcome::Ok, None),
            Err(e) => self.audit(caller, op, resource, Outcome::Failed, Some(&e.message)),
        }
    }

    /// Drains the queue and stops the writer (at shutdown, before the
    /// partition logs close).
    pub async fn close_audit(&self) {
        drop(self.audit.queue.lock().take());
        let writer = self.audit.writer.lock().take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

/// Appends queued records, as many as are waiting in one batch, until the
/// queue closes.
async fn write_records(
    topic: Arc<Topic>,
    mut records: mpsc::Receiver<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    max_batch: usize,
) {
    let Some(log) = topic.partitions.first().cloned() else {
        return;
    };
    while let Some(first) = records.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH_RECORDS
            && let Ok(next) = records.try_recv()
        {
            batch.push(next);
        }
        let count = batch.len() as u64;
        let mut builder = BatchBuilder::new();
        for value in &batch {
            builder.push(None, value, &[]);
        }
        let appended = match RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), max_batch)
        {
            Ok(valid) => log.append(valid).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match appended {
            Ok(_) => security_metrics::audit_written(count),
            Err(e) => {
                dropped.fetch_add(count, Ordering::Relaxed);
                security_metrics::audit_dropped(count);
                tracing::error!(error = %e, records = count, "cannot append to the audit trail; these records are lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Identity;

    #[test]
    fn a_record_has_exactly_the_contract_fields_and_a_reason_when_not_ok() {
        let caller = Caller {
            peer: "192.0.2.7:5000".parse().expect("addr"),
            tls: true,
            identity: Identity::Nobody,
        };
        let ok = record(
            1_700_000_000_123,
            &caller,
            "topic create",
            "topic:orders",
            Outcome::Ok,
            None,
        );
        assert_eq!(
            String::from_utf8(ok).expect("utf-8"),
            r#"{"time":"2023-11-14T22:13:20.123Z","user":"(unauthenticated)","peer":"192.0.2.7:5000","op":"topic create","resource":"topic:orders","result":"ok"}"#
        );
        let refused = record(
            0,
            &caller,
            "produce",
            "topic:t",
            Outcome::Refused,
            Some("no rule"),
        );
        let value: serde_json::Value = serde_json::from_slice(&refused).expect("json");
        assert_eq!(value["result"], "refused");
        assert_eq!(value["reason"], "no rule");
        assert_eq!(value["time"], "1970-01-01T00:00:00.000Z");
    }
}
