//! A stub dashboard on 127.0.0.1:0 for black-box delivery tests: a small axum server that
//! records every request (method, path, headers, body) and answers as the test says.
//!
//! ```ignore
//! let dash = Dashboard::start().await;                 // answers 200 to everything
//! dash.push_replies([Reply::status(503), Reply::status(503)]); // then 200 again
//! dash.set_reply(Reply::status(429).retry_after("2"));  // the answer after the queue
//! dash.set_handler(|req| if req.header("x-ingest-key") == Some("k") { Reply::ok() } else { Reply::status(401) });
//! let got = dash.wait_for_requests(3).await;          // panics with a clear message after 30 s
//! dash.go_down().await; /* connection refused */ dash.come_back().await;
//! ```
//! Order of answers: queued replies first, then the handler if set, else the default reply.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// How long `wait_for_*` waits before failing the test.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The `Idempotency-Key` header (the record's trace ID).
    pub fn trace_id(&self) -> String {
        self.header("idempotency-key")
            .unwrap_or_default()
            .to_owned()
    }
}

/// How the stub answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn retry_after(self, value: &str) -> Reply {
        self.header("retry-after", value)
    }

    /// A redirect with this `Location`.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::status(status).header("location", location)
    }

    pub fn body(mut self, body: impl Into<String>) -> Reply {
        self.body = body.into();
        self
    }

    /// Wait this long before answering (the request is recorded at once).
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

struct Inner {
    received: Mutex<Vec<Received>>,
    queued: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    handler: Mutex<Option<Handler>>,
    arrived: Notify,
}

pub struct Dashboard {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    server: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl Dashboard {
    /// Starts a stub that answers 200 with an empty body to everything.
    pub async fn start() -> Dashboard {
        let inner = Arc::new(Inner {
            received: Mutex::default(),
            queued: Mutex::default(),
            default: Mutex::new(Reply::ok()),
            handler: Mutex::new(None),
            arrived: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let d = Dashboard {
            addr,
            inner,
            server: Mutex::new(None),
        };
        d.serve(listener);
        d
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let inner = self.inner.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let inner = inner.clone();
                async move { answer(&inner, method, uri, headers, body).await }
            },
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        *self.server.lock().unwrap() = Some((tx, task));
    }

    /// The base URL to pass as `--dashboard-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The answer once the queued replies are used up (and no handler is set).
    pub fn set_reply(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = reply;
    }

    /// Replies used one per request, in order, before the handler or default.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.queued.lock().unwrap().extend(replies);
    }

    /// Decides each answer from the request (after the queued replies).
    pub fn set_handler(&self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self.inner.handler.lock().unwrap() = Some(Arc::new(f));
    }

    pub fn clear_handler(&self) {
        *self.inner.handler.lock().unwrap() = None;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.inner.received.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have arrived and returns them all.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Received> {
        self.wait_until(|r| r.len() >= n, &format!("{n} requests"))
            .await
    }

    /// Waits until `pred` holds for the recorded requests; `what` names it in the panic.
    pub async fn wait_until(
        &self,
        pred: impl Fn(&[Received]) -> bool,
        what: &str,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let arrived = self.inner.arrived.notified();
            {
                let got = self.inner.received.lock().unwrap();
                if pred(&got) {
                    return got.clone();
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let got = self.requests();
                panic!(
                    "stub dashboard: waited {WAIT_LIMIT:?} for {what}; got {} requests: {:?}",
                    got.len(),
                    got.iter()
                        .map(|r| (&r.path, r.trace_id()))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Stops listening: new connections are refused until [`Dashboard::come_back`].
    pub async fn go_down(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some((tx, task)) = server {
            let _ = tx.send(());
            // Open keep-alive connections are closed; a slow in-flight answer is cut off.
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                eprintln!("stub dashboard: a connection outlived go_down");
            }
        }
    }

    /// Listens again on the same port.
    pub async fn come_back(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind the stub port");
        self.serve(listener);
    }
}

async fn answer(
    inner: &Inner,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Received {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    };
    let queued = inner.queued.lock().unwrap().pop_front();
    let reply = match queued {
        Some(r) => r,
        None => {
            let handler = inner.handler.lock().unwrap().clone();
            match handler {
                Some(h) => h(&req),
                None => inner.default.lock().unwrap().clone(),
            }
        }
    };
    inner.received.lock().unwrap().push(req);
    inner.arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}
