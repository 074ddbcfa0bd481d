//! [`Admin`]: topic administration and offset lookups.
//!
//! This module owns the typed wrappers around the administrative APIs
//! (CreateTopic, DeleteTopic, ListTopics, DescribeTopic) and ListOffsets.
//! Invariants: a broker error, top-level or per partition, always comes
//! back as [`ClientError::Broker`] carrying the broker's code; nothing here
//! retries (administrative calls are not idempotent in general: a retried
//! create may report `TopicAlreadyExists` for the topic it created).

use super::connection::{Client, expect_response};
use super::error::ClientError;
use crate::protocol::{
    AlterGroupRequest, CreateGroupRequest, CreateTopicRequest, DeleteGroupRequest,
    DeleteTopicRequest, DescribeGroupRequest, DescribeGroupResponse, DescribeTopicRequest,
    DescribeTopicResponse, ErrorCode, GroupSettings, ListOffsetsPartition,
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListTopicsRequest, MessageStateRequest,
    MessageStateResponse, OffsetSpec, PauseGroupRequest, RedriveRequest, RedriveResponse,
    SeekGroupPartition, SeekGroupRequest, SeekTarget, TopicListing,
};

/// A topic to create.
///
/// ```
/// use pigeon_client::client::NewTopic;
/// let topic = NewTopic::new("orders", 3).retention_ms(7 * 24 * 3600 * 1000);
/// assert_eq!(topic.partitions, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// The name (`[A-Za-z0-9._-]`, 1 to 200 characters).
    pub name: String,
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Time-based retention; `None` keeps the broker default.
    pub retention_ms: Option<u64>,
    /// Size-based retention per partition; `None` keeps the broker default.
    pub retention_bytes: Option<u64>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and the broker's default retention.
    ///
    /// ```
    /// # use pigeon_client::client::NewTopic;
    /// assert_eq!(NewTopic::new("t", 1).retention_ms, None);
    /// ```
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            retention_ms: None,
            retention_bytes: None,
        }
    }

    /// Sets time-based retention.
    ///
    /// ```
    /// # use pigeon_client::client::NewTopic;
    /// assert_eq!(NewTopic::new("t", 1).retention_ms(5).retention_ms, Some(5));
    /// ```
    pub fn retention_ms(mut self, ms: u64) -> Self {
        self.retention_ms = Some(ms);
        self
    }

    /// Sets size-based retention (bytes per partition).
    ///
    /// ```
    /// # use pigeon_client::client::NewTopic;
    /// assert_eq!(NewTopic::new("t", 1).retention_bytes(9).retention_bytes, Some(9));
    /// ```
    pub fn retention_bytes(mut self, bytes: u64) -> Self {
        self.retention_bytes = Some(bytes);
        self
    }
}

/// Topic administration on one broker.
///
/// ```no_run
/// use pigeon_client::client::{Client, NewTopic};
/// # async fn demo() -> Result<(), pigeon_client::client::ClientError> {
/// let admin = Client::connect("127.0.0.1:7420").await?.admin();
/// admin.create_topic(NewTopic::new("orders", 3)).await?;
/// for topic in admin.list_topics().await? {
///     println!("{} ({} partitions)", topic.topic, topic.partitions);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    pub(super) client: Client,
}

impl Client {
    /// Topic administration through this client.
    ///
    /// ```
    /// # use pigeon_client::client::{Client, ClientConfig};
    /// let admin = Client::lazy("127.0.0.1:7420", ClientConfig::default()).admin();
    /// ```
    pub fn admin(&self) -> Admin {
        Admin::new(self.clone())
    }
}

impl Admin {
    /// Administration through `client`.
    ///
    /// ```
    /// # use pigeon_client::client::{Admin, Client, ClientConfig};
    /// let admin = Admin::new(Client::lazy("127.0.0.1:7420", ClientConfig::default()));
    /// ```
    pub fn new(client: Client) -> Self {
        Admin { client }
    }

