//! Pending entries: a group's open leases listed, acked by whoever holds
//! them, and moved between consumers. Protocol-neutral operations for
//! adapters whose consumers see leases the way Redis consumer groups see
//! their pending entries lists (`XPENDING`, `XACK`, `XCLAIM`).
//!
//! A moved lease is a new lease of its offset in the group's journal
//! (see `delivery/partition/claims.rs`), so attempt counts stay durable.

use std::collections::BTreeMap;

use super::{Broker, MemberOwner};
use crate::delivery::OffsetState;
use crate::delivery::engine::{PendingLease, Settle};
use crate::error::{BrokerError, ErrorKind};

impl Broker {
    /// Every open lease of `group` of `topic`, by partition and offset.
    pub(super) async fn pending(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Vec<PendingLease>, BrokerError> {
        let entry = self.groups.get(topic, group)?;
        entry
            .handle
            .pending()
            .await
            .map_err(|_| BrokerError::group_stopped())
    }

    /// Acks `items` (`(partition, offset)`) for whichever consumer holds
    /// each lease; how many were in flight and are now settled.
    pub(super) async fn ack_held(
        &self,
        topic: &str,
        group: &str,
        items: &[(u32, u64)],
    ) -> Result<u64, BrokerError> {
        let entry = self.groups.get(topic, group)?;
        let stopped = |_| BrokerError::group_stopped();
        let mut by_holder: BTreeMap<u32, Vec<(u32, u64, u32, Settle)>> = BTreeMap::new();
        for &(partition, offset) in items {
            let report = entry
                .handle
                .state_of(partition, offset)
                .await
                .map_err(stopped)?;
            if let Some(OffsetState::InFlight(lease)) = report.map(|r| r.state) {
                let item = (partition, offset, lease.attempt, Settle::Ack);
                by_holder.entry(lease.consumer).or_default().push(item);
            }
        }
        let mut acked = 0;
        for (holder, items) in by_holder {
            let results = entry.handle.settle_attempts(holder, items).await;
            let results =
                results.map_err(|e| BrokerError::new(ErrorKind::Storage, e.to_string()))?;
            acked += results.iter().filter(|r| r.is_ok()).count() as u64;
        }
        Ok(acked)
    }

    /// Gives the leases on `items` idle at least `min_idle_ms` to
    /// `consumer` (joined by `owner`); with `count_attempt` each is a new
    /// delivery. Per item, the lease it now holds, or `None`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claim(
        &self,
        topic: &str,
        group: &str,
        consumer: u32,
        owner: &MemberOwner,
        items: Vec<(u32, u64)>,
        min_idle_ms: i64,
        count_attempt: bool,
    ) -> Result<Vec<Option<PendingLease>>, BrokerError> {
        let entry = self.groups.get(topic, group)?;
        if !self.members.touch(topic, group, consumer, owner) {
            return Ok(items.iter().map(|_| None).collect());
        }
        let claimed = entry
            .handle
            .claim(consumer, items, min_idle_ms, count_attempt)
            .await;
        claimed.map_err(|_| BrokerError::group_stopped())
    }
}
