//! Caps: what one client (anonymous or not) can make the broker hold.
//! Each cap is a setting (`settings!` in [`crate::config`]: a flag, an
//! environment variable, a config-file key, shown by `broker describe`)
//! with a default sized for one broker on one machine; `docs/security.md`
//! ("Caps") says what each bounds.
//!
//! | setting | bounds | default |
//! | --- | --- | --- |
//! | `max_topics` | topics (dead-letter topics included; the broker's own `__` topics are not counted) | 10,000 |
//! | `max_partitions` | partitions of all topics together (each has its state in memory and open files) | 10,000 |
//! | `max_groups_per_topic` | consumer groups of one topic | 1,000 |
//! | `max_members_per_group` | consumers joined to one group at once | 1,000 |
//! | `max_producer_names` | producer names the registry keeps (idle ones expire after `producer_expiry_ms`) | 100,000 |
//! | `max_connections_per_peer` | connections from one IP address, on both listeners together | 256 |
//! | `idle_timeout_ms` | how long a connection may send no request (with none in flight) before it is closed; 0: never | 600,000 |
//!
//! Request-level bounds are constants here ([`MAX_REQUEST_ENTRIES`]) and
//! apply to every listener through the service layer.
//!
//! Invariants: a cap is checked under the lock that serializes the
//! creation it bounds (the topics' or groups' admin lock, the members'
//! table, the registry's file lock), so concurrent creations cannot pass
//! it together; a refusal says which cap, its value, and what to do.

use std::collections::HashMap;
use std::collections::HashSet;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{BrokerError, ErrorKind};

/// Most entries (partitions of a produce, fetch or list-offsets request,
/// items of a settle) one request may name: every entry gets an answer,
/// so this bounds the answer too.
pub const MAX_REQUEST_ENTRIES: usize = 10_000;

/// TCP keepalive on every accepted connection: first probe after this
/// long without traffic.
pub const KEEPALIVE_TIME: Duration = Duration::from_secs(60);

/// TCP keepalive: between two probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The caps in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Topics, dead-letter topics included (`__` topics not counted).
    pub max_topics: u32,
    /// Partitions of every topic together.
    pub max_partitions: u32,
    /// Groups of one topic.
    pub max_groups_per_topic: u32,
    /// Consumers joined to one group.
    pub max_members_per_group: u32,
    /// Producer names in the registry.
    pub max_producer_names: u32,
    /// Connections from one IP address (both listeners together).
    pub max_connections_per_peer: u32,
    /// A connection idle this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_topics: 10_000,
            max_partitions: 10_000,
            max_groups_per_topic: 1_000,
            max_members_per_group: 1_000,
            max_producer_names: 100_000,
            max_connections_per_peer: 256,
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

/// The caps as the settings give them (each `None`: the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct CapSettings {
    /// `max_topics`.
    pub max_topics: Option<u32>,
    /// `max_partitions`.
    pub max_partitions: Option<u32>,
    /// `max_groups_per_topic`.
    pub max_groups_per_topic: Option<u32>,
    /// `max_members_per_group`.
    pub max_members_per_group: Option<u32>,
    /// `max_producer_names`.
    pub max_producer_names: Option<u32>,
    /// `max_connections_per_peer`.
    pub max_connections_per_peer: Option<u32>,
    /// `idle_timeout_ms` (0: never).
    pub idle_timeout_ms: Option<u64>,
}

