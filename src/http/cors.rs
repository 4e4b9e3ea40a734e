//! CORS for browsers posting from other origins, and the origin check on intake.
//!
//! Only the origins in `cors-origins` are allowed, compared exactly with the browser's
//! `Origin` header (both are serialized origins: scheme, host, port). With no origins
//! configured there are no CORS headers at all and no origin check: the service is then for
//! same-origin pages behind a proxy and for servers. A request without `Origin` (curl, a
//! server) is not a CORS request and passes. A request from an origin that is not allowed is
//! refused with 403 `origin_not_allowed` when `cors-reject` is on; otherwise it is processed
//! and the browser simply cannot read the answer.

use super::error::ApiError;
use crate::config::Settings;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer (Chromium caps this at two hours).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// The request headers a page may send besides the CORS-safelisted ones.
const ALLOWED_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("x-trace-id"),
];

/// Wraps the intake routes with the origin check and the CORS layer, when origins are set.
pub fn apply(api: Router, settings: &Settings) -> Router {
    if settings.cors_origins.is_empty() {
        return api;
    }
    let origins: Vec<HeaderValue> = settings
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let api = if settings.cors_reject {
        let allowed: Arc<[HeaderValue]> = origins.clone().into();
        api.layer(middleware::from_fn_with_state(
            allowed,
            reject_other_origins,
        ))
    } else {
        api
    };
    api.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST])
            .allow_headers(ALLOWED_HEADERS)
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// Refuses a request whose `Origin` is present and not in the list.
async fn reject_other_origins(
    State(allowed): State<Arc<[HeaderValue]>>,
    req: Request,
    next: Next,
) -> Response {
    match req.headers().get(header::ORIGIN) {
        Some(origin) if req.method() != Method::OPTIONS && !allowed.contains(origin) => {
            ApiError::new(
                403,
                "origin_not_allowed",
                "this origin may not post here; add it to cors-origins (exact scheme://host[:port])",
            )
            .into_response()
        }
        _ => next.run(req).await,
    }
}
