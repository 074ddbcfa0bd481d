//! Prometheus metrics: names in one place, recorded through the `metrics`
//! facade and rendered by `metrics-exporter-prometheus` at `/metrics`.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `pigeon_produce_requests_total` | counter | |
//! | `pigeon_produce_records_total`, `pigeon_produce_bytes_total` | counter | `topic` |
//! | `pigeon_produce_latency_seconds` | histogram | |
//! | `pigeon_fetch_requests_total`, `pigeon_fetch_bytes_total` | counter | |
//! | `pigeon_fetch_latency_seconds` | histogram (includes long-poll waits) | |
//! | `pigeon_errors_total` | counter | `code` (error code name) |
//! | `pigeon_connections` | gauge | |
//! | `pigeon_connections_total` | counter | |
//! | `pigeon_connections_refused_total` | counter (over `max_connections`) | |
//! | `pigeon_frame_timeouts_total` | counter (connections closed by `frame_timeout_ms`: a request frame not whole in time, or responses not read) | |
//! | `pigeon_produce_throttled_total` | counter (produce requests that put their connection over the quota) | |
//! | `pigeon_produce_throttle_seconds` | histogram of each hold-back; its `_sum` is the total throttle time | |
//! | `pigeon_log_size_bytes`, `pigeon_log_segments`, `pigeon_log_start_offset`, `pigeon_log_end_offset` | gauge, refreshed at each scrape | `topic`, `partition` |
//! | `pigeon_group_lag_messages`, `pigeon_group_in_flight_messages`, `pigeon_group_delayed_messages` | gauge, refreshed at each scrape | `topic`, `partition`, `group` |
//! | `pigeon_group_dead_lettered_total`, `pigeon_group_removed_by_retention_total` | counter, refreshed at each scrape (restart from the group's durable figures) | `topic`, `partition`, `group` |
//!
//! The security metrics (TLS handshakes and reloads, authentication) are
//! listed in [`crate::security::metrics`].
//!
//! Every metric has a `# HELP` line ([`describe`]). Histogram buckets cover
//! every value the code records: latencies 50 µs to 10 s, throttles to 30 s
//! (the longest hold-back).

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pigeon_protocol::ErrorCode;

use crate::delivery::engine::PartitionFigures as GroupFigures;
use crate::topics::Topics;

/// Latency buckets, seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Throttle buckets, seconds: 1 ms to 30 s (`MAX_THROTTLE`).
const THROTTLE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// Installs the global recorder; returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("pigeon_produce_throttle_seconds".into()),
            THROTTLE_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

/// The `# HELP` text of every metric.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "pigeon_produce_requests_total",
        "Produce requests answered."
    );
    describe_counter!(
        "pigeon_produce_records_total",
        "Records appended, by topic."
    );
    describe_counter!(
        "pigeon_produce_bytes_total",
        "Record batch bytes appended, by topic."
    );
    describe_histogram!(
        "pigeon_produce_latency_seconds",
        "Time from reading a produce request to answering it, in seconds (includes the commit's fsync)."
    );
    describe_counter!("pigeon_fetch_requests_total", "Fetch requests answered.");
    describe_counter!(
        "pigeon_fetch_bytes_total",
        "Record bytes returned by fetches."
    );
    describe_histogram!(
        "pigeon_fetch_latency_seconds",
        "Time to answer a fetch, in seconds (includes long-poll waits)."
    );
    describe_counter!(
        "pigeon_errors_total",
        "Errors answered, by error code name."
    );
    describe_gauge!("pigeon_connections", "Client connections open now.");
    describe_counter!("pigeon_connections_total", "Client connections accepted.");
    describe_counter!(
        "pigeon_connections_refused_total",
        "Connections refused because max_connections were already served."
    );
    describe_counter!(
        "pigeon_frame_timeouts_total",
        "Connections closed by frame_timeout_ms (a frame not whole in time, or responses not read)."
    );
    describe_counter!(
        "pigeon_produce_throttled_total",
        "Produce requests that put their connection over its byte-rate quota."
    );
    describe_histogram!(
        "pigeon_produce_throttle_seconds",
        "How long a connection was held back for its quota, in seconds."
    );
    describe_logs_and_groups();
    crate::security::metrics::describe();
}

