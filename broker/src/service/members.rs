//! Consumer members: who joined which group, on whose behalf, and until
//! when; and the consume operations that go through them (join, receive,
//! settle, leave).
//!
//! A member is a consumer joined to a group's engine, owned by a
//! [`MemberOwner`]:
//!
//! - [`MemberOwner::Connection`]: a connection of the binary protocol. Its
//!   members leave (their leases return at once) when the adapter calls
//!   [`Broker::leave_all`] as the connection closes. A consumer id is valid
//!   only for its owner: ids are numbered from 1 again when the broker
//!   restarts, so an id kept from an earlier connection may now name
//!   someone else. Receive for an id the owner did not join delivers
//!   nothing, and settle answers each item `LeaseLost`.
//! - [`MemberOwner::Named`]: a consumer known by name across connections
//!   (a Redis consumer, say). Joining again with the same name returns the
//!   same member, so its leases stay with it across reconnects. It leaves
//!   when it has been idle (no join, receive or settle) for longer than
//!   the expiry it joined with, swept by [`Broker::expire_idle_members`].
//!
//! ## Invariants
//!
//! - The table is bounded by the members joined and not left: every
//!   connection's members leave when it closes, every named member has an
//!   expiry or is removed by its adapter.
//! - A member's consumer id is unique within its group's engine, so
//!   `(topic, group, consumer id)` identifies it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Broker;
use crate::delivery::engine::{GroupDelivery, GroupError, GroupHandle, Settle};
use crate::delivery::{ConsumerId, GroupSettings, SettleError};
use crate::error::{BrokerError, ErrorKind};

/// Longest wait a receive may ask for.
const MAX_RECEIVE_WAIT: Duration = Duration::from_secs(30);

/// Most messages one receive hands out.
const MAX_RECEIVE_MESSAGES: usize = 10_000;

/// On whose behalf a consumer joined, which decides when it leaves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberOwner {
    /// A connection (by its id from [`Members::new_connection`]): its
    /// members leave when it closes.
    Connection(u64),
    /// A consumer name kept across connections: it leaves once idle
    /// longer than its expiry.
    Named(String),
}

/// What a consumer does with one delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleAction {
    /// Processed: settle it.
    Ack,
    /// Deliver again after this delay (`None`: the group's backoff).
    Nack(Option<Duration>),
    /// Poison: to the dead-letter topic at once, with this reason.
    Reject(String),
    /// Keep the lease this much longer (`None`: the group's ack timeout).
    Extend(Option<Duration>),
    /// Never processed: back to the group at once, not counted as an
    /// attempt.
    Release,
}

/// One item of a settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRequest {
    /// Source partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The delivery attempt this settles (0: whichever the lease is).
    pub attempt: u32,
    /// What to do.
    pub action: SettleAction,
}

/// One joined consumer.
#[derive(Debug)]
struct Member {
    handle: GroupHandle,
    owner: MemberOwner,
    last_seen: Instant,
    idle_expiry: Option<Duration>,
}

/// Every joined consumer of the broker, by `(topic, group, consumer id)`.
#[derive(Debug, Default)]
pub struct Members {
    joined: Mutex<HashMap<(String, String, ConsumerId), Member>>,
    connections: AtomicU64,
}

