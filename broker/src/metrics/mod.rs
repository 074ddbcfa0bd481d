//! Prometheus metrics at `/metrics`: names in one place.
//!
//! Two sources make up a scrape's text:
//! - **process-wide series** (request counts and latencies, connections,
//!   errors, throttles), recorded through the `metrics` facade as things
//!   happen and rendered by `metrics-exporter-prometheus`;
//! - **per-resource series** (per topic, partition and group), rendered by
//!   [`scrape`] from what exists at the scrape, so they disappear with
//!   their topic or group; and the process's own figures ([`process`]).
//!   [`text`] writes them in the text format.
//!
//! Recorded through the facade:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `pigeon_produce_requests_total` | counter | |
//! | `pigeon_produce_latency_seconds` | histogram | |
//! | `pigeon_fetch_requests_total`, `pigeon_fetch_bytes_total` | counter | |
//! | `pigeon_fetch_latency_seconds` | histogram (includes long-poll waits) | |
//! | `pigeon_errors_total` | counter | `code` (error code name) |
//! | `pigeon_connections` | gauge | |
//! | `pigeon_connections_total` | counter | |
//! | `pigeon_connections_refused_total` | counter (connections refused, binary protocol and Redis listener: over `max_connections`, or over `max_connections_per_peer` from one address) | `reason` (`max_connections`, `per_peer`) |
//! | `pigeon_frame_timeouts_total` | counter (connections closed by `frame_timeout_ms`: a request frame not whole in time, or responses not read) | |
//! | `pigeon_produce_throttled_total` | counter (produce requests that put their connection over the quota) | |
//! | `pigeon_produce_throttle_seconds` | histogram of each hold-back; its `_sum` is the total throttle time | |
//! | `pigeon_fetch_throttled_total` | counter (Fetch and Receive responses that put their connection over the fetch quota) | |
//! | `pigeon_fetch_throttle_seconds` | histogram of each hold-back for the fetch quota; `_sum` is the total | |
//!
//! The per-resource families are listed in [`scrape`], the writer pool's
//! in [`writer_pool`], the process ones in [`process`]. Every metric has a `# HELP` line ([`describe`] for the
//! facade's). Histogram buckets cover every value the code records:
//! latencies 50 µs to 10 s, throttles to 30 s (the longest hold-back);
//! fsyncs, records per commit and append stages: see [`crate::log::stats`]. The security
//! metrics (TLS handshakes and reloads, authentication) are listed in
//! [`crate::security::metrics`].

pub mod process;
pub mod scrape;
pub mod text;
pub mod writer_pool;

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pigeon_protocol::ErrorCode;

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
        .set_buckets_for_metric(
            Matcher::Full("pigeon_fetch_throttle_seconds".into()),
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
        "Connections refused (binary protocol and Redis listener), by reason: max_connections (the listener already served max_connections) or per_peer (the address already had max_connections_per_peer)."
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
        "How long a connection was held back for its produce quota, in seconds."
    );
    describe_counter!(
        "pigeon_fetch_throttled_total",
        "Fetch and Receive responses that put their connection over its byte-rate fetch quota."
    );
    describe_histogram!(
        "pigeon_fetch_throttle_seconds",
        "How long a connection was held back for its fetch quota, in seconds."
    );
    crate::security::metrics::describe();
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

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` were already served.
    MaxConnections,
    /// Its address already had `max_connections_per_peer`.
    PerPeer,
}

/// A connection was refused for `reason`.
pub fn connection_refused(reason: Refusal) {
    let reason = match reason {
        Refusal::MaxConnections => "max_connections",
        Refusal::PerPeer => "per_peer",
    };
    counter!("pigeon_connections_refused_total", "reason" => reason).increment(1);
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

/// A Fetch or Receive response put its connection over the fetch quota:
/// the connection's next request waits `wait`.
pub fn fetch_throttled(wait: Duration) {
    counter!("pigeon_fetch_throttled_total").increment(1);
    histogram!("pigeon_fetch_throttle_seconds").record(wait.as_secs_f64());
}

/// A connection ended.
pub fn connection_closed() {
    gauge!("pigeon_connections").decrement(1.0);
}

/// The whole `/metrics` text: the facade's series (`recorded`, rendered by
/// the exporter), then the per-resource families of `samples`, then the
/// process's own.
pub fn render(recorded: &PrometheusHandle, samples: &scrape::ResourceSamples) -> String {
    let mut out = recorded.render();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    scrape::render(samples, &mut out);
    writer_pool::render(&crate::log::pool::WriterPool::global().figures(), &mut out);
    process::ProcessFigures::read().render(&mut out);
    out
}
