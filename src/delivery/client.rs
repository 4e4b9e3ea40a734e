//! Sending a request: the [`Sender`] that a delivery step hands its requests to, and
//! [`Dashboard`], the one that speaks HTTP: a pooled reqwest client (rustls, keep-alive,
//! redirects never followed). What a request contains is decided in [`super::request`].
//!
//! A redirect is returned to the caller as its 3xx status: following it would turn the POST
//! into a silent GET elsewhere, or send the ingest key to another host.

use super::backoff::parse_retry_after;
use super::classify::{Reply, Transport};
use super::request::DeliveryRequest;
use crate::config::DeliverySettings;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Most of an error reply kept with a dead letter.
pub const KEPT_BODY: usize = 1024;
/// Most of a reply body read before the connection is given up; reading it all (up to this)
/// lets the connection go back to the pool.
const DRAINED_BODY: usize = 64 * 1024;

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

/// Carries one request to the dashboard: [`Dashboard`] in the service, a fake in the
/// delivery step's tests.
pub trait Sender: Send + Sync + 'static {
    /// Sends `request`. Transport failures are part of the [`Attempt`], never an error.
    fn send(&self, request: DeliveryRequest) -> impl Future<Output = Attempt> + Send;
}

/// The dashboard over HTTP.
pub struct Dashboard {
    client: reqwest::Client,
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
        Ok(Dashboard { client })
    }
}

impl Sender for Dashboard {
    async fn send(&self, request: DeliveryRequest) -> Attempt {
        let started = std::time::Instant::now();
        let result = self
            .client
            .post(request.url)
            .headers(request.headers)
            .body(request.body)
            .send()
            .await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                return Attempt {
                    reply: Reply::Transport(transport_kind(&e)),
                    retry_after: None,
                    detail: error_chain(&e),
                    elapsed: started.elapsed(),
                }
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
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
        Attempt {
            reply: Reply::Status(status.as_u16()),
            retry_after,
            detail,
            elapsed: started.elapsed(),
        }
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
