//! Shared harness of the browser tests: headless Chromium driven through chromedriver with the
//! few WebDriver commands the tests need (new session, go to a URL, run a script, end the
//! session), spoken as plain JSON over the HTTP client the crate already has, so `cargo test`
//! stays the single test command; and the example page served from a test origin. When
//! chromium or chromedriver is missing, [`browser_tools`] prints a loud SKIP, except under CI
//! (`CI` set), where it fails: `.ci/run` installs them.
#![allow(dead_code)]

use crate::harness::{free_port, tools, turn};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example page, with this placeholder as outbox's address (its script and form action).
pub const PAGE: &str = include_str!("../../ops/site-example/index.html");
pub const PLACEHOLDER: &str = "https://forms.example.com";

/// Bound on every wait in this file, so a broken browser fails the test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Serves the example page at `/` on `listener`, its form posting to `{outbox}/api/collect`
/// and its script loaded from `{outbox}/outbox.js`.
pub fn serve_page(listener: tokio::net::TcpListener, outbox: &str) {
    serve_page_with_script_from(listener, outbox, outbox)
}

/// [`serve_page`], the script loaded from `{script}/outbox.js` instead: the site also serves
/// its own copy at `/outbox.js` (the same bytes, so the page's integrity value holds).
pub fn serve_page_with_script_from(listener: tokio::net::TcpListener, outbox: &str, script: &str) {
    assert_eq!(
        PAGE.matches(PLACEHOLDER).count(),
        2,
        "the example page names outbox's placeholder address twice: script and form action"
    );
    let page = PAGE
        .replace(
            &format!("{PLACEHOLDER}/outbox.js"),
            &format!("{script}/outbox.js"),
        )
        .replace(PLACEHOLDER, outbox);
    serve_html(listener, page);
}

/// [`serve_page`], the script loaded as an ES module (`<script type="module">`).
pub fn serve_page_as_module(listener: tokio::net::TcpListener, outbox: &str) {
    let classic = format!("<script src=\"{PLACEHOLDER}/outbox.js\"");
    assert_eq!(PAGE.matches(&classic).count(), 1, "the page's script tag");
    let module = format!("<script type=\"module\" src=\"{outbox}/outbox.js\"");
    serve_html(
        listener,
        PAGE.replace(&classic, &module).replace(PLACEHOLDER, outbox),
    );
}

