//! The HTTP adapter on the `--http` address: `/health` (200 while serving,
//! 503 otherwise) and `/metrics` (Prometheus text format). Each handler
//! asks the service layer ([`Broker`]) one question and renders the answer.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::service::Broker;

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
    if state.broker.is_serving() {
        (StatusCode::OK, "serving\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
    }
}

async fn render_metrics(State(state): State<HttpState>) -> (StatusCode, String) {
    state.broker.refresh_metrics().await;
    match &state.prometheus {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n".into(),
        ),
    }
}
