//! A scripted proxy in front of outbox, on an origin of its own, for the browser tests.
//!
//! It forwards each request to outbox unless the test queued something else for the next
//! POST: a canned answer (outbox's JSON error with the CORS headers a browser needs, as a
//! proxy in front of outbox would pass it on, or a proxy's HTML error page), or "store, then
//! lose the answer" (forward to outbox, then close the connection unanswered: the post is
//! stored while the page sees a network error). One request per connection. Every POST is
//! recorded ([`Post`]), so a test can tell how often and when the page sent.

use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one POST.
#[derive(Clone, Debug)]
pub enum Act {
    Forward,
    /// Answer this instead (status, content type, body, Retry-After in seconds); outbox
    /// never sees the post.
    Answer(u16, &'static str, String, Option<u32>),
    /// Forward to outbox (which stores the post), then close the connection unanswered.
    ForwardThenDrop,
}

pub type Script = Arc<Mutex<VecDeque<Act>>>;

/// outbox's JSON error, as outbox (or nginx passing it on) answers it.
pub fn refusal(status: u16, code: &str, message: &str, retry_after: Option<u32>) -> Act {
    let body = json!({"error": code, "message": message}).to_string();
    Act::Answer(status, "application/json", body, retry_after)
}

/// One POST the proxy received.
#[derive(Clone, Debug)]
pub struct Post {
    pub at: Instant,
    /// The `Idempotency-Key` header, if any.
    pub key: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Post {
    /// The trace ID the post carried: its Idempotency-Key, else its body's `trace_id`.
    pub fn trace_id(&self) -> String {
        self.key.clone().unwrap_or_else(|| {
            let body: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
            body["trace_id"].as_str().unwrap_or_default().to_owned()
        })
    }
}

/// The proxy: its address, what it will do with the next POSTs, and the POSTs so far.
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub script: Script,
    pub posts: Arc<Mutex<Vec<Post>>>,
}

impl Proxy {
    /// Queues what to do with the next POSTs.
    pub fn queue(&self, acts: impl IntoIterator<Item = Act>) {
        self.script.lock().unwrap().extend(acts);
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// The POSTs carrying `trace_id`.
    pub fn posts_of(&self, trace_id: &str) -> Vec<Post> {
        let posts = self.posts();
        posts
            .into_iter()
            .filter(|p| p.trace_id() == trace_id)
            .collect()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The scripted proxy in front of outbox: one request per connection.
pub async fn start_proxy(outbox: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy {
        addr: listener.local_addr().unwrap(),
        script: Script::default(),
        posts: Arc::default(),
    };
    let p = proxy.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(proxy_one(socket, outbox, p.clone()));
        }
    });
    proxy
}

async fn proxy_one(mut socket: TcpStream, outbox: SocketAddr, proxy: Proxy) {
    let Some((head, body)) = read_request(&mut socket).await else {
        return;
    };
    let mut lines = head.lines();
    let mut start = lines.next().unwrap_or("").split(' ');
    let (method, path) = (
        start.next().unwrap_or("").to_owned(),
        start.next().unwrap_or("/").to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let origin = headers
        .iter()
        .find(|(k, _)| k == "origin")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let header = |name: &str| {
        let found = headers.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.clone())
    };
    let act = match method.as_str() {
        "POST" => {
            let act = proxy.script.lock().unwrap().pop_front();
            let act = act.unwrap_or(Act::Forward);
            proxy.posts.lock().unwrap().push(Post {
                at: Instant::now(),
                key: header("idempotency-key"),
                content_type: header("content-type").unwrap_or_default(),
                body: body.clone(),
            });
            act
        }
        _ => Act::Forward,
    };
    let reply = match act {
        Act::Answer(status, content_type, body, retry_after) => {
            let retry_after = retry_after
                .map(|s| format!("retry-after: {s}\r\n"))
                .unwrap_or_default();
            let head = format!(
                "HTTP/1.1 {status} Refused\r\ncontent-type: {content_type}\r\n\
                 access-control-allow-origin: {origin}\r\naccess-control-expose-headers: retry-after\r\n\
                 {retry_after}content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            [head.into_bytes(), body.into_bytes()].concat()
        }
        Act::Forward | Act::ForwardThenDrop => {
            let forwarded = forward(outbox, &method, &path, &headers, body).await;
            if matches!(act, Act::ForwardThenDrop) {
                return; // stored; the answer is lost with the connection
            }
            forwarded
        }
    };
    let _ = socket.write_all(&reply).await;
    let _ = socket.shutdown().await;
}

/// Reads one request head and its Content-Length body; None when the client sent nothing.
async fn read_request(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((head, buf[end + 4..end + 4 + len].to_vec()));
        }
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends the request on to outbox and renders its answer as raw HTTP/1.1 bytes.
async fn forward(
    outbox: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Vec<u8> {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), format!("http://{outbox}{path}"));
    for (k, v) in headers {
        if !["host", "content-length", "connection"].contains(&k.as_str()) {
            req = req.header(k, v);
        }
    }
    let resp = req.body(body).send().await.expect("outbox answers");
    let mut out = format!("HTTP/1.1 {} Outbox\r\n", resp.status().as_u16());
    for (k, v) in resp.headers() {
        if !["content-length", "connection", "transfer-encoding"].contains(&k.as_str()) {
            out.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
        }
    }
    let body = resp.bytes().await.unwrap();
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    [out.into_bytes(), body.to_vec()].concat()
}
