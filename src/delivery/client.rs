//! The dashboard client: one pooled reqwest client (rustls, keep-alive, redirects never
//! followed) and the request headers of the delivery contract.
//!
//! A redirect is returned to the caller as its 3xx status: following it would turn the POST
//! into a silent GET elsewhere, or send the ingest key to another host.

use super::classify::{Reply, Transport};
use super::request::{self, BodyError, Credentials};
use crate::config::DeliverySettings;
use crate::store::Record;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, ORIGIN, USER_AGENT};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Most of an error reply kept with a dead letter.
pub const KEPT_BODY: usize = 1024;
/// Most of a reply body read before the connection is given up; reading it all (up to this)
/// lets the connection go back to the pool.
const DRAINED_BODY: usize = 64 * 1024;
const USER_AGENT_VALUE: &str = concat!("outbox/", env!("CARGO_PKG_VERSION"));

/// What came back from one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub reply: Reply,
    pub retry_after: Option<Duration>,
    /// Up to [`KEPT_BODY`] bytes of the reply (lossy UTF-8), or the transport error, or for
    /// a redirect its `Location`.
    pub detail: String,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the ingest key or signing secret cannot be sent as an HTTP header value")]
    BadCredentials,
}

pub struct Dashboard {
    client: reqwest::Client,
    base: String,
    routes: BTreeMap<String, String>,
    default_route: String,
    origin: Option<HeaderValue>,
}

impl Dashboard {
    pub fn new(s: &DeliverySettings) -> anyhow::Result<Dashboard> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(s.concurrency.max(1) * 2)
            .tcp_nodelay(true)
            .build()?;
        let origin = match &s.site_origin {
            Some(o) => Some(HeaderValue::from_str(o)?),
            None => None,
        };
        Ok(Dashboard {
            client,
            base: s.dashboard_url.as_str().to_owned(),
            routes: s.routes.clone(),
            default_route: s.default_route.clone(),
            origin,
        })
    }

    /// The URL a record of this form type goes to.
    pub fn url_for(&self, form_type: &str) -> String {
        let route = self.routes.get(form_type).unwrap_or(&self.default_route);
        request::url(&self.base, route)
    }

    fn headers(&self, record: &Record, creds: &Credentials) -> Result<HeaderMap, SendError> {
        let value = |s: &str| HeaderValue::from_str(s).map_err(|_| SendError::BadCredentials);
        let mut h = HeaderMap::new();
        let mut key = value(&creds.ingest_key)?;
        key.set_sensitive(true);
        h.insert("x-ingest-key", key);
        let mut bearer = value(&format!("Bearer {}", creds.ingest_key))?;
        bearer.set_sensitive(true);
        h.insert(AUTHORIZATION, bearer);
        if let Some(o) = &self.origin {
            h.insert(ORIGIN, o.clone());
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Trace IDs are checked at intake to be short visible ASCII.
        let id = value(&record.trace_id)?;
        h.insert("idempotency-key", id.clone());
        h.insert("x-trace-id", id);
        h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        Ok(h)
    }

    /// Sends one attempt for `record`. Transport failures are part of the [`Attempt`]; only
    /// a record that cannot be turned into a request is an error.
    pub async fn send(&self, record: &Record, creds: &Credentials) -> Result<Attempt, SendError> {
        let body = request::body(record)?;
        let mut headers = self.headers(record, creds)?;
        if let Some(secret) = &creds.signing_secret {
            let ts = chrono::Utc::now().timestamp();
            let sig =
                request::signature(&request::signing_key(secret), &record.trace_id, ts, &body);
            headers.insert("webhook-id", headers["idempotency-key"].clone());
            headers.insert("webhook-timestamp", HeaderValue::from(ts));
            headers.insert(
                "webhook-signature",
                HeaderValue::from_str(&sig).map_err(|_| SendError::BadCredentials)?,
            );
        }
        let url = self.url_for(&record.enrichment.form_type);
        let started = std::time::Instant::now();
        let result = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                return Ok(Attempt {
                    reply: Reply::Transport(transport_kind(&e)),
                    retry_after: None,
                    detail: error_chain(&e),
                    elapsed: started.elapsed(),
                })
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| super::backoff::parse_retry_after(v, SystemTime::now()));
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut kept = Vec::new();
        let mut read = 0usize;
        // A reply body that fails half-way still leaves us the status, which decides.
        while let Ok(Some(chunk)) = resp.chunk().await {
            read += chunk.len();
            let room = KEPT_BODY.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if read > DRAINED_BODY {
                break;
            }
        }
        let detail = match (status.is_redirection(), location) {
            (true, Some(loc)) => format!("redirect to {loc} not followed"),
            _ => String::from_utf8_lossy(&kept).into_owned(),
        };
        Ok(Attempt {
            reply: Reply::Status(status.as_u16()),
            retry_after,
            detail,
            elapsed: started.elapsed(),
        })
    }
}

fn transport_kind(e: &reqwest::Error) -> Transport {
    if e.is_timeout() {
        Transport::Timeout
    } else if e.is_connect() {
        Transport::Connect
    } else {
        Transport::Other
    }
}

/// The error and its causes on one line (reqwest's top-level message alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
