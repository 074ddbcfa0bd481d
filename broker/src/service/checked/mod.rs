//! Permissions: the one place the service layer decides whether a caller
//! may do an operation. Adapters reach the operations only through
//! [`Checked`] (`broker.checked(&caller)`): the unchecked operations are
//! visible inside `service` only, so an adapter cannot forget a check,
//! and every listener (the binary protocol, later Redis) gets the same
//! rules. Each method of [`Checked`] names its permission and resource
//! first, then calls the operation.
//!
//! ## What each operation needs
//!
//! | operation | permission | on |
//! | --- | --- | --- |
//! | create, delete a topic | `admin` | the topic |
//! | describe a topic | `read`, `produce` or `admin` | the topic (as in Kafka, any of these implies describing: a producer must learn the partition count) |
//! | list topics | as describe | each topic (the list shows only those) |
//! | fetch, list offsets | `read` | the topic |
//! | produce | `produce` | the topic; idempotent batches must carry one of the user's own producer ids |
//! | register a producer name | `produce` on some topic | names are the user's own (`<user>/<name>` in the registry) |
//! | create, delete, alter, seek, pause, resume a group; redrive its DLQ; message show | `admin` | the group of its topic |
//! | describe a group | `read` on the topic, or `consume` or `admin` on the group | |
//! | list groups | as describe a group | each group (the list shows only those) |
//! | alter a topic's retention | `admin` | the topic |
//! | describe the broker | `admin` | some topic |
//! | join, receive, settle | `consume` | the group of its topic |
//!
//! - Without users every caller may do everything ([`Identity::Anyone`]);
//!   an unauthenticated caller ([`Identity::Nobody`]) nothing.
//! - A dead-letter topic `<t>.<g>.dlq` of an existing group is covered by
//!   its source's rules: an operation on it is allowed if the rules allow
//!   it on the DLQ topic itself, or on group `g` of topic `t` (for a group
//!   operation on the DLQ topic, on that group of `t`). When groups of two
//!   topics share the name, every source must allow it.
//! - Names beginning with `__` are reserved for the broker: nobody creates,
//!   deletes or produces to such a topic, or creates such a group; they
//!   may be read under the rules (`__audit`).
//! - A refusal is `NotAuthorized` and names the user, the permission and
//!   the resource.
//! - With users, every refusal and every administrative operation (with
//!   its outcome) is recorded in the audit trail (`service/audit.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::audit::Outcome;
use super::auth::{Caller, Identity};
use super::{
    Broker, FetchOutcome, FetchQuery, GroupDescription, MemberOwner, MessageReport, OffsetFound,
    OffsetSpec, PartitionBatches, SeekTarget, SettleRequest, SubmittedProduce, TopicDescription,
    TopicSummary,
};
use crate::config::BrokerConfig;
use crate::delivery::engine::GroupDelivery;
use crate::delivery::{ConsumerId, GroupSettings};
use crate::error::{BrokerError, ErrorKind};
use crate::groups::dlq::dlq_topic;
use crate::groups::redrive::{RedriveOptions, RedriveReport};
use crate::security::rules::{Op, Resource};
use crate::topics::NewTopic;

mod admin;
mod streams;

/// The prefix of names reserved for the broker.
pub const RESERVED_PREFIX: &str = "__";

/// Byte offset of `producer_id` (i64, little-endian) in a record batch
/// (see `docs/storage.md`, "Record batch").
const PRODUCER_ID_AT: usize = 39;

/// The operations, as `caller` may do them.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    broker: &'a Broker,
    caller: &'a Caller,
    /// The broker's settings (adapters size their answers by them).
    pub config: &'a BrokerConfig,
}

impl Broker {
    /// The operations as `caller` may do them.
    pub fn checked<'a>(&'a self, caller: &'a Caller) -> Checked<'a> {
        Checked {
            broker: self,
            caller,
            config: &self.config,
        }
    }
}

/// `NotAuthorized`, naming the user, the permission and the resource.
fn refusal(user: &str, op: Op, resource: Resource<'_>) -> BrokerError {
    let verb = match op {
        Op::Produce => "produce to",
        Op::Read => "read",
        Op::Consume => "consume from",
        Op::Admin => "administer",
    };
    BrokerError::new(
        ErrorKind::NotAuthorized,
        format!(
            "user {user} may not {verb} {resource}: no rule of the users file gives it {op} there"
        ),
    )
}

fn reserved(what: &str, name: &str) -> BrokerError {
    BrokerError::new(
        ErrorKind::InvalidRequest,
        format!(
            "{what} {name}: names beginning with {RESERVED_PREFIX} are reserved for the broker; choose another name"
        ),
    )
}