/// Serves `page` at `/`, and the site's own copy of the script at `/outbox.js`.
fn serve_html(listener: tokio::net::TcpListener, page: String) {
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || async move { axum::response::Html(page) }),
        )
        .route(
            "/outbox.js",
            axum::routing::get(|| async {
                let mut resp = axum::response::IntoResponse::into_response(
                    outbox::http::client_script::SCRIPT,
                );
                resp.headers_mut()
                    .insert("content-type", "text/javascript".parse().unwrap());
                resp
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// Where chromium and chromedriver are, and this test's [`turn`] (held while it lives): each
/// browser test starts a Chromium, and compares the process-wide `outbox_http_requests_total`
/// before and after its own posts, which another browser test's posts would move.
pub struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Finds the browser and waits for this test's turn, or explains loudly why the test does not
/// run (and fails under CI).
pub async fn browser_tools() -> Option<Tools> {
    let chromium = tools::find("chromium").or_else(|| tools::find("chromium-browser"));
    let chromedriver = tools::find("chromedriver");
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        let why = "chromium and chromedriver are not installed \
                   (Debian: apt-get install chromium chromium-driver)";
        tools::runnable("the browser test", Some(why.into()));
        return None;
    };
    Some(Tools {
        chromium,
        chromedriver,
        _turn: turn().await,
    })
}

/// A chromedriver process on a free loopback port; killed when dropped.
pub struct ChromeDriver {
    child: Child,
    base: String,
}

impl ChromeDriver {
    pub fn start(tools: &Tools) -> ChromeDriver {
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
    pub async fn new_session(&self, tools: &Tools) -> Session {
        self.new_session_with_javascript(tools, true).await
    }

    /// A session whose pages run their scripts, or not (a visitor with JavaScript off;
    /// WebDriver's own scripts still run).
    pub async fn new_session_with_javascript(&self, tools: &Tools, javascript: bool) -> Session {
        let on = if javascript { 1 } else { 2 };
        self.new_session_with_prefs(
            tools,
            json!({"profile.managed_default_content_settings.javascript": on}),
        )
        .await
    }

    /// A session with these Chromium preferences (content settings and the like).
    pub async fn new_session_with_prefs(&self, tools: &Tools, prefs: Value) -> Session {
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
            "goog:chromeOptions": {"binary": tools.chromium, "args": args, "prefs": prefs},
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
pub struct Session {
    http: reqwest::Client,
    url: String,
    _profile: std::sync::Arc<tempfile::TempDir>,
}

impl Session {
    pub async fn goto(&self, url: &str) {
        command(
            &self.http,
            reqwest::Method::POST,
            format!("{}/url", self.url),
            json!({"url": url}),
        )
        .await;
    }

    /// Runs an asynchronous script; its last argument is the callback that answers.
    pub async fn run(&self, script: &str, arg: Value) -> Value {
        let body = json!({"script": script, "args": [arg]});
        command(
            &self.http,
            reqwest::Method::POST,
            format!("{}/execute/async", self.url),
            body,
        )
        .await
    }

    /// Makes the page itself the context of the next scripts again.
    pub async fn goto_parent(&self) {
        command(
            &self.http,
            reqwest::Method::POST,
            format!("{}/frame/parent", self.url),
            json!({}),
        )
        .await;
    }

    /// Makes the `index`th frame of the page the context of the next scripts.
    pub async fn enter_frame(&self, index: u32) {
        command(
            &self.http,
            reqwest::Method::POST,
            format!("{}/frame", self.url),
            json!({"id": index}),
        )
        .await;
    }

    /// Navigates, answering false when the page could not be loaded (the browser is offline).
    pub async fn try_goto(&self, url: &str) -> bool {
        let r = self
            .http
            .post(format!("{}/url", self.url))
            .json(&json!({"url": url}))
            .send()
            .await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// Runs a Chrome DevTools Protocol command on the current tab.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let body = json!({"cmd": cmd, "params": params});
        let url = format!("{}/goog/cdp/execute", self.url);
        command(&self.http, reqwest::Method::POST, url, body).await
    }

    /// Takes the current tab off the network, or puts it back, with Chromium's own emulation
    /// (every request of the tab fails, the page's own reloads included).
    pub async fn set_offline(&self, offline: bool) {
        self.cdp("Network.enable", json!({})).await;
        let conditions = json!({"offline": offline, "latency": 0,
            "downloadThroughput": -1, "uploadThroughput": -1});
        self.cdp("Network.emulateNetworkConditions", conditions)
            .await;
    }

    /// Opens a new tab and answers its handle (the current tab stays current).
    pub async fn new_tab(&self) -> String {
        let url = format!("{}/window/new", self.url);
        let got = command(
            &self.http,
            reqwest::Method::POST,
            url,
            json!({"type": "tab"}),
        )
        .await;
        got["handle"].as_str().expect("a window handle").to_owned()
    }

    /// The handle of the current tab.
    pub async fn tab(&self) -> String {
        let url = format!("{}/window", self.url);
        let got = command(&self.http, reqwest::Method::GET, url, Value::Null).await;
        got.as_str().expect("a window handle").to_owned()
    }

    pub async fn switch_to(&self, handle: &str) {
        let url = format!("{}/window", self.url);
        command(
            &self.http,
            reqwest::Method::POST,
            url,
            json!({"handle": handle}),
        )
        .await;
    }

    /// Closes the current tab, as a visitor does (the page gets pagehide).
    pub async fn close_tab(&self) {
        let url = format!("{}/window", self.url);
        command(&self.http, reqwest::Method::DELETE, url, Value::Null).await;
    }

    pub async fn quit(&self) {
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
    let request = http.request(method, &url);
    let request = if body.is_null() {
        request
    } else {
        request.json(&body)
    };
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
    let ok = response.status().is_success();
    let mut answer: Value = response.json().await.expect("WebDriver answers JSON");
    let value = answer["value"].take();
    assert!(ok, "WebDriver {url} failed: {value}");
    value
}
