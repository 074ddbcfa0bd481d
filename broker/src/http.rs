//! The HTTP adapter on the `--http` address: `/health` (liveness: 200
//! while serving, 503 while draining), `/ready` (200 only while serving
//! with every partition writable, else 503 with a JSON body naming what is
//! wrong) and `/metrics` (Prometheus text format). It keeps
//! answering until the broker has closed its state, so a shutdown shows as
//! 503, not as a refused connection. Each handler
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

/// Serves HTTP until `stop` is cancelled: through the broker's drain too,
/// so that `/health` and `/ready` answer 503 while it drains instead of
/// refusing connections.
pub async fn run(
    broker: Arc<Broker>,
    prometheus: Option<PrometheusHandle>,
    listener: TcpListener,
    stop: tokio_util::sync::CancellationToken,
) {
    let shutdown = stop;
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
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
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

/// 200 while serving with every partition writable; 503 otherwise (also
/// while draining). The JSON body names what is wrong.
async fn ready(State(state): State<HttpState>) -> (StatusCode, String) {
    let problems = state.broker.readiness_problems();
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": problems.is_empty(), "problems": problems });
    (status, format!("{body}\n"))
}

async fn render_metrics(State(state): State<HttpState>) -> (StatusCode, String) {
    match &state.prometheus {
        Some(handle) => {
            let samples = state.broker.metric_samples().await;
            (StatusCode::OK, crate::metrics::render(handle, &samples))
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n".into(),
        ),
    }
}
