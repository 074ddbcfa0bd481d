//! The audit line of every administrative request: at `info`, with the
//! peer's address, the operation, the resource it acts on and the result,
//! so that an operator can tell who changed what. With users configured
//! the same operations are also recorded, with the user, in the audit
//! trail topic `__audit` (see `service/audit.rs`); this line is for
//! whoever reads the broker's log.
//!
//! Administrative requests are those that change what the broker holds or
//! how it delivers: topic create, alter and delete; group create, alter,
//! seek, pause, resume and delete; DLQ redrive. Reads (list, describe,
//! message state) and the data path (produce, fetch, receive, settle) are
//! not audited.
//!
//! ```text
//! INFO admin operation peer=127.0.0.1:53122 user="anonymous" operation="topic delete" resource="orders" result="ok"
//! INFO admin operation peer=127.0.0.1:53122 user="ops" operation="group seek" resource="orders/billing" detail="all partitions to offset 42" result="failed" error=...
//! ```

use pigeon_protocol::{Request, Response, RetentionChange, SeekTarget};

use crate::error::BrokerError;
use crate::service::Caller;

/// An administrative request, as its audit line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminOperation {
    /// `topic create`, `group seek`, `dlq redrive`, …
    pub operation: &'static str,
    /// `topic` or `topic/group`.
    pub resource: String,
    /// What it asks for, when that matters (a seek's target, a redrive's
    /// bound); empty otherwise.
    pub detail: String,
}

/// The audit description of `request`, if it is administrative.
pub fn operation(request: &Request) -> Option<AdminOperation> {
    let group = |topic: &str, group: &str| format!("{topic}/{group}");
    let (operation, resource, detail) = match request {
        Request::CreateTopic(r) => (
            "topic create",
            r.topic.clone(),
            format!("{} partitions", r.partitions),
        ),
        Request::DeleteTopic(r) => ("topic delete", r.topic.clone(), String::new()),
        Request::AlterTopic(r) => (
            "topic alter",
            r.topic.clone(),
            format!(
                "retention_ms {}, retention_bytes {}",
                change(r.retention_ms),
                change(r.retention_bytes)
            ),
        ),
        Request::CreateGroup(r) => ("group create", group(&r.topic, &r.group), String::new()),
        Request::DeleteGroup(r) => ("group delete", group(&r.topic, &r.group), String::new()),
        Request::AlterGroup(r) => ("group alter", group(&r.topic, &r.group), String::new()),
        Request::SeekGroup(r) => (
            "group seek",
            group(&r.topic, &r.group),
            seek_detail(r.partition, r.target),
        ),
        Request::PauseGroup(r) => {
            let operation = if r.paused {
                "group pause"
            } else {
                "group resume"
            };
            (operation, group(&r.topic, &r.group), String::new())
        }
        Request::Redrive(r) => (
            "dlq redrive",
            group(&r.topic, &r.group),
            format!("max {}, dry run {}", r.max, r.dry_run),
        ),
        _ => return None,
    };
    Some(AdminOperation {
        operation,
        resource,
        detail,
    })
}

fn change(change: RetentionChange) -> String {
    match change {
        RetentionChange::Keep => "unchanged".to_owned(),
        RetentionChange::Default => "to the broker default".to_owned(),
        RetentionChange::Set(0) => "to no limit".to_owned(),
        RetentionChange::Set(limit) => format!("to {limit}"),
    }
}

fn seek_detail(partition: Option<u32>, target: SeekTarget) -> String {
    let which = match partition {
        Some(p) => format!("partition {p}"),
        None => "all partitions".to_owned(),
    };
    let to = match target {
        SeekTarget::Offset(o) => format!("offset {o}"),
        SeekTarget::Timestamp(ms) => format!("time {ms} ms"),
        SeekTarget::Earliest => "the earliest offset".to_owned(),
        SeekTarget::Latest => "the latest offset".to_owned(),
    };
    format!("{which} to {to}")
}

/// Logs the audit line of `op`, done for `caller`, with its result.
pub fn log(caller: &Caller, op: &AdminOperation, result: &Result<Response, BrokerError>) {
    let (peer, user) = (caller.peer.to_string(), caller.name());
    let AdminOperation {
        operation,
        resource,
        detail,
    } = op;
    match result {
        Ok(_) => tracing::info!(
            peer,
            user,
            operation,
            resource = resource.as_str(),
            detail = detail.as_str(),
            result = "ok",
            "admin operation"
        ),
        Err(e) => tracing::info!(
            peer,
            user,
            operation,
            resource = resource.as_str(),
            detail = detail.as_str(),
            result = "failed",
            error = %e,
            "admin operation"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_protocol::{
        DeleteTopicRequest, ListTopicsRequest, PauseGroupRequest, SeekGroupRequest,
    };

    #[test]
    fn administrative_requests_are_named_and_reads_are_not() {
        let delete = Request::from(DeleteTopicRequest {
            topic: "orders".into(),
        });
        let op = operation(&delete).expect("audited");
        assert_eq!(
            (op.operation, op.resource.as_str()),
            ("topic delete", "orders")
        );
        let resume = Request::from(PauseGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            paused: false,
        });
        let op = operation(&resume).expect("audited");
        assert_eq!(
            (op.operation, op.resource.as_str()),
            ("group resume", "orders/billing")
        );
        let seek = Request::from(SeekGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            partition: Some(2),
            target: SeekTarget::Offset(42),
        });
        assert_eq!(
            operation(&seek).expect("audited").detail,
            "partition 2 to offset 42"
        );
        assert_eq!(operation(&Request::from(ListTopicsRequest)), None);
    }
}
