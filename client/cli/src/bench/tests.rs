//! The harness against an in-memory target: counts, deduplication,
//! pacing, stalls and failures, without a broker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::*;

/// An in-memory system: one queue; knobs to misbehave.
#[derive(Debug, Default)]
struct Fake {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(Bytes, u32)>,
    published: u64,
    /// Deliver every n-th message published a second time (attempt 2).
    duplicate_every: Option<u64>,
    /// Never deliver the n-th message published.
    lose: Option<u64>,
    /// Fail the ack of the n-th message published.
    fail_ack: Option<u64>,
    topics_created: u32,
}

fn state(fake: &Arc<Mutex<State>>) -> std::sync::MutexGuard<'_, State> {
    fake.lock().expect("fake state")
}

struct FakePublisher(Arc<Mutex<State>>);
struct FakeSubscriber(Arc<Mutex<State>>);

impl Target for Fake {
    type Publisher = FakePublisher;
    type Subscriber = FakeSubscriber;

    fn name(&self) -> &str {
        "fake"
    }

    async fn create_topic(&self, _topic: &str, _partitions: u32) -> anyhow::Result<()> {
        let mut state = state(&self.state);
        state.queue.clear();
        state.topics_created += 1;
        Ok(())
    }

    async fn publisher(
        &self,
        _topic: &str,
        _settings: &PublishSettings,
    ) -> anyhow::Result<FakePublisher> {
        Ok(FakePublisher(self.state.clone()))
    }

    async fn subscriber(
        &self,
        _topic: &str,
        group: &str,
        _settings: &SubscribeSettings,
    ) -> anyhow::Result<FakeSubscriber> {
        assert_eq!(group, GROUP);
        Ok(FakeSubscriber(self.state.clone()))
    }
}

impl Publisher for FakePublisher {
    type Ack = std::future::Ready<anyhow::Result<()>>;

