//! The broker-wide administration calls of [`Admin`]: alter a topic's
//! retention, list consumer groups with their lag, describe the broker.
//!
//! Like the rest of [`Admin`], a broker error comes back as
//! [`ClientError::Broker`] with the broker's code, and nothing is retried.

use super::admin::Admin;
use super::connection::expect_response;
use super::error::ClientError;
use crate::protocol::{
    AlterTopicRequest, AlterTopicResponse, DescribeBrokerRequest, DescribeBrokerResponse,
    GroupListing, ListGroupsRequest, RetentionChange,
};

impl Admin {
    /// Changes a topic's retention by age (`retention_ms`) and by size per
    /// partition (`retention_bytes`): [`RetentionChange::Keep`] leaves one
    /// as it is, [`RetentionChange::Default`] returns to the broker's
    /// default, [`RetentionChange::Set`] sets a limit (0: none). The change
    /// takes effect at once (segments past it are deleted before the
    /// answer) and survives restarts. Fails with `UnknownTopic`, or
    /// `InvalidConfig` when both are `Keep`.
    ///
    /// ```no_run
    /// use pigeon_client::protocol::RetentionChange;
    /// # async fn demo(admin: pigeon_client::client::Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// let day = RetentionChange::Set(24 * 3600 * 1000);
    /// let now = admin.alter_topic("orders", day, RetentionChange::Keep).await?;
    /// println!("{} old segments deleted", now.segments_deleted);
    /// # Ok(()) }
    /// ```
    pub async fn alter_topic(
        &self,
        topic: &str,
        retention_ms: RetentionChange,
        retention_bytes: RetentionChange,
    ) -> Result<AlterTopicResponse, ClientError> {
        let request = AlterTopicRequest {
            topic: topic.to_string(),
            retention_ms,
            retention_bytes,
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, AlterTopic)
    }

    /// The consumer groups of `topic` (of every topic with `None`), by
    /// topic then group, each with its lag, in-flight, delayed and
    /// dead-lettered messages summed over the topic's partitions. Fails
    /// with `UnknownTopic` for a topic that does not exist.
    ///
    /// ```no_run
    /// # async fn demo(admin: pigeon_client::client::Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// for g in admin.list_groups(Some("orders")).await? {
    ///     println!("{}: lag {}", g.group, g.lag);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_groups(&self, topic: Option<&str>) -> Result<Vec<GroupListing>, ClientError> {
        let request = ListGroupsRequest {
            topic: topic.map(str::to_owned),
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, ListGroups).map(|r| r.groups)
    }

    /// The broker's version, uptime, data directory and its size, topic
    /// and group counts, and every setting in effect (secrets hidden).
    ///
    /// ```no_run
    /// # async fn demo(admin: pigeon_client::client::Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// let broker = admin.describe_broker().await?;
    /// println!("{} up {} s", broker.version, broker.uptime_ms / 1000);
    /// # Ok(()) }
    /// ```
    pub async fn describe_broker(&self) -> Result<DescribeBrokerResponse, ClientError> {
        let response = self.client.request(DescribeBrokerRequest.into()).await?;
        expect_response!(response, DescribeBroker)
    }
}
