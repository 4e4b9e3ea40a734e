//! What the client-script tests share: the real `outbox` binary with a stub dashboard behind
//! it (`Outbox`), and a visitor on the example page (`Visitor`): fill in the form, press Send,
//! wait for one of outbox.js's events, read what the page shows and what waits in the
//! browser's queue. Every wait is bounded by `PATIENCE`.

use crate::harness::dashboard::Dashboard;
use crate::harness::{free_port, spawn_binary_async, KillOnDrop};
use crate::proxy::{start_proxy, Proxy};
use crate::support::{browser_tools, serve_page, ChromeDriver, Session, Tools, PATIENCE};
use outbox::store::record::Record;
use outbox::store::Store;
use serde_json::{json, Value};
use std::future::Future;
use std::time::{Duration, Instant};

const INGEST_KEY: &str = "browser-test-ingest-key";

/// The real binary on a port of its own, delivering to a stub dashboard.
pub struct Outbox {
    pub port: u16,
    pub dash: Dashboard,
    dir: tempfile::TempDir,
    server: Option<KillOnDrop>,
}

impl Outbox {
    /// A port and a data directory; the server is not started yet (connections are refused).
    pub async fn unstarted() -> Outbox {
        Outbox {
            port: free_port(),
            dash: Dashboard::start().await,
            dir: tempfile::tempdir().unwrap(),
            server: None,
        }
    }

    /// Starts outbox, allowing `origin`, with `extra` flags.
    pub async fn start(&mut self, origin: &str, extra: &[&str]) {
        let dash = self.dash.url();
        let mut flags = vec!["--cors-origins", origin, "--dashboard-url", &dash];
        // Delivered payloads stay, so the test can read what was stored.
        flags.extend(["--ingest-key", INGEST_KEY, "--payload-retention", "1h"]);
        flags.extend_from_slice(extra);
        let dir = self.dir.path().join("data");
        self.server = Some(spawn_binary_async(&dir, self.port, &flags).await);
    }

    pub async fn started(origin: &str, extra: &[&str]) -> Outbox {
        let mut outbox = Outbox::unstarted().await;
        outbox.start(origin, extra).await;
        outbox
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `counts.accepted` of `/health/detailed`.
    pub async fn accepted(&self) -> u64 {
        let url = format!("{}/health/detailed", self.base());
        let health: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        health["counts"]["accepted"].as_u64().unwrap()
    }

    /// Waits until the dashboard got `trace_id` delivered, then a little longer, and answers
    /// how many times it was delivered.
    pub async fn delivered(&self, trace_id: &str) -> usize {
        let of = |r: &[crate::harness::dashboard::Received]| {
            r.iter().filter(|r| r.trace_id() == trace_id).count()
        };
        self.dash
            .wait_until(|r| of(r) >= 1, &format!("delivery of {trace_id}"))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        of(&self.dash.requests())
    }

    /// Stops outbox and answers every record in its store.
    pub async fn records(mut self) -> Vec<Record> {
        drop(self.server.take());
        let store = Store::open(&self.dir.path().join("data")).expect("the store opens");
        let records = store.records().collect::<Result<Vec<_>, _>>();
        records.expect("every record reads")
    }
}

/// The payload of a record, as JSON.
pub fn payload(r: &Record) -> Value {
    serde_json::from_str(r.payload.as_deref().expect("a payload")).unwrap()
}

/// A visitor in one tab of a browser session, on the example page.
#[derive(Clone)]
pub struct Visitor(pub Session);

impl Visitor {
    /// Fills in the form and presses Send `presses` times in a row (a double click is 2).
    pub async fn submit(&self, email: &str, message: &str, presses: u32) {
        self.0
            .run(RECORD_AND_SUBMIT, json!([email, message, presses]))
            .await;
    }

    /// Records outbox.js's events from now on (submit does this too).
    pub async fn record(&self) {
        self.0.run(RECORD_AND_SUBMIT, json!([null, null, 0])).await;
    }

    /// Presses Send again, the form as it is.
    pub async fn press_again(&self) {
        self.0.run(RECORD_AND_SUBMIT, json!([null, null, 1])).await;
    }

    pub async fn edit_message(&self, more: &str) {
        self.0.run(EDIT, json!(more)).await;
    }

    /// Waits until the page has seen `n` events of `kind` (outbox:<kind>) since it recorded,
    /// and answers what the page then holds: `events` (each with its `type` and detail),
    /// `status` (the page's words and `result`), `email`, `message`, `classes` of the form.
    pub async fn wait_for(&self, kind: &str, n: usize) -> Value {
        let got = self.0.run(&with_state(WAIT_FOR), json!([kind, n])).await;
        assert!(
            got["timeout"] != true,
            "waited for {n} outbox:{kind} events: {got}"
        );
        got
    }

    /// The page's status line once it shows one of `results` (outbox.js acts on load, before
    /// a test can listen): `result` (the state), `traceId`, `text`. Fails after 10 s.
    pub async fn status_when(&self, results: &[&str]) -> Value {
        let got = self.0.run(STATUS_WHEN, json!(results)).await;
        assert!(
            got["timeout"] != true,
            "waited for status {results:?}: {got}"
        );
        got
    }