fn refuse_reserved_topic(name: &str, action: &str) -> Result<(), BrokerError> {
    if name.starts_with(RESERVED_PREFIX) {
        return Err(reserved(&format!("cannot {action} topic"), name));
    }
    Ok(())
}

impl Checked<'_> {
    /// Whether the caller may do `op` on `resource` (no error, no record).
    pub fn may(&self, op: Op, resource: Resource<'_>) -> bool {
        match &self.caller.identity {
            Identity::Anyone => true,
            Identity::Nobody => false,
            Identity::User(user) => {
                user.rules.allows(op, resource) || self.allowed_through_source(user, op, resource)
            }
        }
    }

    /// A dead-letter topic's source rules (see the module documentation).
    fn allowed_through_source(
        &self,
        user: &crate::security::users::User,
        op: Op,
        resource: Resource<'_>,
    ) -> bool {
        if !resource.topic.ends_with(".dlq") {
            return false;
        }
        let sources: Vec<(String, String)> = self
            .broker
            .groups
            .list()
            .into_iter()
            .filter(|(topic, group, _)| dlq_topic(topic, group) == resource.topic)
            .map(|(topic, group, _)| (topic, group))
            .collect();
        !sources.is_empty()
            && sources.iter().all(|(topic, group)| {
                let group = resource.group.unwrap_or(group);
                user.rules.allows(op, Resource::group(topic, group))
            })
    }

    /// `Ok` if the caller may do `op` on `resource` (for `action`), else
    /// the refusal, recorded in the audit trail.
    fn allow(&self, action: &str, op: Op, resource: Resource<'_>) -> Result<(), BrokerError> {
        if self.may(op, resource) {
            return Ok(());
        }
        if !self.caller.is_authenticated() {
            return Err(self.unauthenticated());
        }
        let refused = refusal(self.caller.name(), op, resource);
        tracing::info!(peer = %self.caller.peer, user = self.caller.name(), action, %resource, "refused");
        let audited = audit_resource(resource);
        self.broker.audit(
            self.caller,
            action,
            &audited,
            Outcome::Refused,
            Some(&refused.message),
        );
        Err(refused)
    }

    /// An administrative operation: `admin` on `resource`, then `run`, its
    /// outcome recorded in the audit trail.
    async fn admin<T>(
        &self,
        action: &str,
        resource: Resource<'_>,
        run: impl std::future::Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        self.allow(action, Op::Admin, resource)?;
        let result = run.await;
        self.broker
            .audit_result(self.caller, action, &audit_resource(resource), &result);
        result
    }

    /// Creates a topic (`admin`).
    pub async fn create_topic(&self, new: NewTopic) -> Result<(), BrokerError> {
        let name = new.name.clone();
        let created = async {
            refuse_reserved_topic(&new.name, "create")?;
            self.broker.create_topic(new).await
        };
        self.admin("topic create", Resource::topic(&name), created)
            .await
    }

    /// Deletes a topic (`admin`).
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let deleted = async {
            refuse_reserved_topic(name, "delete")?;
            self.broker.delete_topic(name).await
        };
        self.admin("topic delete", Resource::topic(name), deleted)
            .await
    }

    /// `AuthenticationRequired`: the caller has not authenticated.
    fn unauthenticated(&self) -> BrokerError {
        BrokerError::new(
            ErrorKind::AuthenticationRequired,
            "authenticate first: this broker has users",
        )
    }

    /// Whether the caller may describe `topic`: any of `read`, `produce`
    /// and `admin` on it.
    fn may_describe(&self, topic: &str) -> bool {
        let on = Resource::topic(topic);
        [Op::Read, Op::Produce, Op::Admin]
            .into_iter()
            .any(|op| self.may(op, on))
    }

    /// The topics the caller may describe.
    pub fn list_topics(&self) -> Vec<TopicSummary> {
        let mut topics = self.broker.list_topics();
        topics.retain(|t| self.may_describe(&t.name));
        topics
    }

    /// Describes a topic (`read`, `produce` or `admin`).
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        if !self.may_describe(name) {
            self.allow("topic describe", Op::Read, Resource::topic(name))?;
        }
        self.broker.describe_topic(name)
    }

    /// Registers a producer name (`produce` on some topic): with users, the
    /// name is the user's own (`<user>/<name>`), so no other user can
    /// fence it.
    pub fn register_producer(&self, name: &str) -> Result<(i64, i16), BrokerError> {
        match &self.caller.identity {
            Identity::Anyone => self.broker.register_producer(name),
            Identity::Nobody => Err(self.unauthenticated()),
            Identity::User(user) if user.rules.allows_anywhere(Op::Produce) => self
                .broker
                .register_producer(&format!("{}/{name}", user.name)),
            Identity::User(user) => {
                let refused = BrokerError::new(
                    ErrorKind::NotAuthorized,
                    format!(
                        "user {} may not register producer {name}: it may produce to no topic",
                        user.name
                    ),
                );
                let resource = format!("producer:{name}");
                let reason = Some(refused.message.as_str());
                self.broker.audit(
                    self.caller,
                    "producer register",
                    &resource,
                    Outcome::Refused,
                    reason,
                );
                Err(refused)
            }
        }
    }

    /// Queues a produce (`produce` on the topic; the user's own producer
    /// ids only).
    pub async fn submit_produce(
        &self,
        topic: &str,
        partitions: Vec<PartitionBatches>,
        timeout: Duration,
    ) -> Result<SubmittedProduce, BrokerError> {
        refuse_reserved_topic(topic, "produce to")?;
        self.allow("produce", Op::Produce, Resource::topic(topic))?;
        self.check_producer_ids(&partitions)?;
        self.broker.submit_produce(topic, partitions, timeout).await
    }

    /// With users, every idempotent batch must carry a producer id the
    /// caller registered (another user's would let it disturb that
    /// producer's sequences).
    fn check_producer_ids(&self, partitions: &[PartitionBatches]) -> Result<(), BrokerError> {
        let Identity::User(user) = &self.caller.identity else {
            return Ok(());
        };
        let prefix = format!("{}/", user.name);
        for batch in partitions.iter().flat_map(|p| &p.batches) {
            let Some(id) = producer_id(batch) else {
                continue;
            };
            let owned = self
                .broker
                .producers
                .name_of(id)
                .is_some_and(|name| name.starts_with(&prefix));
            if !owned {
                let refused = BrokerError::new(
                    ErrorKind::NotAuthorized,
                    format!(
                        "user {} may not write batches of producer id {id}: it is not one of its registered producers",
                        user.name
                    ),
                );
                let resource = format!("producer:{id}");
                let reason = Some(refused.message.as_str());
                self.broker
                    .audit(self.caller, "produce", &resource, Outcome::Refused, reason);
                return Err(refused);
            }
        }
        Ok(())
    }

    /// Fetches (`read` on every topic named; a refusal refuses the whole
    /// request).
    pub async fn fetch(
        &self,
        query: &FetchQuery,
        read_budget: &Arc<Semaphore>,
    ) -> Result<FetchOutcome, BrokerError> {
        for read in &query.partitions {
            self.allow("fetch", Op::Read, Resource::topic(&read.topic))?;
        }
        self.broker.fetch(query, read_budget).await
    }

    /// Looks up offsets, one answer per query, in order (`read` on each
    /// topic): at most `caps::MAX_REQUEST_ENTRIES` queries; a query
    /// repeated is answered once and its copies get an error.
    pub fn list_offsets(
        &self,
        queries: &[(&str, u32, OffsetSpec)],
    ) -> Result<Vec<Result<OffsetFound, BrokerError>>, BrokerError> {
        crate::caps::check_entries("partitions", queries.len())?;
        let repeated = crate::caps::repeats(queries.iter().map(|(t, p, _)| (*t, *p)));
        let answers = queries
            .iter()
            .zip(repeated)
            .map(|((topic, partition, spec), r)| {
                if r {
                    return Err(BrokerError::new(
                        ErrorKind::InvalidRequest,
                        "this partition is named by an earlier entry of the same request",
                    ));
                }
                self.list_offset(topic, *partition, *spec)
            });
        Ok(answers.collect())
    }

    /// Looks up an offset (`read`).
    pub fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<OffsetFound, BrokerError> {
        self.allow("list offsets", Op::Read, Resource::topic(topic))?;
        self.broker.list_offset(topic, partition, spec)
    }

    /// Creates a group (`admin` on it).
    pub async fn create_group(
        &self,
        topic: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<(), BrokerError> {
        let created = async {
            if group.starts_with(RESERVED_PREFIX) {
                return Err(reserved("cannot create group", group));
            }
            self.broker.create_group(topic, group, settings).await
        };
        self.admin("group create", Resource::group(topic, group), created)
            .await
    }

    /// Deletes a group (`admin` on it).
    pub async fn delete_group(&self, topic: &str, group: &str) -> Result<(), BrokerError> {
        let deleted = self.broker.delete_group(topic, group);
        self.admin("group delete", Resource::group(topic, group), deleted)
            .await
    }

    /// Changes a group's settings (`admin` on it).
    pub async fn alter_group(
        &self,
        topic: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<(), BrokerError> {
        let altered = self.broker.alter_group(topic, group, settings);
        self.admin("group alter", Resource::group(topic, group), altered)
            .await
    }

    /// Describes a group (`read` on the topic, or `consume` or `admin` on
    /// the group).
    pub async fn describe_group(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<GroupDescription, BrokerError> {
        self.allow_describe_group(topic, group)?;
        self.broker.describe_group(topic, group).await
    }

    /// `Ok` if the caller may describe the group, else the refusal.
    fn allow_describe_group(&self, topic: &str, group: &str) -> Result<(), BrokerError> {
        if self.may_describe_group(topic, group) {
            return Ok(());
        }
        self.allow("group describe", Op::Read, Resource::topic(topic))
    }

    /// Whether the caller may describe a group: `read` on its topic, or
    /// `consume` or `admin` on the group.
    fn may_describe_group(&self, topic: &str, group: &str) -> bool {
        let on_group = Resource::group(topic, group);
        self.may(Op::Consume, on_group)
            || self.may(Op::Admin, on_group)
            || self.may(Op::Read, Resource::topic(topic))
    }

    /// Pauses or resumes a group (`admin` on it).
    pub async fn pause_group(
        &self,
        topic: &str,
        group: &str,
        paused: bool,
    ) -> Result<(), BrokerError> {
        let action = if paused {
            "group pause"
        } else {
            "group resume"
        };
        let done = self.broker.pause_group(topic, group, paused);
        self.admin(action, Resource::group(topic, group), done)
            .await
    }

    /// Moves a group (`admin` on it).
    pub async fn seek_group(
        &self,
        topic: &str,
        group: &str,
        partition: Option<u32>,
        target: SeekTarget,
    ) -> Result<Vec<(u32, u64)>, BrokerError> {
        let moved = self.broker.seek_group(topic, group, partition, target);
        self.admin("group seek", Resource::group(topic, group), moved)
            .await
    }

    /// Redrives a group's dead letters (`admin` on it).
    pub async fn redrive(
        &self,
        topic: &str,
        group: &str,
        options: RedriveOptions,
    ) -> Result<RedriveReport, BrokerError> {
        let moved = self.broker.redrive(topic, group, options);
        self.admin("dlq redrive", Resource::group(topic, group), moved)
            .await
    }

    /// One message's state in a group (`admin` on it).
    pub async fn message_state(
        &self,
        topic: &str,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<MessageReport, BrokerError> {
        let report = self.broker.message_state(topic, group, partition, offset);
        self.admin("message show", Resource::group(topic, group), report)
            .await
    }

    /// Joins a consumer (`consume` on the group).
    pub async fn join(
        &self,
        topic: &str,
        group: &str,
        name: &str,
        owner: MemberOwner,
        idle_expiry: Option<Duration>,
    ) -> Result<(ConsumerId, GroupSettings), BrokerError> {
        self.allow("join", Op::Consume, Resource::group(topic, group))?;
        self.broker
            .join(topic, group, name, owner, idle_expiry)
            .await
    }

    /// Receives deliveries (`consume` on the group).
    #[allow(clippy::too_many_arguments)]
    pub async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: u64,
        owner: &MemberOwner,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<GroupDelivery>, BrokerError> {
        self.allow("receive", Op::Consume, Resource::group(topic, group))?;
        self.broker
            .receive(topic, group, consumer, owner, max, max_bytes, wait)
            .await
    }

    /// Settles deliveries (`consume` on the group).
    pub async fn settle(
        &self,
        topic: &str,
        group: &str,
        consumer: u64,
        owner: &MemberOwner,
        items: Vec<SettleRequest>,
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        self.allow("settle", Op::Consume, Resource::group(topic, group))?;
        self.broker
            .settle(topic, group, consumer, owner, items)
            .await
    }
}

/// A resource as the audit trail names it: `topic:<name>` or
/// `group:<topic>/<group>`.
fn audit_resource(resource: Resource<'_>) -> String {
    match resource.group {
        None => format!("topic:{}", resource.topic),
        Some(group) => format!("group:{}/{group}", resource.topic),
    }
}

/// The producer id a raw record batch carries, if it is idempotent (≥ 0).
/// A batch too short to hold one is left to the produce's validation.
fn producer_id(batch: &[u8]) -> Option<i64> {
    let bytes = batch.get(PRODUCER_ID_AT..PRODUCER_ID_AT + 8)?;
    let id = i64::from_le_bytes(bytes.try_into().ok()?);
    (id >= 0).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_protocol::batch::{BatchBuilder, ProducerStamp};

    #[test]
    fn the_producer_id_is_read_where_the_batch_format_puts_it() {
        let mut builder = BatchBuilder::new();
        builder.push(None, b"v", &[]);
        let stamp = ProducerStamp {
            producer_id: 4242,
            producer_epoch: 3,
            base_sequence: 9,
        };
        assert_eq!(producer_id(&builder.build(stamp, 0)), Some(4242));
        let mut builder = BatchBuilder::new();
        builder.push(None, b"v", &[]);
        assert_eq!(producer_id(&builder.build(ProducerStamp::NONE, 0)), None);
        assert_eq!(producer_id(b"short"), None);
    }
}
