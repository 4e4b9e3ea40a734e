//! What is sent to the dashboard for a record, all in one place: the route (URL), the headers
//! of the delivery contract, the JSON body and the Standard Webhooks signature. [`build`] is
//! pure (the caller passes the signing time), so the contract in the README is tested here
//! byte for byte; [`super::client`] only carries the result over HTTP.
//!
//! Route: `{dashboard-url}{route}`, the route of the record's form type (`routes`), else
//! `default-route`.
//!
//! Headers: `X-Ingest-Key` and `Authorization: Bearer` (the ingest key, marked sensitive so
//! it is never printed), `Idempotency-Key` and `X-Trace-Id` (the trace ID, the same on every
//! attempt), `Content-Type: application/json`, `User-Agent: outbox/<version>`, `Origin` when
//! a site origin is set; with a signing secret also `webhook-id` (the trace ID),
//! `webhook-timestamp` and `webhook-signature`.
//!
//! Body: the form's own fields, plus each enrichment key (`received_at`, `client_ip`,
//! `user_agent`, `trace_id`, `src`, `form_type`) at top level where the form sent no field of
//! that name (the flat shape the dashboard knew from the old proxy), plus the complete
//! enrichment under `_enrichment`, so the dashboard can tell observed values from form-sent
//! ones.

use crate::config::DeliverySettings;
use crate::intake::enrich::Enrichment;
use crate::store::Record;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, ORIGIN, USER_AGENT};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::collections::BTreeMap;

/// The key under which the full enrichment is always sent.
pub const ENRICHMENT_KEY: &str = "_enrichment";
const USER_AGENT_VALUE: &str = concat!("outbox/", env!("CARGO_PKG_VERSION"));

/// Credentials the worker sends; replaced as a whole on SIGHUP.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ingest_key: String,
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(masked)")
    }
}

/// Where records go: the dashboard's base URL and routes, and the `Origin` sent with them.
#[derive(Debug, Clone)]
pub struct Target {
    base: String,
    routes: BTreeMap<String, String>,
    default_route: String,
    origin: Option<HeaderValue>,
}

impl Target {
    pub fn new(s: &DeliverySettings) -> anyhow::Result<Target> {
        let origin = match &s.site_origin {
            Some(o) => Some(HeaderValue::from_str(o)?),
            None => None,
        };
        Ok(Target {
            base: s.dashboard_url.as_str().to_owned(),
            routes: s.routes.clone(),
            default_route: s.default_route.clone(),
            origin,
        })
    }

    /// The URL a record of this form type goes to.
    pub fn url_for(&self, form_type: &str) -> String {
        let route = self.routes.get(form_type).unwrap_or(&self.default_route);
        url(&self.base, route)
    }
}

/// One attempt's request, ready to send.
#[derive(Debug, Clone)]
pub struct DeliveryRequest {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why no request can be built for a record.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The record itself is unusable: it is quarantined.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// Wrong for every record: delivery pauses as for rejected credentials.
    #[error("the ingest key or signing secret cannot be sent as an HTTP header value")]
    BadCredentials,
}

/// Why a stored record cannot be turned into a request. Such a record is quarantined.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the record holds no payload (it was dropped after an earlier delivery)")]
    NoPayload,
    #[error("the stored payload is not a JSON object: {0}")]
    NotAnObject(String),
}

