//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the public API, so integrators
//! can generate clients and check answers against a contract. The document is a file in the
//! repository (`src/http/openapi.json`), embedded at build time and served as it is;
//! `tests/intake/openapi.rs` runs schemathesis against a live instance with it.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document, as shipped.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/openapi.json`.
pub async fn serve() -> Response {
    let mut resp = DOCUMENT.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_covers_every_route() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for route in super::super::KNOWN_ROUTES {
            assert!(doc["paths"][route].is_object(), "{route} is not described");
        }
        let collect = &doc["paths"]["/api/collect"]["post"];
        for media in [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert!(
                collect["requestBody"]["content"][media].is_object(),
                "{media}"
            );
        }
        for status in crate::telemetry::known_series::COLLECT_STATUSES {
            assert!(
                collect["responses"][status.to_string()].is_object(),
                "answer {status} of /api/collect is not described"
            );
        }
    }
}