impl Members {
    /// A new connection's owner id.
    pub fn new_connection(&self) -> MemberOwner {
        MemberOwner::Connection(self.connections.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether `owner` holds `consumer` of `topic`/`group`; refreshes its
    /// idle clock if so.
    pub(super) fn touch(
        &self,
        topic: &str,
        group: &str,
        consumer: ConsumerId,
        owner: &MemberOwner,
    ) -> bool {
        let mut joined = self.joined.lock();
        let key = (topic.to_owned(), group.to_owned(), consumer);
        match joined.get_mut(&key) {
            Some(member) if &member.owner == owner => {
                member.last_seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Consumers joined to `topic`/`group`.
    pub fn count_in(&self, topic: &str, group: &str) -> usize {
        count_in(&self.joined.lock(), topic, group)
    }

    /// The consumer a named owner already has in `topic`/`group`.
    fn named(&self, topic: &str, group: &str, owner: &MemberOwner) -> Option<ConsumerId> {
        let mut joined = self.joined.lock();
        let found = joined
            .iter_mut()
            .find(|((t, g, _), m)| t == topic && g == group && &m.owner == owner);
        found.map(|((_, _, consumer), member)| {
            member.last_seen = Instant::now();
            *consumer
        })
    }

    /// Removes and returns `owner`'s member of `topic`/`group`.
    fn take_in(
        &self,
        topic: &str,
        group: &str,
        owner: &MemberOwner,
    ) -> Vec<(ConsumerId, GroupHandle)> {
        let mut joined = self.joined.lock();
        let taken = joined.extract_if(|(t, g, _), m| t == topic && g == group && &m.owner == owner);
        taken
            .map(|((_, _, consumer), m)| (consumer, m.handle))
            .collect()
    }

    /// Removes and returns the members `pick` selects.
    fn take(&self, pick: impl Fn(&Member) -> bool) -> Vec<(ConsumerId, GroupHandle)> {
        let mut joined = self.joined.lock();
        let taken = joined.extract_if(|_, m| pick(m));
        taken
            .map(|((_, _, consumer), m)| (consumer, m.handle))
            .collect()
    }

    /// The named members of `topic`/`group`: name, consumer id, and how
    /// long since they were last seen.
    pub fn named_in(&self, topic: &str, group: &str) -> Vec<(String, ConsumerId, Duration)> {
        let joined = self.joined.lock();
        let now = Instant::now();
        let named = joined
            .iter()
            .filter_map(|((t, g, consumer), m)| match &m.owner {
                MemberOwner::Named(name) if t == topic && g == group => {
                    Some((name.clone(), *consumer, now.duration_since(m.last_seen)))
                }
                _ => None,
            });
        let mut named: Vec<_> = named.collect();
        named.sort();
        named
    }

    /// How many members are joined.
    pub fn len(&self) -> usize {
        self.joined.lock().len()
    }

    /// Whether no member is joined.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Members of `topic`/`group` in `joined` (a scan: joins are rare next
/// to receives and settles, and the table is bounded by the caps).
fn count_in(
    joined: &HashMap<(String, String, ConsumerId), Member>,
    topic: &str,
    group: &str,
) -> usize {
    joined
        .keys()
        .filter(|(t, g, _)| t == topic && g == group)
        .count()
}

impl Broker {
    /// Joins a consumer called `name` to `group` of `topic` on behalf of
    /// `owner`; returns its id and the group's settings. A named owner
    /// that already has a member there gets it back (with its leases).
    /// `idle_expiry` applies to named owners only.
    pub(super) async fn join(
        &self,
        topic: &str,
        group: &str,
        name: &str,
        owner: MemberOwner,
        idle_expiry: Option<Duration>,
    ) -> Result<(ConsumerId, GroupSettings), BrokerError> {
        let entry = self.groups.get(topic, group)?;
        if matches!(owner, MemberOwner::Named(_))
            && let Some(consumer) = self.members.named(topic, group, &owner)
        {
            return Ok((consumer, entry.settings));
        }
        let max = self.config.caps.max_members_per_group;
        let full = || {
            let what = format!("consumer {name} cannot join group {group} of topic {topic}");
            let advice = "close idle consumers of the group or raise max_members_per_group";
            crate::caps::cap_reached(&what, "max_members_per_group", max, advice)
        };
        if self.members.count_in(topic, group) >= max as usize {
            return Err(full());
        }
        let joined = entry.handle.join(name.to_owned()).await;
        let consumer = joined.map_err(|_| BrokerError::group_stopped())?;
        let idle_expiry = idle_expiry.filter(|_| matches!(owner, MemberOwner::Named(_)));
        let member = Member {
            handle: entry.handle.clone(),
            owner,
            last_seen: Instant::now(),
            idle_expiry,
        };
        let key = (topic.to_owned(), group.to_owned(), consumer);
        {
            // Checked again with the table locked: joins racing past the
            // first check cannot pass the cap together.
            let mut joined = self.members.joined.lock();
            if count_in(&joined, topic, group) < max as usize {
                joined.insert(key, member);
                return Ok((consumer, entry.settings));
            }
        }
        entry.handle.leave(consumer).await;
        Err(full())
    }

    /// Up to `max` messages for `consumer`, of at most `max_bytes` in all
    /// (always at least one; as `delivery::engine::delivery_size` counts them), waiting up to `wait`
    /// (at most 30 s) for one. A consumer `owner` did not join gets none.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: u64,
        owner: &MemberOwner,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<GroupDelivery>, BrokerError> {
        let entry = self.groups.get(topic, group)?;
        let consumer = consumer_id(consumer)?;
        if !self.members.touch(topic, group, consumer, owner) {
            // Not the owner's: its membership ended (a client joins again
            // when it notices).
            return Ok(Vec::new());
        }
        let wait = wait.min(MAX_RECEIVE_WAIT);
        let max = max.clamp(1, MAX_RECEIVE_MESSAGES);
        tokio::select! {
            got = entry.handle.receive_within(consumer, max, max_bytes, wait) => {
                got.map_err(group_error)
            }
            _ = self.shutdown.cancelled() => Ok(Vec::new()),
        }
    }

    /// Settles `items` for `consumer`; one result per item, in order. Items
    /// of a consumer `owner` did not join are each `LeaseLost`.
    pub(super) async fn settle(
        &self,
        topic: &str,
        group: &str,
        consumer: u64,
        owner: &MemberOwner,
        items: Vec<SettleRequest>,
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        crate::caps::check_entries("settle items", items.len())?;
        let entry = self.groups.get(topic, group)?;
        let id = consumer_id(consumer)?;
        if !self.members.touch(topic, group, id, owner) {
            let lost = not_joined(topic, group, consumer, owner);
            return Ok(items.iter().map(|_| Err(lost.clone())).collect());
        }
        // A message settled twice in one request: the first item counts,
        // the others are answered here without reaching the engine.
        let repeated = crate::caps::repeats(items.iter().map(|i| (i.partition, i.offset)));
        let ack_timeout = entry.settings.ack_timeout;
        let items = items
            .into_iter()
            .zip(&repeated)
            .filter(|(_, r)| !**r)
            .map(|(i, _)| i)
            .map(|i| {
                let action = match i.action {
                    SettleAction::Ack => Settle::Ack,
                    SettleAction::Nack(delay) => Settle::Nack(delay),
                    SettleAction::Reject(reason) => Settle::Reject(reason),
                    SettleAction::Extend(by) => Settle::Extend(by.unwrap_or(ack_timeout)),
                    SettleAction::Release => Settle::Release,
                };
                (i.partition, i.offset, i.attempt, action)
            })
            .collect();
        let settled = entry.handle.settle_attempts(id, items).await;
        let outcomes = settled.map_err(group_error)?;
        let mut results = outcomes.into_iter().map(|outcome| {
            outcome.map_err(|e @ SettleError::LeaseLost { .. }| {
                BrokerError::new(ErrorKind::LeaseLost, e.to_string())
            })
        });
        let twice = BrokerError::new(
            ErrorKind::InvalidRequest,
            "this message is settled by an earlier item of the same request",
        );
        let answers = repeated.iter().map(|r| match r {
            true => Err(twice.clone()),
            false => results.next().unwrap_or_else(|| Err(twice.clone())),
        });
        Ok(answers.collect())
    }

    /// The member `owner` has in `topic`/`group` leaves it (its leases
    /// return at once); whether it had one.
    pub(super) async fn leave_group(&self, topic: &str, group: &str, owner: &MemberOwner) -> bool {
        let left = self.members.take_in(topic, group, owner);
        let any = !left.is_empty();
        for (consumer, handle) in left {
            handle.leave(consumer).await;
        }
        any
    }

    /// Every member of `owner` leaves its group: its leases return at once.
    pub async fn leave_all(&self, owner: &MemberOwner) {
        for (consumer, handle) in self.members.take(|m| &m.owner == owner) {
            handle.leave(consumer).await;
        }
    }

    /// Named members idle longer than their expiry leave their groups.
    pub async fn expire_idle_members(&self) {
        let now = Instant::now();
        let expired = self.members.take(|m| {
            m.idle_expiry
                .is_some_and(|expiry| now.duration_since(m.last_seen) > expiry)
        });
        for (consumer, handle) in expired {
            handle.leave(consumer).await;
        }
    }
}

impl Broker {
    /// Sweeps idle named members every `every` until the broker shuts down.
    pub async fn expire_idle_members_until_shutdown(&self, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.expire_idle_members().await,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}

/// A group's refusal of a receive or settle.
fn group_error(e: GroupError) -> BrokerError {
    match e {
        GroupError::Stopped => BrokerError::group_stopped(),
        GroupError::NotDurable(_) => BrokerError::new(ErrorKind::Storage, e.to_string()),
    }
}

/// A consumer id as given out by a group's engine.
fn consumer_id(id: u64) -> Result<ConsumerId, BrokerError> {
    ConsumerId::try_from(id).map_err(|_| {
        BrokerError::new(
            ErrorKind::InvalidRequest,
            format!("consumer id {id} was never given out by this broker; join the group again"),
        )
    })
}

/// The `LeaseLost` answer to a settle by someone who did not join.
fn not_joined(topic: &str, group: &str, consumer: u64, owner: &MemberOwner) -> BrokerError {
    let message = match owner {
        MemberOwner::Connection(_) => format!(
            "consumer {consumer} did not join {topic}/{group} on this connection; its leases ended with its connection"
        ),
        MemberOwner::Named(name) => format!(
            "consumer {consumer} is not {name}'s member of {topic}/{group} (it left or expired); join again"
        ),
    };
    BrokerError::new(ErrorKind::LeaseLost, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BrokerConfig, FileConfig};
    use crate::io::StdFs;
    use crate::log::SystemClock;
    use crate::topics::NewTopic;
    use std::sync::Arc;

    async fn broker_with_group(dir: &std::path::Path) -> Broker {
        let mut config = BrokerConfig::from_file_config(FileConfig::default()).expect("config");
        config.data_dir = dir.to_path_buf();
        let broker = Broker::open(config, Arc::new(StdFs), Arc::new(SystemClock))
            .await
            .expect("open");
        let topic = NewTopic {
            name: "t".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
        };
        broker.create_topic(topic).await.expect("topic");
        let settings = GroupSettings::default();
        broker
            .create_group("t", "g", settings)
            .await
            .expect("group");
        broker
    }

    /// Group journals are the broker's own logs: a small `max_batch_bytes`
    /// for topics must not make a group's journal refuse its own batches
    /// (it did: a Receive of 300 messages hands over 300 events at once,
    /// and the group then refused every Settle as not durable).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_max_batch_bytes_does_not_stop_group_journals() {
        use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::from_file_config(FileConfig::default()).expect("config");
        config.data_dir = dir.path().to_path_buf();
        config.log.max_batch_bytes = 1024;
        let quick = Duration::from_millis(1);
        let broker = Broker::open(config.clone(), Arc::new(StdFs), Arc::new(SystemClock))
            .await
            .expect("open");
        let topic = NewTopic {
            name: "t".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
        };
        broker.create_topic(topic).await.expect("topic");
        let partition = broker.topics.get("t").expect("t").partitions[0].clone();
        for i in 0..300u32 {
            let mut builder = BatchBuilder::new();
            builder.push(None, &i.to_le_bytes(), &[]);
            let batch =
                RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), 1024).expect("batch");
            partition.append(batch).await.expect("append");
        }
        broker
            .create_group("t", "g", GroupSettings::default())
            .await
            .expect("group");
        let owner = broker.members.new_connection();
        let (id, _) = broker
            .join("t", "g", "c", owner.clone(), None)
            .await
            .expect("join");
        let wait = Duration::from_secs(5);
        let got = broker
            .receive("t", "g", u64::from(id), &owner, 300, usize::MAX, wait)
            .await
            .expect("receive");
        assert_eq!(got.len(), 300);
        let items = got
            .iter()
            .map(|d| SettleRequest {
                partition: d.partition,
                offset: d.record.offset,
                attempt: d.attempt,
                action: SettleAction::Ack,
            })
            .collect();
        let settled = broker
            .settle("t", "g", u64::from(id), &owner, items)
            .await
            .expect("settle");
        assert!(
            settled.iter().all(Result::is_ok),
            "every ack is taken: {:?}",
            settled.iter().find(|r| r.is_err())
        );
        broker.close().await;
        drop(broker);
        // The acks are durable: after a restart nothing comes back.
        let broker = Broker::open(config, Arc::new(StdFs), Arc::new(SystemClock))
            .await
            .expect("reopen");
        let owner = broker.members.new_connection();
        let (id, _) = broker
            .join("t", "g", "c", owner.clone(), None)
            .await
            .expect("join");
        let again = broker
            .receive("t", "g", u64::from(id), &owner, 300, usize::MAX, quick)
            .await
            .expect("receive after the restart");
        assert!(again.is_empty(), "{} acked messages came back", again.len());
        broker.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_is_held_only_by_its_owner_and_leaves_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker_with_group(dir.path()).await;
        let (a, b) = (
            broker.members.new_connection(),
            broker.members.new_connection(),
        );
        assert_ne!(a, b);
        let (id, _) = broker
            .join("t", "g", "c", a.clone(), None)
            .await
            .expect("join");
        let quick = Duration::from_millis(1);
        let got = broker
            .receive("t", "g", u64::from(id), &b, 10, usize::MAX, quick)
            .await;
        assert!(
            got.expect("receive").is_empty(),
            "another owner receives nothing"
        );
        let item = SettleRequest {
            partition: 0,
            offset: 0,
            attempt: 0,
            action: SettleAction::Ack,
        };
        let settled = broker.settle("t", "g", u64::from(id), &b, vec![item]).await;
        let results = settled.expect("settle");
        assert_eq!(
            results[0].as_ref().map_err(|e| e.kind),
            Err(ErrorKind::LeaseLost)
        );
        broker.leave_all(&b).await;
        assert_eq!(
            broker.members.len(),
            1,
            "another owner's leave leaves nobody"
        );
        broker.leave_all(&a).await;
        assert!(broker.members.is_empty());
        broker.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_named_member_survives_its_connection_until_it_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker_with_group(dir.path()).await;
        let named = MemberOwner::Named("worker-1".into());
        let expiry = Some(Duration::from_millis(50));
        let (first, _) = broker
            .join("t", "g", "worker-1", named.clone(), expiry)
            .await
            .expect("join");
        let (again, _) = broker
            .join("t", "g", "worker-1", named.clone(), expiry)
            .await
            .expect("join");
        assert_eq!(first, again, "joining again by name keeps the member");
        let other = MemberOwner::Named("worker-2".into());
        let (second, _) = broker
            .join("t", "g", "worker-2", other, None)
            .await
            .expect("join");
        assert_ne!(first, second);
        broker.expire_idle_members().await;
        assert_eq!(broker.members.len(), 2, "not idle yet");
        let deadline = Instant::now() + Duration::from_secs(10);
        while broker.members.len() == 2 {
            assert!(Instant::now() < deadline, "the idle member never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
            broker.expire_idle_members().await;
        }
        // The one without an expiry (a named owner that gave none) stays.
        assert_eq!(broker.members.len(), 1);
        broker.close().await;
    }
}
