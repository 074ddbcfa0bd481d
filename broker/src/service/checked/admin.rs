//! The broker-administration operations as a caller may do them: listing
//! groups, altering a topic's retention, describing the broker (see the
//! table in the parent module).

use super::Checked;
use crate::error::{BrokerError, ErrorKind};
use crate::security::rules::{Op, Resource};
use crate::service::auth::Identity;
use crate::service::{BrokerDescription, GroupSummary, Outcome, RetentionInEffect};
use crate::topics::RetentionChange;

impl Checked<'_> {
    /// The groups the caller may describe (of `topic`, or of every topic):
    /// those of a topic it may read, or on which it may consume or
    /// administer. Naming a topic it may not describe at all is refused.
    ///
    /// `fits` is told the names of each group listed, before any group is
    /// asked for its figures; its refusal is the answer.
    pub async fn list_groups(
        &self,
        topic: Option<&str>,
        fits: impl FnMut(&str, &str) -> Result<(), BrokerError>,
    ) -> Result<Vec<GroupSummary>, BrokerError> {
        if let Some(name) = topic
            && !self.may_describe(name)
        {
            self.allow("group list", Op::Read, Resource::topic(name))?;
        }
        let keep = |topic: &str, group: &str| self.may_describe_group(topic, group);
        self.broker.list_groups(topic, keep, fits).await
    }

    /// Changes a topic's retention (`admin` on it).
    pub async fn alter_topic(
        &self,
        name: &str,
        retention_ms: RetentionChange,
        retention_bytes: RetentionChange,
    ) -> Result<RetentionInEffect, BrokerError> {
        let altered = self.broker.alter_topic(name, retention_ms, retention_bytes);
        self.admin("topic alter", Resource::topic(name), altered)
            .await
    }

    /// The broker's version, uptime, settings (secrets hidden) and data
    /// directory usage: for a user with `admin` on some topic.
    pub async fn describe_broker(&self) -> Result<BrokerDescription, BrokerError> {
        match &self.caller.identity {
            Identity::Anyone => {}
            Identity::Nobody => return Err(self.unauthenticated()),
            Identity::User(user) if user.rules.allows_anywhere(Op::Admin) => {}
            Identity::User(user) => {
                let refused = BrokerError::new(
                    ErrorKind::NotAuthorized,
                    format!(
                        "user {} may not describe the broker: no rule of the users file gives it admin on any topic",
                        user.name
                    ),
                );
                let reason = Some(refused.message.as_str());
                self.broker.audit(
                    self.caller,
                    "broker describe",
                    "broker",
                    Outcome::Refused,
                    reason,
                );
                return Err(refused);
            }
        }
        Ok(self.broker.describe_broker().await)
    }
}