/// The request for one attempt at `record`, signed (when a signing secret is set) with
/// `timestamp`, the Unix time in seconds.
pub fn build(
    record: &Record,
    creds: &Credentials,
    target: &Target,
    timestamp: i64,
) -> Result<DeliveryRequest, RequestError> {
    let body = body(record)?;
    let value = |s: &str| HeaderValue::from_str(s).map_err(|_| RequestError::BadCredentials);
    let mut h = HeaderMap::new();
    let mut key = value(&creds.ingest_key)?;
    key.set_sensitive(true);
    h.insert("x-ingest-key", key);
    let mut bearer = value(&format!("Bearer {}", creds.ingest_key))?;
    bearer.set_sensitive(true);
    h.insert(AUTHORIZATION, bearer);
    if let Some(o) = &target.origin {
        h.insert(ORIGIN, o.clone());
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Trace IDs are checked at intake to be short visible ASCII.
    let id = value(&record.trace_id)?;
    h.insert("idempotency-key", id.clone());
    h.insert("x-trace-id", id.clone());
    h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    if let Some(secret) = &creds.signing_secret {
        let sig = signature(&signing_key(secret), &record.trace_id, timestamp, &body);
        h.insert("webhook-id", id);
        h.insert("webhook-timestamp", HeaderValue::from(timestamp));
        h.insert("webhook-signature", value(&sig)?);
    }
    Ok(DeliveryRequest {
        url: target.url_for(&record.enrichment.form_type),
        headers: h,
        body,
    })
}

fn enrichment_map(e: &Enrichment) -> Map<String, Value> {
    match serde_json::to_value(e) {
        Ok(Value::Object(m)) => m,
        _ => unreachable!("Enrichment serializes to an object"),
    }
}

/// The request body for `record`.
pub fn body(record: &Record) -> Result<Vec<u8>, BodyError> {
    let text = record.payload.as_deref().ok_or(BodyError::NoPayload)?;
    let mut fields = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(other) => return Err(BodyError::NotAnObject(kind(&other).into())),
        Err(e) => return Err(BodyError::NotAnObject(e.to_string())),
    };
    let enrichment = enrichment_map(&record.enrichment);
    for (k, v) in &enrichment {
        if v.is_null() {
            continue; // no user agent: nothing observed, nothing to add
        }
        if !fields.contains_key(k) {
            fields.insert(k.clone(), v.clone());
        }
    }
    fields.insert(ENRICHMENT_KEY.into(), Value::Object(enrichment));
    Ok(serde_json::to_vec(&Value::Object(fields)).expect("a JSON map serializes"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The HMAC key for a signing secret: the base64-decoded part after `whsec_` when the secret
/// has that prefix (Standard Webhooks), otherwise the secret's own bytes.
pub fn signing_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => B64
            .decode(b64)
            .unwrap_or_else(|_| secret.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

/// The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// `{dashboard_url}{route}`: the base URL without its trailing slash, then the route path.
fn url(dashboard_url: &str, route: &str) -> String {
    format!("{}{route}", dashboard_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::sample;
    use serde_json::json;

    fn body_json(payload: &str) -> Value {
        let mut r = sample("trace-body-1");
        r.payload = Some(payload.into());
        serde_json::from_slice(&body(&r).unwrap()).unwrap()
    }

    #[test]
    fn the_body_adds_enrichment_where_the_form_is_silent_and_always_under_its_own_key() {
        let got = body_json(r#"{"email":"a@b.c","client_ip":"1.2.3.4","src":"form"}"#);
        let enrichment = json!({
            "received_at": "2023-11-14T22:13:20.000Z",
            "client_ip": "203.0.113.1",
            "user_agent": "test",
            "trace_id": "trace-body-1",
            "src": "site-proxy",
            "form_type": "newsletter",
        });
        let want = json!({
            "email": "a@b.c",
            "client_ip": "1.2.3.4",
            "src": "form",
            "received_at": "2023-11-14T22:13:20.000Z",
            "user_agent": "test",
            "trace_id": "trace-body-1",
            "form_type": "newsletter",
            "_enrichment": enrichment,
        });
        assert_eq!(got, want);
    }

    #[test]
    fn an_absent_user_agent_is_not_invented_at_top_level() {
        let mut r = sample("trace-body-2");
        r.enrichment.user_agent = None;
        let got: Value = serde_json::from_slice(&body(&r).unwrap()).unwrap();
        assert!(got.get("user_agent").is_none());
        assert_eq!(got["_enrichment"]["user_agent"], Value::Null);
    }

    #[test]
    fn records_without_a_usable_payload_are_errors() {
        let mut r = sample("trace-body-3");
        r.payload = None;
        assert!(matches!(body(&r), Err(BodyError::NoPayload)));
        r.payload = Some("[1,2]".into());
        assert!(matches!(body(&r), Err(BodyError::NotAnObject(_))));
        r.payload = Some("{broken".into());
        assert!(matches!(body(&r), Err(BodyError::NotAnObject(_))));
    }

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference libraries.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_secret_without_the_prefix_is_used_as_raw_bytes() {
        assert_eq!(signing_key("plain-secret"), b"plain-secret".to_vec());
        assert_eq!(signing_key("whsec_aGVsbG8="), b"hello".to_vec());
    }

    fn target() -> Target {
        Target {
            base: "https://admin.example.com/".into(),
            routes: [("contact".to_owned(), "/api/contact".to_owned())].into(),
            default_route: "/api/ingest".into(),
            origin: Some(HeaderValue::from_static("https://www.example.com")),
        }
    }

    #[test]
    fn a_request_carries_its_route_the_contract_headers_and_a_signature_of_its_body() {
        let mut r = sample("trace-req-1");
        r.enrichment.form_type = "contact".into();
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let creds = Credentials {
            ingest_key: "ingest-key-0123456789".into(),
            signing_secret: Some(secret.into()),
        };
        let req = build(&r, &creds, &target(), 1614265330).unwrap();
        assert_eq!(req.url, "https://admin.example.com/api/contact");
        assert_eq!(req.body, body(&r).unwrap());
        let sig = signature(&signing_key(secret), "trace-req-1", 1614265330, &req.body);
        let want = [
            ("x-ingest-key", "ingest-key-0123456789"),
            ("authorization", "Bearer ingest-key-0123456789"),
            ("origin", "https://www.example.com"),
            ("content-type", "application/json"),
            ("idempotency-key", "trace-req-1"),
            ("x-trace-id", "trace-req-1"),
            ("user-agent", USER_AGENT_VALUE),
            ("webhook-id", "trace-req-1"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", sig.as_str()),
        ];
        assert_eq!(req.headers.len(), want.len(), "{:?}", req.headers);
        for (name, value) in want {
            assert_eq!(req.headers[name], value, "{name}");
        }
        assert!(req.headers["x-ingest-key"].is_sensitive());
        assert!(req.headers["authorization"].is_sensitive());
    }

    #[test]
    fn an_unsigned_request_has_no_webhook_headers_and_a_key_that_is_no_header_value_is_refused() {
        let r = sample("trace-req-2");
        let mut creds = Credentials {
            ingest_key: "ingest-key-0123456789".into(),
            signing_secret: None,
        };
        let req = build(&r, &creds, &target(), 0).unwrap();
        assert_eq!(req.url, "https://admin.example.com/api/ingest");
        assert!(req
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("webhook-")));
        creds.ingest_key = "two\nlines-0123456789".into();
        assert!(matches!(
            build(&r, &creds, &target(), 0),
            Err(RequestError::BadCredentials)
        ));
    }

    #[test]
    fn urls_join_the_base_and_the_route_with_one_slash() {
        assert_eq!(
            url("https://admin.example.com/", "/api/ingest"),
            "https://admin.example.com/api/ingest"
        );
        assert_eq!(
            url("https://admin.example.com/base", "/contact"),
            "https://admin.example.com/base/contact"
        );
    }
}
