//! `POST /api/collect`: parse, enrich, commit durably, answer.

use super::error::{ApiError, SubmissionLog};
use super::AppState;
use crate::intake::enrich::{cut_user_agent, Enrichment};
use crate::intake::{form_type, parse, trace_id};
use crate::store::{Engine, EngineError, Record, RecordStore, StoreFailure, SubmitOutcome};
use crate::time::format_time;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::net::SocketAddr;

pub async fn collect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let max = state.settings.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let bytes =
        match tokio::time::timeout(state.settings.body_timeout, axum::body::to_bytes(body, max))
            .await
        {
            Err(_) => {
                return Err(ApiError::new(
                    408,
                    "body_timeout",
                    "the request body arrived too slowly; send it at once",
                ))
            }
            Ok(Err(e)) if is_length_limit(&e) => return Err(too_large(max)),
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    400,
                    "body_unreadable",
                    "the request body could not be read; resend it",
                ))
            }
            Ok(Ok(b)) => b,
        };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let submission = parse(content_type, &bytes, &state.limits)
        .map_err(|e| ApiError::new(e.status(), e.code(), e.to_string()))?;
    let fields = submission.fields;

    let chosen = trace_id::choose(
        headers.get("idempotency-key").map(|v| v.as_bytes()),
        headers.get("x-trace-id").map(|v| v.as_bytes()),
        &fields,
    )
    .map_err(|e| ApiError::new(400, "invalid_trace_id", e.to_string()))?;
    // A generated ID is new by construction: it is never looked up.
    let client_chose_id = chosen.is_some();
    let trace_id = chosen.unwrap_or_else(trace_id::generate);

    let honeypot = state.settings.honeypot_field.as_deref();
    let ignored: Vec<&str> = honeypot.into_iter().collect();
    let form_type = form_type::detect(&fields, &state.settings.form_rules, &ignored)
        .map_err(|e| ApiError::new(400, "invalid_form_type", e.to_string()))?;
    let log = SubmissionLog {
        trace_id: trace_id.clone(),
        form_type: form_type.clone(),
    };

    let now = chrono::Utc::now();
    if let Some(hp) = honeypot {
        if fields
            .get(hp)
            .is_some_and(|v| !matches!(v, serde_json::Value::Null) && v.as_str() != Some(""))
        {
            // Answer exactly as for an accepted post, so a bot learns nothing; store nothing.
            metrics::counter!("outbox_honeypot_total").increment(1);
            return Ok(receipt(
                StatusCode::ACCEPTED,
                &trace_id,
                &format_time(now),
                false,
                log,
            ));
        }
    }
    // From here on the trace ID is known: an error's log line names the submission too.
    let answer = async {
        let admitted = state.admission.admit();
        let ip = state.settings.client_ip.client(peer.ip(), &headers);
        let user_agent = headers
            .get(header::USER_AGENT)
            .map(|v| cut_user_agent(&String::from_utf8_lossy(v.as_bytes())));

        let now_ms = now.timestamp_millis();
        let record = Record::pending(
            fields,
            Enrichment {
                received_at: format_time(now),
                client_ip: ip.to_string(),
                user_agent,
                trace_id: trace_id.clone(),
                src: state.settings.source.clone(),
                form_type,
            },
            now_ms,
        );
        if let Err(refusal) = admitted {
            // Limits apply to new records only: a retry of a stored submission goes on to
            // the store, which answers it as a duplicate (or a conflict) and stores nothing.
            if !(client_chose_id && already_stored(&state, &trace_id).await) {
                return Err(refusal.answer());
            }
        }
        // Through the store boundary: intake tells outcomes apart as every engine reports them.
        let outcome = RecordStore::submit(&state.store, record).await;
        // Only answers that went through the store: fast refusals would flatter the figure.
        metrics::histogram!("outbox_intake_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(SubmitOutcome::Stored(r)) => {
                state.wake.notify_one();
                Ok(receipt(StatusCode::ACCEPTED, &r.trace_id, &r.received_at, false, log.clone()))
            }
            Ok(SubmitOutcome::Duplicate(r)) => Ok(receipt(StatusCode::OK, &r.trace_id, &r.received_at, true, log.clone())),
            Ok(SubmitOutcome::Conflict(r)) => Err(ApiError::new(
                409,
                "idempotency_conflict",
                format!(
                    "trace ID {} was already used at {} for a different payload; use a new Idempotency-Key for a new submission",
                    r.trace_id, r.received_at
                ),
            )),
            Err(e) if e.is_unavailable() => {
                Err(ApiError::new(503, "store_unavailable", format!("the submission was not stored: {e}")).retry_after(30))
            }
            Err(e) => {
                tracing::error!(error = %e, trace_id = %trace_id, "store error during intake");
                Err(ApiError::new(500, "store_error", "the submission was not stored because of an internal error; retry later"))
            }
        }
    }
    .await;
    answer.map_err(|e| e.for_submission(log))
}

/// Whether a record is stored under `trace_id`. Asked only when a limit refuses intake, so
/// the request path below the limits never reads the store. A read error counts as "no":
/// the client then gets the limit's 503 and retries later.
async fn already_stored(state: &AppState, trace_id: &str) -> bool {
    let found = match &state.store {
        // A sled read may wait for the disk: off the runtime.
        Engine::Embedded(s) => {
            let (store, id) = (s.clone(), trace_id.to_owned());
            tokio::task::spawn_blocking(move || store.get(&id).map_err(EngineError::from))
                .await
                .unwrap_or(Ok(None))
        }
        Engine::Postgres(_) => RecordStore::get(&state.store, trace_id).await,
    };
    match found {
        Ok(found) => found.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, trace_id = %trace_id, "store read failed while at an intake limit");
            false
        }
    }
}

/// The body of `202 Accepted` and of a duplicate's `200`.
#[derive(serde::Serialize)]
struct ReceiptBody<'a> {
    trace_id: &'a str,
    status: &'static str,
    received_at: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

fn receipt(
    status: StatusCode,
    trace_id: &str,
    received_at: &str,
    duplicate: bool,
    log: SubmissionLog,
) -> Response {
    let body = ReceiptBody {
        trace_id,
        status: "accepted",
        received_at,
        duplicate,
    };
    let mut resp = (status, Json(body)).into_response();
    resp.extensions_mut().insert(log);
    resp
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        413,
        "body_too_large",
        format!("the body is larger than the {max}-byte limit; send fewer or shorter fields"),
    )
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
