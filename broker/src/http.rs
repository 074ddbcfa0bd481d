//! HTTP endpoints on the `--http` address: `/health` (200 while serving,
//! 503 otherwise) and `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::metrics;
use crate::server::Broker;

#[derive(Clone)]
struct HttpState {
    broker: Arc<Broker>,
    prometheus: Option<PrometheusHandle>,
}

/// Serves HTTP until the broker shuts down.
pub async fn run(broker: Arc<Broker>, prometheus: Option<PrometheusHandle>, listener: TcpListener) {
    let shutdown = broker.shutdown.clone();
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .with_state(HttpState { broker, prometheus });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn health(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.broker.serving.load(Ordering::Acquire) {
        (StatusCode::OK, "serving\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
    }
}

async fn render_metrics(State(state): State<HttpState>) -> (StatusCode, String) {
    metrics::refresh_logs(&state.broker.topics);
    match &state.prometheus {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n".into(),
        ),
    }
}
