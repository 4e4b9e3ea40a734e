//! A real browser against the real service: headless Chromium loads the example page that
//! ships in `ops/site-example/` from another origin and submits it the three ways a site does
//! (fetch with JSON and an Idempotency-Key, a plain urlencoded form post, `navigator.sendBeacon`);
//! then a page from an origin that is not allowed tries to post and must not read the answer.
//!
//! CORS, preflights and beacons are browser behaviour that no HTTP client in a test reproduces,
//! so this is the one test that needs a browser. Chromium is driven through chromedriver with
//! the few WebDriver commands it needs (new session, go to a URL, run a script, end the
//! session), spoken as plain JSON over the HTTP client the crate already has, so `cargo test`
//! stays the single test command. When chromium or chromedriver is missing the test prints a
//! loud SKIP and passes, except under CI (`CI` set), where it fails: `.ci/run` installs them.

mod common;

use common::{free_port, spawn_app};
use outbox::store::Store;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example page, with this placeholder as its form's action.
const PAGE: &str = include_str!("../ops/site-example/index.html");
const PLACEHOLDER_ENDPOINT: &str = "https://forms.example.com/api/collect";

/// Bound on every wait in this file, so a broken browser fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_an_allowed_origin_submits_three_ways_and_other_origins_cannot_read_answers() {
    let Some(tools) = browser_tools() else { return };

    // Arrange: the page on one origin, the same page on a second origin, the service on a third.
    let site = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_origin = format!("http://{}", site.local_addr().unwrap());
    let other_origin = format!("http://{}", elsewhere.local_addr().unwrap());
    let app = spawn_app(&["--cors-origins", &site_origin]).await;
    serve_page(site, &app.url("/api/collect"));
    serve_page(elsewhere, &app.url("/api/collect"));
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session(&tools).await;

    // Act: run the scenario, then always end the browser session, even when it failed.
    let scenario = tokio::spawn(submit_from_both_origins(
        browser.clone(),
        site_origin,
        other_origin,
    ));
    let outcome = scenario.await;
    browser.quit().await;
    drop(driver);
    let sent = match outcome {
        Ok(sent) => sent,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };

    // Assert: the three submissions are stored, and nothing from the other origin is.
    wait_for_accepted(&app, 3).await;
    let (_, health) = app.get_json("/health/detailed").await;
    assert_eq!(health["counts"]["accepted"], 3, "{health}");
    let refused = metric_value(&app, "/api/collect", "403").await;
    assert_eq!(
        refused, 1,
        "the text/plain post from the other origin reached the service and was refused"
    );
    let tmp = app.stop().await;
    let store = Store::open(&tmp.as_ref().unwrap().path().join("data")).expect("store opens");
    for (via, trace_id) in [
        ("fetch", &sent.fetch),
        ("form", &sent.form),
        ("beacon", &sent.beacon),
    ] {
        let record = store
            .get(trace_id)
            .unwrap()
            .unwrap_or_else(|| panic!("the {via} submission {trace_id} is not stored"));
        let payload: Value = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(payload["via"], via, "{payload}");
        assert_eq!(payload["email"], format!("{via}@example.com"), "{payload}");
        assert_eq!(payload["message"], format!("Hello by {via}"), "{payload}");
        assert_eq!(record.enrichment.form_type, "contact");
    }
    for trace_id in &sent.refused {
        assert!(store.get(trace_id).unwrap().is_none(), "{trace_id} stored");
    }
}

/// The trace IDs the page used.
struct Sent {
    fetch: String,
    form: String,
    beacon: String,
    /// Posts from the origin that is not allowed.
    refused: Vec<String>,
}

async fn submit_from_both_origins(browser: Session, site: String, other: String) -> Sent {
    browser.goto(&format!("{site}/")).await;

    let fetch = browser
        .fill_and_click("fetch", "#send-fetch", WAIT_FOR_STATUS)
        .await;
    assert_eq!(fetch["result"], "ok", "{fetch}");
    let fetch_id = fetch["traceId"].as_str().unwrap().to_owned();
    assert!(
        fetch["text"].as_str().unwrap().contains(&fetch_id),
        "the page read the receipt of its fetch: {fetch}"
    );

    let form = browser
        .fill_and_click("form", "button[type=submit]", WAIT_FOR_RECEIPT_FRAME)
        .await;
    assert_eq!(form["result"], "ok", "{form}");

    let beacon = browser
        .fill_and_click("beacon", "#send-beacon", NO_WAIT)
        .await;
    assert_eq!(
        beacon["result"], "ok",
        "the browser queued the beacon: {beacon}"
    );

    // The same page served from an origin the service does not allow.
    browser.goto(&format!("{other}/")).await;
    let refused = ["elsewhere-json-0001", "elsewhere-text-0001"];
    let outcomes = browser.run(FETCH_FROM_ELSEWHERE, json!(refused)).await;
    assert_eq!(
        outcomes,
        json!(["rejected TypeError", "rejected TypeError"]),
        "fetch from an origin that is not allowed must reject \
         (JSON: the preflight is refused; text/plain: 403 without CORS headers)"
    );

    let id = |v: &Value| v["traceId"].as_str().unwrap().to_owned();
    Sent {
        fetch: fetch_id,
        form: id(&form),
        beacon: id(&beacon),
        refused: refused.map(String::from).to_vec(),
    }
}

/// Fills the form as a person would and clicks the `selector` button; the wait script appended
/// to it calls `finish()` once the page has answered. Answers the trace ID the form carried and
/// the page's status line.
const FILL_AND_CLICK: &str = r#"
const [[via, selector], done] = arguments;
const form = document.getElementById("contact");
const status = document.getElementById("status");
form.elements.email.value = via + "@example.com";
form.elements.message.value = "Hello by " + via;
const traceId = form.elements.trace_id.value;
const finish = () => done({ traceId, result: status.dataset.result, text: status.textContent });
"#;

