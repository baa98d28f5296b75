//! `/metrics` over plain HTTP. The listener is bound when the agent starts, so a port in use
//! is refused at once with the flag to change; requests are answered on the blocking pool
//! (the scrape reads the kernel and the disk).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::AgentMetrics;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "listening for /metrics on {addr}: {source} (another agent or kube-proxy in this network namespace? pick another --metrics-bind, or --metrics-bind off)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `/metrics` (and `/healthz`) until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<AgentMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::warn!(error = %e, "the metrics listener failed");
    }
}

async fn scrape(State(metrics): State<Arc<AgentMetrics>>) -> Response {
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the scrape task failed: {e}\n"),
        )
            .into_response(),
    }
}
