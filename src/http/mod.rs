//! The HTTP API: `router(state)` builds every route; the app binds and serves it.

pub mod admission;
pub mod client_script;
pub mod collect;
pub mod cors;
pub mod error;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;

use crate::config::Settings;
use crate::delivery::DeliveryState;
use crate::intake::Limits;
use crate::log_summary::{LogSummary, Report, SUMMARY_EVERY};
use crate::store::postgres::health::Watch;
use crate::store::Engine;
use admission::Admission;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tower_http::set_header::SetResponseHeaderLayer;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub limits: Limits,
    pub store: Engine,
    /// The last probe of the PostgreSQL store (unused with the embedded store).
    pub store_watch: Arc<Watch>,
    pub admission: Arc<Admission>,
    pub delivery: Arc<DeliveryState>,
    /// Wakes the delivery worker when a new submission is stored.
    pub wake: Arc<Notify>,
    pub started: Instant,
    pub shutting_down: Arc<AtomicBool>,
}

/// The health and metrics routes, served on the main address or on `--admin-listen`.
/// Never rate limited.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/detailed", get(health::detailed))
        .route("/metrics", get(metrics::render))
        .with_state(state)
}

/// The public API. Health routes are merged in unless they have an address of their own.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/api/collect", post(collect::collect))
        .with_state(state.clone());
    // Innermost first: the rate limit runs before the handler reads a byte of the body, and
    // CORS wraps everything so even a 429 or 403 carries the headers a browser needs.
    app = rate_limit::apply(app, &state.settings);
    app = cors::apply(app, &state.settings);
    // The API's own description: not a submission, so never rate limited.
    app = app.route("/api/openapi.json", get(openapi::serve));
    // The browser client, for pages on any origin: public code, cached, never rate limited.
    app = app.route("/outbox.js", get(client_script::serve));
    if state.settings.admin_listen.is_none() {
        app = app.merge(health_router(state));
    }
    common_layers(app.fallback(error::not_found))
}

/// Security headers and the request log, on every router.
pub fn common_layers(app: Router) -> Router {
    app.layer(middleware::from_fn(request_log))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        // Nothing is cached unless a route says otherwise (only /outbox.js does).
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

/// The `route` label values of `outbox_http_requests_total`, besides `other`.
const KNOWN_ROUTES: [&str; 7] = [
    "/api/collect",
    "/api/openapi.json",
    "/outbox.js",
    "/health",
    "/health/ready",
    "/health/detailed",
    "/metrics",
];

/// Posts to `/api/collect` answered with an error, counted by status and code and logged as a
/// rate-limited summary: a 429 has no request line of its own (a flood must not become a
/// flood of log lines), so this is where it shows.
pub static REFUSALS: LogSummary = LogSummary::new(SUMMARY_EVERY, log_refusals);

fn log_refusals(r: &Report) {
    tracing::warn!(
        refused = r.count,
        causes = %r.by_cause,
        last_cause = %r.last_cause,
        "posts refused"
    );
}

/// One log line per request: method, route, status, latency, and for submissions the trace ID
/// and form type. Never the body, never a header value that could carry a secret.
async fn request_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = resp.status().as_u16();
    let sub = resp.extensions().get::<error::SubmissionLog>();
    let code = resp.extensions().get::<error::ErrorCode>().map(|c| c.0);
    // Only known routes become label values: any other path would let a client create
    // metric series (memory) at will.
    let route = KNOWN_ROUTES
        .iter()
        .copied()
        .find(|r| *r == path)
        .unwrap_or("other");
    ::metrics::counter!("outbox_http_requests_total", "route" => route, "status" => status.to_string())
        .increment(1);
    if route == "/api/collect" && status >= 400 {
        REFUSALS.record(&format!("{status} {}", code.unwrap_or("-")));
    }
    if status == 429 {
        // A flood must not become a flood of log lines; outbox_rate_limited_total counts it.
        return resp;
    }
    tracing::info!(
        method = %method,
        route,
        status,
        latency_ms = format_args!("{latency_ms:.2}"),
        trace_id = sub.map(|s| s.trace_id.as_str()),
        form_type = sub.map(|s| s.form_type.as_str()),
        error = code,
        "request"
    );
    resp
}