/// fetch: the page shows "ok" or "error" in its status line once the answer is in.
const WAIT_FOR_STATUS: &str = r#"
new MutationObserver((_, observer) => {
  if (["ok", "error"].includes(status.dataset.result)) { observer.disconnect(); finish(); }
}).observe(status, { attributes: true, childList: true, subtree: true });
document.querySelector(selector).click();
"#;

/// Plain form post: the receipt loads into the frame (the page's own handler runs first).
const WAIT_FOR_RECEIPT_FRAME: &str = r#"
document.querySelector("iframe[name=receipt]").addEventListener("load", finish, { once: true });
document.querySelector(selector).click();
"#;

/// sendBeacon: queued synchronously; the service is asked later whether it arrived.
const NO_WAIT: &str = r#"
document.querySelector(selector).click();
finish();
"#;

/// Two posts from the wrong origin: one that needs a preflight, one that does not.
const FETCH_FROM_ELSEWHERE: &str = r#"
const [[jsonKey, textKey], done] = arguments;
const endpoint = document.getElementById("contact").action;
const outcome = (p) => p.then((r) => `resolved ${r.status}`, (e) => `rejected ${e.name}`);
Promise.all([
  outcome(fetch(endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Idempotency-Key": jsonKey },
    body: JSON.stringify({ email: "x@example.com", message: "from elsewhere" }),
  })),
  outcome(fetch(endpoint, {
    method: "POST",
    headers: { "Content-Type": "text/plain" },
    body: JSON.stringify({ email: "x@example.com", message: "from elsewhere", trace_id: textKey }),
  })),
]).then(done);
"#;

/// Serves the example page, its form pointed at `endpoint`, at `/` on `listener`.
fn serve_page(listener: tokio::net::TcpListener, endpoint: &str) {
    assert_eq!(
        PAGE.matches(PLACEHOLDER_ENDPOINT).count(),
        1,
        "the example page's form action is the placeholder endpoint"
    );
    let page = PAGE.replace(PLACEHOLDER_ENDPOINT, endpoint);
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// Waits until the service counts `n` accepted submissions (the beacon has no answer to wait on).
async fn wait_for_accepted(app: &common::TestApp, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, health) = app.get_json("/health/detailed").await;
        if health["counts"]["accepted"].as_u64() >= Some(n) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `outbox_http_requests_total` for one route and status, from `/metrics`.
async fn metric_value(app: &common::TestApp, route: &str, status: &str) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("outbox_http_requests_total{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")))
        .filter(|l| l.contains(&format!("status=\"{status}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Where chromium and chromedriver are.
struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// Finds the browser, or explains loudly why the test does not run (and fails under CI).
fn browser_tools() -> Option<Tools> {
    let chromium = find_in_path("chromium").or_else(|| find_in_path("chromium-browser"));
    let chromedriver = find_in_path("chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        _ => {
            let why = "chromium and chromedriver are not installed \
                       (Debian: apt-get install chromium chromium-driver)";
            if std::env::var_os("CI").is_some() {
                panic!("the browser test must run in CI: {why}");
            }
            eprintln!("\n********\nSKIP browser test: {why}\n********\n");
            None
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A chromedriver process on a free loopback port; killed when dropped.
struct ChromeDriver {
    child: Child,
    base: String,
}

impl ChromeDriver {
    fn start(tools: &Tools) -> ChromeDriver {
        let port = free_port();
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        ChromeDriver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits for chromedriver, then opens headless Chromium with a fresh profile.
    async fn new_session(&self, tools: &Tools) -> Session {
        let http = reqwest::Client::builder()
            .timeout(PATIENCE)
            .build()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = http.get(format!("{}/status", self.base)).send().await;
            if let Ok(r) = status {
                let body: Value = r.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = chromium_args(profile.path());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": tools.chromium, "args": args},
        }}});
        let created = command(
            &http,
            reqwest::Method::POST,
            format!("{}/session", self.base),
            caps,
        )
        .await;
        let id = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Session {
            http,
            url: format!("{}/session/{id}", self.base),
            _profile: std::sync::Arc::new(profile),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1024,768",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// One browser session (one Chromium with its own profile directory).
#[derive(Clone)]
struct Session {
    http: reqwest::Client,
    url: String,
    _profile: std::sync::Arc<tempfile::TempDir>,
}

impl Session {
    async fn goto(&self, url: &str) {
        command(
            &self.http,
            reqwest::Method::POST,
            format!("{}/url", self.url),
            json!({"url": url}),
        )
        .await;
    }

    /// Runs an asynchronous script; its last argument is the callback that answers.
    async fn run(&self, script: &str, arg: Value) -> Value {
        let body = json!({"script": script, "args": [arg]});
        command(
            &self.http,
            reqwest::Method::POST,
            format!("{}/execute/async", self.url),
            body,
        )
        .await
    }

    async fn fill_and_click(&self, via: &str, selector: &str, wait: &str) -> Value {
        self.run(&format!("{FILL_AND_CLICK}{wait}"), json!([via, selector]))
            .await
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

/// Sends one WebDriver command and returns its `value`, failing on a WebDriver error.
async fn command(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> Value {
    let response = http
        .request(method, &url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
    let ok = response.status().is_success();
    let mut answer: Value = response.json().await.expect("WebDriver answers JSON");
    let value = answer["value"].take();
    assert!(ok, "WebDriver {url} failed: {value}");
    value
}