    /// Creates a topic. Fails with `TopicAlreadyExists`,
    /// `InvalidTopicName` or `InvalidConfig` broker errors.
    ///
    /// ```no_run
    /// # use pigeon_client::client::{Admin, NewTopic};
    /// # async fn demo(admin: Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// admin.create_topic(NewTopic::new("orders", 3)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_topic(&self, topic: NewTopic) -> Result<(), ClientError> {
        let request = CreateTopicRequest {
            topic: topic.name,
            partitions: topic.partitions,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, CreateTopic).map(|_| ())
    }

    /// Deletes a topic and all its data.
    ///
    /// ```no_run
    /// # async fn demo(admin: pigeon_client::client::Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// admin.delete_topic("orders").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        let request = DeleteTopicRequest {
            topic: topic.to_string(),
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, DeleteTopic).map(|_| ())
    }

    /// Every topic and its partition count.
    ///
    /// ```no_run
    /// # async fn demo(admin: pigeon_client::client::Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// let topics = admin.list_topics().await?;
    /// # Ok(()) }
    /// ```
    pub async fn list_topics(&self) -> Result<Vec<TopicListing>, ClientError> {
        let response = self.client.request(ListTopicsRequest.into()).await?;
        expect_response!(response, ListTopics).map(|list| list.topics)
    }

    /// One topic's retention and the state of each partition.
    ///
    /// ```no_run
    /// # async fn demo(admin: pigeon_client::client::Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// let topic = admin.describe_topic("orders").await?;
    /// let end: u64 = topic.partitions.iter().map(|p| p.log_end_offset).sum();
    /// # Ok(()) }
    /// ```
    pub async fn describe_topic(&self, topic: &str) -> Result<DescribeTopicResponse, ClientError> {
        describe_topic(&self.client, topic).await
    }

    /// Looks up an offset of one partition: the earliest, the latest (the
    /// offset the next record will get), or the first at or after a time.
    ///
    /// ```no_run
    /// use pigeon_client::protocol::OffsetSpec;
    /// # async fn demo(admin: pigeon_client::client::Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// let end = admin.list_offset("orders", 0, OffsetSpec::Latest).await?.offset;
    /// # Ok(()) }
    /// ```
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<ListOffsetsPartitionResponse, ClientError> {
        list_offset(&self.client, topic, partition, spec).await
    }
}

pub(crate) async fn describe_topic(
    client: &Client,
    topic: &str,
) -> Result<DescribeTopicResponse, ClientError> {
    let request = DescribeTopicRequest {
        topic: topic.to_string(),
    };
    let response = client.request(request.into()).await?;
    expect_response!(response, DescribeTopic)
}

pub(crate) async fn list_offset(
    client: &Client,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
) -> Result<ListOffsetsPartitionResponse, ClientError> {
    let request = ListOffsetsRequest {
        partitions: vec![ListOffsetsPartition {
            topic: topic.to_string(),
            partition,
            spec,
        }],
    };
    let response = client.request(request.into()).await?;
    let answer = expect_response!(response, ListOffsets)?
        .partitions
        .into_iter()
        .find(|p| p.topic == topic && p.partition == partition)
        .ok_or_else(|| {
            ClientError::UnexpectedResponse(format!(
                "ListOffsets answer without {topic}/{partition}"
            ))
        })?;
    if answer.error_code != ErrorCode::None {
        return Err(ClientError::broker_said(
            answer.error_code,
            format!("list offsets {spec:?} of {topic}/{partition}"),
            &answer.error_message,
        ));
    }
    Ok(answer)
}

