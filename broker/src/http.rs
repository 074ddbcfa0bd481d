//! The HTTP adapter on the `--http` address: `/health` (liveness: 200
//! while serving, 503 while draining), `/ready` (200 only while serving
//! with every partition writable, else 503 with a JSON body naming what is
//! wrong) and `/metrics` (Prometheus text format). It keeps
//! answering until the broker has closed its state, so a shutdown shows as
//! 503, not as a refused connection. Each handler
//! asks the service layer ([`Broker`]) one question and renders the answer.
//!
//! With TLS (`--tls-cert`), the listener serves HTTPS only: connections are
//! accepted and shake hands in their own tasks (a stalled handshake holds
//! up no other client, and is dropped after `frame_timeout`), and a client
//! that speaks plain HTTP gets a `400` saying to use `https://`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::security::tls::ServerTls;
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
    tls: Option<Arc<ServerTls>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let handshake_timeout = broker.config.frame_timeout;
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(HttpState { broker, prometheus });
    let shutdown = async move { stop.cancelled().await };
    let served = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let listener = tls_listener::TlsListener::start(listener, tls, handshake_timeout);
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// HTTPS: TCP accepted and TLS handshakes run in the background; the HTTP
/// server takes finished TLS streams.
mod tls_listener {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_rustls::server::TlsStream;

    use crate::security::metrics::tls_handshake_failed;
    use crate::security::tls::ServerTls;
    use crate::server::tls::looks_like_tls;

    /// Finished handshakes waiting for the HTTP server.
    const QUEUE: usize = 64;

    /// A [`axum::serve::Listener`] of TLS streams.
    pub struct TlsListener {
        ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
        local: std::io::Result<SocketAddr>,
    }

    impl TlsListener {
        /// Starts accepting on `listener` (until the HTTP server is dropped).
        pub fn start(listener: TcpListener, tls: Arc<ServerTls>, timeout: Duration) -> TlsListener {
            let local = listener.local_addr();
            let (done, ready) = mpsc::channel(QUEUE);
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(e) => {
                                tracing::warn!(error = %e, "HTTP accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                        _ = done.closed() => return,
                    };
                    let (tls, done) = (tls.clone(), done.clone());
                    tokio::spawn(async move {
                        let shaken = tokio::time::timeout(timeout, handshake(&tls, stream, peer));
                        match shaken.await {
                            Ok(Some(stream)) => {
                                let _ = done.send((stream, peer)).await;
                            }
                            Ok(None) => {}
                            Err(_) => tls_handshake_failed(),
                        }
                    });
                }
            });
            TlsListener { ready, local }
        }
    }

    /// The TLS handshake of one HTTP client; a plain HTTP client is told to
    /// use HTTPS.
    async fn handshake(
        tls: &ServerTls,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let mut first = [0u8; 3];
        let seen = stream.peek(&mut first).await.ok()?;
        if seen == 0 {
            return None;
        }
        if !looks_like_tls(&first[..seen]) {
            tls_handshake_failed();
            let body =
                "this endpoint requires HTTPS (the broker runs with --tls-cert); use https://\n";
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            crate::server::close_with(&mut stream, response.as_bytes()).await;
            return None;
        }
        match tls.acceptor().accept(stream).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tls_handshake_failed();
                tracing::info!(%peer, error = %e, "HTTPS handshake failed");
                None
            }
        }
    }

    impl axum::serve::Listener for TlsListener {
        type Io = TlsStream<TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.ready.recv().await {
                Some(ready) => ready,
                // The acceptor is gone (it never ends while this listener
                // lives); wait for the server's shutdown.
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> std::io::Result<SocketAddr> {
            match &self.local {
                Ok(addr) => Ok(*addr),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            }
        }
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
