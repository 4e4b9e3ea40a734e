//! `GET /outbox.js`: the browser client (`src/http/outbox.js`), compiled into the binary so the
//! package and the image carry the exact bytes a page's Subresource Integrity hash names.
//!
//! A site's pages load it from another origin with `crossorigin="anonymous"` (SRI needs a CORS
//! answer), so it is served to any origin: it is public code, and carries no credentials. It
//! is cached for an hour and revalidated with a strong `ETag` (its SHA-256), so a page load
//! costs nothing on the network while the cache is fresh and a bodiless 304 after.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256, Sha384};
use std::sync::LazyLock;

/// The script, byte for byte as it is in the repository.
pub const SCRIPT: &str = include_str!("outbox.js");

/// How long a browser may use its copy without asking: short, because the integrity value a
/// page pins changes with each release that changes the script, and an hour bounds how long a
/// page updated for a new release may meet an old cached copy.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The strong validator: the script's SHA-256, quoted.
static ETAG: LazyLock<String> = LazyLock::new(|| format!("\"{:x}\"", Sha256::digest(SCRIPT)));

/// The value of an `integrity` attribute for these exact bytes.
pub fn integrity() -> String {
    format!("sha384-{}", B64.encode(Sha384::digest(SCRIPT)))
}

/// `GET /outbox.js`.
pub async fn serve(headers: HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&ETAG).expect("a hex digest is a header value");
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        // Weak comparison (RFC 9110 13.1.2): a proxy that compresses the script, as nginx
        // does, hands out the tag as W/"...".
        .map(|tag| tag.trim())
        .any(|tag| tag.trim_start_matches("W/") == ETAG.as_str() || tag == "*");
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        SCRIPT.into_response()
    };
    let h = resp.headers_mut();
    if !fresh {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
    }
    h.insert(header::ETAG, etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_and_integrity_follow_the_bytes() {
        assert_eq!(ETAG.len(), 66, "{}", *ETAG);
        assert!(integrity().starts_with("sha384-"));
        assert_eq!(integrity().len(), "sha384-".len() + 64);
    }
}