    async fn publish(&mut self, value: Bytes) -> anyhow::Result<Self::Ack> {
        let mut state = state(&self.0);
        // Publish order: the sequence number with a single producer.
        let sequence = state.published;
        state.published += 1;
        if state.fail_ack == Some(sequence) {
            return Ok(std::future::ready(Err(anyhow::anyhow!("disk on fire"))));
        }
        if state.lose != Some(sequence) {
            state.queue.push_back((value.clone(), 1));
        }
        if state
            .duplicate_every
            .is_some_and(|n| sequence.is_multiple_of(n))
        {
            state.queue.push_back((value, 2));
        }
        Ok(std::future::ready(Ok(())))
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Subscriber for FakeSubscriber {
    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Received>> {
        let batch: Vec<Received> = {
            let mut state = state(&self.0);
            let n = state.queue.len().min(max);
            state
                .queue
                .drain(..n)
                .map(|(value, attempt)| Received { value, attempt })
                .collect()
        };
        if batch.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(2))).await;
        }
        Ok(batch)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn workload(kind: WorkloadKind, messages: u64) -> Workload {
    let mut workload = Workload::new(kind);
    workload.messages = messages;
    workload.stall_timeout = Duration::from_secs(20);
    workload
}

#[test]
fn produce_counts_every_acked_message_once_over_all_producers() {
    let fake = Fake::default();
    let mut w = workload(WorkloadKind::Produce, 10_001);
    w.producers = 3;
    w.window = 7;
    let report = runtime()
        .block_on(run(&fake, "t", &w))
        .expect("produce run");
    assert_eq!(report.messages, 10_001);
    assert_eq!(report.bytes, 10_001 * 100);
    assert_eq!(report.workload, "produce");
    assert_eq!(report.target, "fake");
    assert!(report.seconds > 0.0 && report.msgs_per_sec > 0.0);
    assert!(report.ack_p50_us.is_none());
    let state = state(&fake.state);
    assert_eq!(state.published, 10_001);
    assert_eq!(state.topics_created, 1);
}

#[test]
fn consume_counts_redeliveries_apart() {
    let fake = Fake::default();
    state(&fake.state).duplicate_every = Some(10);
    let mut w = workload(WorkloadKind::Consume, 5_000);
    w.consumers = 2;
    w.subscribe.max_messages = 64;
    let report = runtime()
        .block_on(run(&fake, "t", &w))
        .expect("consume run");
    assert_eq!(report.messages, 5_000);
    // Every duplicate arrives after its original was counted, or the other
    // way round: either way exactly 500 deliveries are not counted.
    assert_eq!(report.redeliveries, 500);
    assert_eq!(report.latency, "receive→ack per batch");
}

#[test]
fn short_values_are_counted_by_their_first_attempt() {
    let fake = Fake::default();
    state(&fake.state).duplicate_every = Some(10);
    let mut w = workload(WorkloadKind::Consume, 300);
    w.value_size = 8;
    let report = runtime()
        .block_on(run(&fake, "t", &w))
        .expect("consume run");
    assert_eq!(report.messages, 300);
    assert_eq!(report.redeliveries, 30);
    assert_eq!(report.bytes, 300 * 8);
}

#[test]
fn e2e_at_a_fixed_rate_takes_the_scheduled_time_and_reports_both_latencies() {
    let fake = Fake::default();
    let mut w = workload(WorkloadKind::E2e, 2_000);
    w.rate = Some(20_000);
    w.producers = 2;
    let report = runtime().block_on(run(&fake, "t", &w)).expect("e2e run");
    assert_eq!(report.messages, 2_000);
    // 2,000 messages at 20,000/s cannot be done in less than 0.1 s.
    assert!(report.seconds >= 0.099, "{}", report.seconds);
    assert!(report.msgs_per_sec <= 20_200.0, "{}", report.msgs_per_sec);
    assert!(report.ack_p99_us.is_some());
    assert!(report.schedule_lag_p99_us.is_some());
    assert_eq!(report.rate, Some(20_000));
}

#[test]
fn a_timed_e2e_run_publishes_rate_times_duration() {
    let fake = Fake::default();
    let mut w = workload(WorkloadKind::E2e, 1);
    w.rate = Some(5_000);
    w.duration = Some(Duration::from_millis(200));
    let report = runtime().block_on(run(&fake, "t", &w)).expect("e2e run");
    assert_eq!(report.messages, 1_000);
    assert_eq!(state(&fake.state).published, 1_000);
}

#[test]
fn a_timed_produce_run_stops_on_time() {
    let fake = Fake::default();
    let mut w = workload(WorkloadKind::Produce, 1);
    w.duration = Some(Duration::from_millis(100));
    let report = runtime().block_on(run(&fake, "t", &w)).expect("run");
    assert!(report.messages > 1);
    assert!(
        report.seconds >= 0.1 && report.seconds < 10.0,
        "{}",
        report.seconds
    );
}

#[test]
fn a_lost_message_fails_the_run_after_the_stall_timeout_instead_of_hanging() {
    let fake = Fake::default();
    state(&fake.state).lose = Some(42);
    let mut w = workload(WorkloadKind::E2e, 100);
    w.stall_timeout = Duration::from_millis(300);
    let err = runtime()
        .block_on(run(&fake, "t", &w))
        .expect_err("a message is missing");
    let text = format!("{err:#}");
    assert!(text.contains("no new message"), "{text}");
    assert!(text.contains("99 of 100"), "{text}");
    assert!(text.contains("message 42"), "{text}");
}

#[test]
fn a_failed_ack_fails_the_run_and_names_the_message() {
    let fake = Fake::default();
    state(&fake.state).fail_ack = Some(17);
    let w = workload(WorkloadKind::Produce, 100);
    let err = runtime()
        .block_on(run(&fake, "t", &w))
        .expect_err("ack failed");
    let text = format!("{err:#}");
    assert!(text.contains("message 17 was not acknowledged"), "{text}");
    assert!(text.contains("disk on fire"), "{text}");
}

#[test]
fn an_invalid_workload_is_refused_before_touching_the_target() {
    let fake = Fake::default();
    let mut w = workload(WorkloadKind::Produce, 100);
    w.value_size = 3;
    assert!(runtime().block_on(run(&fake, "t", &w)).is_err());
    assert_eq!(state(&fake.state).topics_created, 0);
}