    /// Waits until the browser's queue is empty (its copy is removed just after "sent").
    pub async fn queue_empties(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = self.waiting().await;
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still waiting after {limit:?}: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The copies waiting in this browser's IndexedDB queue.
    pub async fn waiting(&self) -> Vec<Value> {
        let got = self.0.run(WAITING, json!(null)).await;
        got.as_array()
            .unwrap_or_else(|| panic!("the queue could not be read: {got}"))
            .clone()
    }
}

/// One test's world: the example page on an origin of its own, the real binary allowing that
/// origin (with a stub dashboard), the scripted proxy in front of outbox (the page's address
/// for outbox: it forwards unless told otherwise, and counts the posts), and a browser.
pub struct Stage {
    pub outbox: Outbox,
    pub proxy: Proxy,
    pub visitor: Visitor,
    /// The page's URL.
    pub page: String,
    _driver: ChromeDriver,
    _tools: Tools,
}

impl Stage {
    /// Sets the stage with these extra `outbox serve` flags and, when given, these Chromium
    /// preferences; `None` after a loud SKIP when there is no browser.
    pub async fn set(extra: &[&str], prefs: Option<Value>) -> Option<Stage> {
        let tools = browser_tools().await?;
        let (site, origin) = site().await;
        let outbox = Outbox::started(&origin, extra).await;
        let proxy = start_proxy(([127, 0, 0, 1], outbox.port).into()).await;
        serve_page(site, &proxy.base());
        let driver = ChromeDriver::start(&tools);
        let browser = match prefs {
            Some(prefs) => driver.new_session_with_prefs(&tools, prefs).await,
            None => driver.new_session(&tools).await,
        };
        Some(Stage {
            outbox,
            proxy,
            visitor: Visitor(browser),
            page: format!("{origin}/"),
            _driver: driver,
            _tools: tools,
        })
    }

    /// Runs `scenario` with the visitor, the page's URL and the proxy (see [`with_browser`]).
    pub async fn play<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        scenario: impl FnOnce(Visitor, String, Proxy) -> F,
    ) -> T {
        let v = self.visitor.clone();
        let run = scenario(v.clone(), self.page.clone(), self.proxy.clone());
        with_browser(v.0, run).await
    }
}

/// A listener for the site's pages, and its origin.
pub async fn site() -> (tokio::net::TcpListener, String) {
    let site = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", site.local_addr().unwrap());
    (site, origin)
}

/// Runs `scenario` with the browser session, then ends the session whatever happened, and
/// re-raises a failure of the scenario.
pub async fn with_browser<T: Send + 'static>(
    browser: Session,
    scenario: impl Future<Output = T> + Send + 'static,
) -> T {
    let outcome = tokio::spawn(scenario).await;
    browser.quit().await;
    match outcome {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Polls `cond` every 50 ms until it holds, failing with `what` after `PATIENCE`.
pub async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + PATIENCE;
    while !cond().await {
        assert!(Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RECORD_AND_SUBMIT: &str = r#"
const [[email, message, presses], done] = arguments;
if (!window.seen) {
  window.seen = [];
  for (const type of ["queued", "retrying", "sent", "refused", "dropped"]) {
    document.addEventListener("outbox:" + type,
      (e) => seen.push({ type, at: Date.now(), ...e.detail }));
  }
}
const form = document.getElementById("contact");
if (email !== null) form.elements.email.value = email;
if (message !== null) form.elements.message.value = message;
for (let i = 0; i < presses; i++) form.querySelector("button[type=submit]").click();
done(null);
"#;

const EDIT: &str = r#"
const [more, done] = arguments;
document.getElementById("contact").elements.message.value += more;
done(null);
"#;

/// What the page holds, for the answers of the waits below.
const PAGE_STATE: &str = r#"
const form = document.getElementById("contact");
const statusLine = document.getElementById("status");
const state = () => ({
  events: window.seen || [], classes: form.className,
  status: { result: statusLine.dataset.result || "", text: statusLine.textContent,
            traceId: statusLine.dataset.traceId || "" },
  email: form.elements.email.value, message: form.elements.message.value });
"#;

fn with_state(script: &str) -> String {
    script.replace("PAGE_STATE", PAGE_STATE)
}

const WAIT_FOR: &str = r#"
const [[kind, n], done] = arguments;
PAGE_STATE
const t0 = Date.now();
(function poll() {
  const got = (window.seen || []).filter((e) => e.type === kind).length;
  if (got >= n) return done(state());
  if (Date.now() - t0 > 25000) return done({ timeout: true, ...state() });
  setTimeout(poll, 50);
})();
"#;

const WAITING: &str = r#"
const done = arguments[arguments.length - 1];
const open = indexedDB.open("outbox", 1);
open.onupgradeneeded = () => open.result.createObjectStore("q", { keyPath: "id" });
open.onerror = () => done("no IndexedDB: " + open.error);
open.onsuccess = () => {
  const all = open.result.transaction("q").objectStore("q").getAll();
  all.onsuccess = () => { open.result.close(); done(all.result); };
};
"#;

/// The last `outbox:<kind>` event the page recorded.
pub fn last_event(page: &Value, kind: &str) -> Value {
    let events = page["events"].as_array().expect("recorded events");
    let found = events.iter().rev().find(|e| e["type"] == kind);
    found
        .unwrap_or_else(|| panic!("no outbox:{kind} event: {page}"))
        .clone()
}

/// The trace ID of the last `outbox:<kind>` event.
pub fn last_id(page: &Value, kind: &str) -> String {
    let event = last_event(page, kind);
    event["traceId"].as_str().expect("a trace ID").to_owned()
}

const STATUS_WHEN: &str = r#"
const [results, done] = arguments;
const line = document.getElementById("status");
const t0 = Date.now();
(function poll() {
  const result = line.dataset.result || "";
  const state = { result, traceId: line.dataset.traceId, text: line.textContent };
  if (results.includes(result)) return done(state);
  if (Date.now() - t0 > 10000) return done({ timeout: true, ...state });
  setTimeout(poll, 50);
})();
"#;
