//! The admin router: `/metrics`, `/healthz` and `/readyz`.
//!
//! It is served on the cluster network by [`crate::ops::admin_server`] (which bounds
//! connections and request sizes), never inside the tunnel, and it exposes
//! counts only.

use super::Telemetry;
use super::metrics::openmetrics_to_text;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::time::Instant;

impl Telemetry {
    /// The admin routes, with this telemetry as their state.
    pub(crate) fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self)
    }
}

/// Serves OpenMetrics to clients that ask for it (Prometheus does), and the
/// classic text format 0.0.4 otherwise, so `curl` and `promtool check
/// metrics` see the format they expect.
async fn metrics(State(t): State<Telemetry>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let body = t.render();
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            openmetrics_to_text(&body),
        )
    }
}

async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    match t.health.ready(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
