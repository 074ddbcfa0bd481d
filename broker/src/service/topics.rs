//! Topic operations: create, delete (with the topic's groups), list,
//! describe; and the one lookup of a topic or partition by name that every
//! other operation uses, with its error sentences.

use std::sync::Arc;

use super::Broker;
use crate::error::BrokerError;
use crate::log::PartitionLog;
use crate::topics::{NewTopic, Topic};

/// One topic in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    /// Its name.
    pub name: String,
    /// Its partition count.
    pub partitions: u32,
}

/// A topic's settings and each partition's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Its name.
    pub name: String,
    /// Retention by age set on the topic (`None`: the broker default).
    pub retention_ms: Option<u64>,
    /// Retention by size set on the topic (`None`: the broker default).
    pub retention_bytes: Option<u64>,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionSummary>,
}

/// What a partition holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSummary {
    /// Partition id.
    pub partition: u32,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// The offset the next record gets.
    pub log_end_offset: u64,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Segment files.
    pub segment_count: u32,
}

impl Broker {
    /// Creates a topic.
    pub(super) async fn create_topic(&self, new: NewTopic) -> Result<(), BrokerError> {
        self.topics.create(new).await.map(|_| ())
    }

    /// Deletes a topic, its data and its consumer groups (their dead-letter
    /// topics stay: they are ordinary topics). Refused while the topic is
    /// the dead-letter topic of a running group (the error names the group
    /// and says to delete it first).
    pub(super) async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let deleted = self.groups.delete_topic(&self.topics, name).await?;
        if !deleted.is_empty() {
            tracing::info!(topic = name, groups = ?deleted, "deleted the topic's consumer groups");
        }
        Ok(())
    }

    /// Every topic, by name.
    pub(super) fn list_topics(&self) -> Vec<TopicSummary> {
        let topics = self.topics.list();
        let summaries = topics.iter().map(|t| TopicSummary {
            name: t.metadata.name.clone(),
            partitions: t.metadata.partitions,
        });
        summaries.collect()
    }

    /// A topic's settings and its partitions' figures.
    pub(super) fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        let topic = self.topic(name)?;
        let partitions = topic.partitions.iter().enumerate().map(|(id, log)| {
            let reader = log.reader();
            PartitionSummary {
                partition: id as u32,
                log_start_offset: reader.start_offset(),
                log_end_offset: reader.end_offset(),
                size_bytes: reader.size_bytes(),
                segment_count: reader.segment_count() as u32,
            }
        });
        Ok(TopicDescription {
            name: topic.metadata.name.clone(),
            retention_ms: topic.metadata.retention_ms,
            retention_bytes: topic.metadata.retention_bytes,
            partitions: partitions.collect(),
        })
    }

    /// The topic called `name`, or the error saying how to create it.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.topics
            .get(name)
            .ok_or_else(|| BrokerError::unknown_topic(name))
    }

    /// Partition `partition` of `topic`.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<PartitionLog, BrokerError> {
        let topic = self.topic(topic)?;
        partition_of(&topic, partition).cloned()
    }
}

/// Partition `partition` of `topic`, or the error naming the valid range.
pub(super) fn partition_of(topic: &Topic, partition: u32) -> Result<&PartitionLog, BrokerError> {
    topic.partition(partition).ok_or_else(|| {
        BrokerError::unknown_partition(&topic.metadata.name, topic.metadata.partitions, partition)
    })
}

/// The source topic of a group operation, or the short error the group
/// APIs have always answered for a topic that went away.
pub(super) fn group_source(broker: &Broker, topic: &str) -> Result<Arc<Topic>, BrokerError> {
    broker.topics.get(topic).ok_or_else(|| {
        BrokerError::new(
            crate::error::ErrorKind::UnknownTopic,
            format!("topic {topic} does not exist"),
        )
    })
}

/// Partition `partition` of a group's source topic, or the short error the
/// group APIs answer.
pub(super) fn group_partition(
    source: &Topic,
    partition: u32,
) -> Result<&PartitionLog, BrokerError> {
    source.partition(partition).ok_or_else(|| {
        BrokerError::new(
            crate::error::ErrorKind::UnknownPartition,
            format!(
                "topic {} has no partition {partition}",
                source.metadata.name
            ),
        )
    })
}