/// The `# HELP` text of the per-partition log and group metrics.
fn describe_logs_and_groups() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "pigeon_log_size_bytes",
        "Bytes stored in a partition's log."
    );
    describe_gauge!("pigeon_log_segments", "Segment files of a partition's log.");
    describe_gauge!(
        "pigeon_log_start_offset",
        "First offset still stored in a partition."
    );
    describe_gauge!(
        "pigeon_log_end_offset",
        "The offset the next record of a partition gets."
    );
    describe_gauge!(
        "pigeon_group_lag_messages",
        "Messages of a partition the group has not settled."
    );
    describe_gauge!(
        "pigeon_group_in_flight_messages",
        "Messages of a partition leased to the group's consumers now."
    );
    describe_gauge!(
        "pigeon_group_delayed_messages",
        "Messages of a partition waiting for their redelivery in the group."
    );
    describe_counter!(
        "pigeon_group_dead_lettered_total",
        "Messages of a partition the group parked in its dead-letter topic."
    );
    describe_counter!(
        "pigeon_group_removed_by_retention_total",
        "Messages of a partition removed by retention before the group settled them."
    );
}

/// Sets the per-partition figures of group `group` of `topic` (called at
/// each scrape).
pub fn group_figures(topic: &str, group: &str, partition: usize, figures: &GroupFigures) {
    let labels = [
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
        ("group", group.to_owned()),
    ];
    gauge!("pigeon_group_lag_messages", &labels).set(figures.lag as f64);
    gauge!("pigeon_group_in_flight_messages", &labels).set(figures.in_flight as f64);
    gauge!("pigeon_group_delayed_messages", &labels).set(figures.delayed as f64);
    counter!("pigeon_group_dead_lettered_total", &labels).absolute(figures.dead_lettered);
    counter!("pigeon_group_removed_by_retention_total", &labels)
        .absolute(figures.removed_by_retention);
}

/// A produce request appended `records` records in `bytes` bytes.
pub fn produced(topic: &str, records: u64, bytes: u64) {
    counter!("pigeon_produce_records_total", "topic" => topic.to_owned()).increment(records);
    counter!("pigeon_produce_bytes_total", "topic" => topic.to_owned()).increment(bytes);
}

/// A produce request finished.
pub fn produce_latency(elapsed: Duration) {
    counter!("pigeon_produce_requests_total").increment(1);
    histogram!("pigeon_produce_latency_seconds").record(elapsed.as_secs_f64());
}

/// A fetch request returned `bytes` bytes of records.
pub fn fetched(bytes: u64, elapsed: Duration) {
    counter!("pigeon_fetch_requests_total").increment(1);
    counter!("pigeon_fetch_bytes_total").increment(bytes);
    histogram!("pigeon_fetch_latency_seconds").record(elapsed.as_secs_f64());
}

/// An error was answered.
pub fn error(code: ErrorCode) {
    counter!("pigeon_errors_total", "code" => code.name().to_string()).increment(1);
}

/// A connection was accepted.
pub fn connection_opened() {
    gauge!("pigeon_connections").increment(1.0);
    counter!("pigeon_connections_total").increment(1);
}

/// A connection over `max_connections` was refused.
pub fn connection_refused() {
    counter!("pigeon_connections_refused_total").increment(1);
}

/// A connection was closed by the frame timeout (a request frame that
/// stalled, or responses the client did not read).
pub fn frame_timed_out() {
    counter!("pigeon_frame_timeouts_total").increment(1);
}

/// A produce request put its connection over the quota: it is held back
/// for `wait`.
pub fn produce_throttled(wait: Duration) {
    counter!("pigeon_produce_throttled_total").increment(1);
    histogram!("pigeon_produce_throttle_seconds").record(wait.as_secs_f64());
}

/// A connection ended.
pub fn connection_closed() {
    gauge!("pigeon_connections").decrement(1.0);
}

/// Sets the per-partition log gauges (called at each scrape).
pub fn refresh_logs(topics: &Topics) {
    for topic in topics.list() {
        for (id, log) in topic.partitions.iter().enumerate() {
            let labels = [
                ("topic", topic.metadata.name.clone()),
                ("partition", id.to_string()),
            ];
            let reader = log.reader();
            gauge!("pigeon_log_size_bytes", &labels).set(reader.size_bytes() as f64);
            gauge!("pigeon_log_segments", &labels).set(reader.segment_count() as f64);
            gauge!("pigeon_log_start_offset", &labels).set(reader.start_offset() as f64);
            gauge!("pigeon_log_end_offset", &labels).set(reader.end_offset() as f64);
        }
    }
}
