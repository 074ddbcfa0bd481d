//! Tests of the client against an in-process fake broker
//! ([`fake_broker::FakeBroker`]) on loopback.
//!
//! Every test is bounded in time ([`bounded`]); conditions are awaited by
//! polling with a deadline ([`eventually`]), never by a fixed sleep.

#![allow(clippy::unwrap_used)]

mod connection_tests;
pub(super) mod fake_broker;
mod producer_tests;
mod reader_tests;

use std::future::Future;
use std::time::Duration;

use super::{Backoff, CircuitConfig, ClientConfig, ProducerConfig};

/// Runs `test`, failing if it takes longer than 20 s.
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), test)
        .await
        .expect("test took longer than 20 s")
}

/// Polls `condition` every few milliseconds until it holds, failing after 5 s.
pub(super) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client configuration with short timeouts and backoffs.
pub(super) fn fast_client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        reconnect_backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(50)),
        circuit: CircuitConfig {
            failure_threshold: 3,
            open_after: Duration::from_secs(60),
            probe_interval: Duration::from_secs(1),
        },
        ..ClientConfig::default()
    }
}

/// A producer configuration with short backoffs.
pub(super) fn fast_producer_config() -> ProducerConfig {
    ProducerConfig {
        retry_backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(50)),
        delivery_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
        ..ProducerConfig::default()
    }
}

#[test]
fn handles_can_move_between_tasks() {
    fn shared<T: Send + Sync + Clone>() {}
    fn sendable<T: Send>() {}
    shared::<super::Client>();
    shared::<super::Producer>();
    shared::<super::Admin>();
    sendable::<super::Reader>();
    sendable::<super::Delivery>();
}