impl Admin {
    /// Creates a consumer group on `topic` with `settings` (and its DLQ
    /// topic `<topic>.<group>.dlq`). Fails with `UnknownTopic`,
    /// `GroupAlreadyExists` or `InvalidConfig` broker errors.
    ///
    /// ```no_run
    /// use pigeon_client::protocol::GroupSettings;
    /// # async fn demo(admin: pigeon_client::client::Admin) -> Result<(), pigeon_client::client::ClientError> {
    /// admin.create_group("orders", "billing", GroupSettings::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_group(
        &self,
        topic: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<(), ClientError> {
        let request = CreateGroupRequest {
            topic: topic.to_string(),
            group: group.to_string(),
            settings,
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, CreateGroup).map(|_| ())
    }

    /// A group's settings, pause state and per-partition progress (lag,
    /// in flight, delayed, dead-lettered, removed by retention).
    pub async fn describe_group(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<DescribeGroupResponse, ClientError> {
        let request = DescribeGroupRequest {
            topic: topic.to_string(),
            group: group.to_string(),
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, DescribeGroup)
    }

    /// Replaces a group's settings (all of them).
    pub async fn alter_group(
        &self,
        topic: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<(), ClientError> {
        let request = AlterGroupRequest {
            topic: topic.to_string(),
            group: group.to_string(),
            settings,
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, AlterGroup).map(|_| ())
    }

    /// Moves a group in one partition (or all, with `None`) to `target`;
    /// everything from there on is delivered again. Returns where each
    /// partition sought now starts.
    pub async fn seek_group(
        &self,
        topic: &str,
        group: &str,
        partition: Option<u32>,
        target: SeekTarget,
    ) -> Result<Vec<SeekGroupPartition>, ClientError> {
        let request = SeekGroupRequest {
            topic: topic.to_string(),
            group: group.to_string(),
            partition,
            target,
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, SeekGroup).map(|r| r.partitions)
    }

    /// Pauses (`true`) or resumes (`false`) a group's deliveries.
    pub async fn pause_group(
        &self,
        topic: &str,
        group: &str,
        paused: bool,
    ) -> Result<(), ClientError> {
        let request = PauseGroupRequest {
            topic: topic.to_string(),
            group: group.to_string(),
            paused,
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, PauseGroup).map(|_| ())
    }

    /// Deletes a group and its delivery state.
    pub async fn delete_group(&self, topic: &str, group: &str) -> Result<(), ClientError> {
        let request = DeleteGroupRequest {
            topic: topic.to_string(),
            group: group.to_string(),
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, DeleteGroup).map(|_| ())
    }

    /// Moves up to `max` (0: all) parked messages of a group's dead-letter
    /// topic back into the source topic, at most `rate_per_sec` a second (0:
    /// no limit); `dry_run` counts them without moving anything. Only the
    /// group's own copies move. Never moves a message twice, even when run
    /// again or interrupted.
    ///
    /// The answer is a summary: how many moved, how many other records were
    /// left, why it ended, and per DLQ partition the offsets looked at and
    /// the new offsets' span. From a broker that speaks only version 0 of
    /// Redrive (which moves at most 100,000 messages per call and lists
    /// each), the summary is computed from the list, which `redriven`
    /// keeps.
    pub async fn redrive(
        &self,
        topic: &str,
        group: &str,
        max: u32,
        dry_run: bool,
        rate_per_sec: u32,
    ) -> Result<RedriveResponse, ClientError> {
        let request = RedriveRequest {
            topic: topic.to_string(),
            group: group.to_string(),
            max,
            dry_run,
            rate_per_sec,
        };
        let response = self
            .client
            .request_with_timeout(request.into(), std::time::Duration::from_secs(600))
            .await?;
        expect_response!(response, Redrive).map(|r| r.summarised(dry_run))
    }

    /// Where one message stands in a group.
    pub async fn message_state(
        &self,
        topic: &str,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<MessageStateResponse, ClientError> {
        let request = MessageStateRequest {
            topic: topic.to_string(),
            group: group.to_string(),
            partition,
            offset,
        };
        let response = self.client.request(request.into()).await?;
        expect_response!(response, MessageState)
    }
}
