//! The one error shape every endpoint answers with: `{"error": code, "message": what to fix}`,
//! and what an answer leaves for the request log ([`ErrorCode`], [`SubmissionLog`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// For the request log, when the error concerns a known submission.
    pub submission: Option<SubmissionLog>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            retry_after_secs: None,
            submission: None,
        }
    }

    /// Names the submission in the request log line (trace ID, form type).
    pub fn for_submission(mut self, log: SubmissionLog) -> ApiError {
        self.submission = Some(log);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp.extensions_mut().insert(ErrorCode(self.code));
        if let Some(log) = self.submission {
            resp.extensions_mut().insert(log);
        }
        resp
    }
}

/// What the request log records about a submission (never its fields); left on a receipt,
/// and on an error about a known submission.
#[derive(Debug, Clone)]
pub struct SubmissionLog {
    pub trace_id: String,
    pub form_type: String,
}

/// Left on error responses so the request log can name the code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Answers unknown paths in the same JSON shape.
pub async fn not_found() -> ApiError {
    ApiError::new(
        404,
        "not_found",
        "no such endpoint; post forms to /api/collect",
    )
}