impl Caps {
    /// Checks the settings; an error names the key.
    pub fn from_settings(s: CapSettings) -> Result<Caps, String> {
        let d = Caps::default();
        let positive = |key: &str, value: Option<u32>, default: u32| match value {
            Some(0) => Err(format!("{key} must be above 0")),
            v => Ok(v.unwrap_or(default)),
        };
        let idle_timeout = match s.idle_timeout_ms {
            None => d.idle_timeout,
            Some(0) => None,
            Some(ms) if ms < 1_000 => {
                return Err(format!(
                    "idle_timeout_ms is {ms}; it must be 0 (never) or at least 1000"
                ));
            }
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        Ok(Caps {
            max_topics: positive("max_topics", s.max_topics, d.max_topics)?,
            max_partitions: positive("max_partitions", s.max_partitions, d.max_partitions)?,
            max_groups_per_topic: positive(
                "max_groups_per_topic",
                s.max_groups_per_topic,
                d.max_groups_per_topic,
            )?,
            max_members_per_group: positive(
                "max_members_per_group",
                s.max_members_per_group,
                d.max_members_per_group,
            )?,
            max_producer_names: positive(
                "max_producer_names",
                s.max_producer_names,
                d.max_producer_names,
            )?,
            max_connections_per_peer: positive(
                "max_connections_per_peer",
                s.max_connections_per_peer,
                d.max_connections_per_peer,
            )?,
            idle_timeout,
        })
    }

    /// The caps as `broker describe` shows them (`0`: no limit).
    pub fn in_effect(&self) -> [(&'static str, String); 7] {
        let ms = self.idle_timeout.map_or(0, |d| d.as_millis());
        [
            ("max_topics", self.max_topics.to_string()),
            ("max_partitions", self.max_partitions.to_string()),
            (
                "max_groups_per_topic",
                self.max_groups_per_topic.to_string(),
            ),
            (
                "max_members_per_group",
                self.max_members_per_group.to_string(),
            ),
            ("max_producer_names", self.max_producer_names.to_string()),
            (
                "max_connections_per_peer",
                self.max_connections_per_peer.to_string(),
            ),
            ("idle_timeout_ms", ms.to_string()),
        ]
    }
}

/// A refusal for a cap: which one, its value, what to do.
pub fn cap_reached(what: &str, key: &str, value: u32, advice: &str) -> BrokerError {
    BrokerError::new(
        ErrorKind::InvalidRequest,
        format!("{what}: the broker's cap {key} is {value}; {advice}"),
    )
}

/// Refuses a request naming more than [`MAX_REQUEST_ENTRIES`] entries.
pub fn check_entries(what: &str, count: usize) -> Result<(), BrokerError> {
    if count > MAX_REQUEST_ENTRIES {
        return Err(BrokerError::new(
            ErrorKind::InvalidRequest,
            format!(
                "the request names {count} {what}; one request may name at most {MAX_REQUEST_ENTRIES}: split it"
            ),
        ));
    }
    Ok(())
}

/// For each key, whether an earlier one is equal (`true`: a duplicate).
pub fn repeats<K: Hash + Eq>(keys: impl IntoIterator<Item = K>) -> Vec<bool> {
    let mut seen = HashSet::new();
    keys.into_iter().map(|k| !seen.insert(k)).collect()
}

/// Connections open per IP address, on every listener together.
#[derive(Debug, Default)]
pub struct PeerConnections {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection counted against its address; uncounted when dropped.
#[derive(Debug)]
pub struct PeerSlot {
    peers: Arc<PeerConnections>,
    ip: IpAddr,
}

impl PeerConnections {
    /// Counts a connection from `peer`, unless `max` from its address are
    /// open already (then `None`).
    pub fn admit(self: &Arc<Self>, peer: SocketAddr, max: u32) -> Option<PeerSlot> {
        let ip = peer.ip();
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.open.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                // The table holds only addresses with open connections.
                open.remove(&self.ip);
            }
        }
    }
}

/// The sentence a connection over `max_connections_per_peer` is told.
pub fn too_many_from_peer(peer: SocketAddr, max: u32) -> String {
    format!(
        "the broker already serves {max} connections from {} (max_connections_per_peer); close idle connections or share them",
        peer.ip()
    )
}

/// Turns TCP keepalive on for an accepted connection (a peer that
/// vanished without a FIN is noticed and its connection closed).
pub fn keepalive(stream: &tokio::net::TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot turn TCP keepalive on");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_zero_values() {
        let caps = Caps::from_settings(CapSettings::default()).expect("defaults");
        assert_eq!(caps, Caps::default());
        let err = Caps::from_settings(CapSettings {
            max_topics: Some(0),
            ..CapSettings::default()
        })
        .expect_err("zero");
        assert!(err.starts_with("max_topics"), "{err}");
        let never = Caps::from_settings(CapSettings {
            idle_timeout_ms: Some(0),
            ..CapSettings::default()
        })
        .expect("0 is never");
        assert_eq!(never.idle_timeout, None);
        let err = Caps::from_settings(CapSettings {
            idle_timeout_ms: Some(5),
            ..CapSettings::default()
        })
        .expect_err("too short");
        assert!(err.starts_with("idle_timeout_ms"), "{err}");
    }

    #[test]
    fn connections_are_counted_per_address_and_released() {
        let peers = Arc::new(PeerConnections::default());
        let a: SocketAddr = "10.0.0.1:1000".parse().expect("addr");
        let a2: SocketAddr = "10.0.0.1:1001".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:1000".parse().expect("addr");
        let first = peers.admit(a, 2).expect("first");
        let second = peers.admit(a2, 2).expect("second");
        assert!(peers.admit(a, 2).is_none(), "a third from the same address");
        assert!(peers.admit(b, 2).is_some(), "another address");
        drop(first);
        let third = peers.admit(a, 2).expect("room again");
        drop((second, third));
        assert_eq!(peers.open_from(a.ip()), 0);
        assert!(peers.open.lock().is_empty(), "no entry left behind");
    }

    #[test]
    fn repeats_marks_every_later_copy() {
        assert_eq!(
            repeats([1, 2, 1, 3, 2, 1]),
            [false, false, true, false, true, true]
        );
        assert!(check_entries("items", MAX_REQUEST_ENTRIES).is_ok());
        let err = check_entries("items", MAX_REQUEST_ENTRIES + 1).expect_err("over");
        assert!(err.message.contains("split it"), "{}", err.message);
    }
}
