//! The shipped nginx snippets in front of a real outbox, with Debian's real nginx.
//!
//! The test writes an nginx.conf in a temporary directory that includes
//! `ops/nginx-outbox-upstream.conf` at http level (its upstream port replaced by the test's)
//! and `ops/nginx-outbox.conf` unchanged inside a `server` block, checks it with `nginx -t`,
//! runs nginx in the foreground on a loopback port in front of the `outbox` binary, and
//! checks what the snippet promises: the client's real address is stored; forged
//! `X-Forwarded-For`, `Forwarded` and `X-Real-IP` change neither `client_ip` nor the
//! rate-limit key; nginx's own errors (413, 502) are outbox-shaped JSON with CORS headers;
//! `/outbox.js` passes, gzipped, and revalidates with the (weakened) ETag.
//!
//! On loopback the client and nginx would share 127.0.0.1, and a trusted client may forward
//! for others. So nginx connects to outbox from 127.0.0.2 (`proxy_bind` at http level, from
//! the test's config) and outbox trusts only that address; the client stays 127.0.0.1.
//!
//! Without nginx the test says SKIP loudly and passes, except under CI (`CI` set), where it
//! fails: `.ci/run` installs Debian's `nginx`.

use crate::harness;
use crate::harness::{bin, free_port, root, tools, turn, wait_healthy, KillOnDrop};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://www.example.com";

/// Writes the test's nginx.conf (and the upstream file pointed at `outbox_port`) into `dir`.
fn write_config(dir: &Path, nginx_port: u16, outbox_port: u16) -> PathBuf {
    let shipped = std::fs::read_to_string(root().join("ops/nginx-outbox-upstream.conf")).unwrap();
    assert_eq!(
        shipped.matches("server 127.0.0.1:8001;").count(),
        1,
        "the upstream file names outbox's default address once"
    );
    let upstream = dir.join("upstream.conf");
    let ours = shipped.replace("127.0.0.1:8001", &format!("127.0.0.1:{outbox_port}"));
    std::fs::write(&upstream, ours).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\nhttp {{\n\
         access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         proxy_bind 127.0.0.2;\ninclude {up};\n\
         server {{\nlisten 127.0.0.1:{nginx_port};\ninclude {snippet};\n}}\n}}\n",
        up = upstream.display(),
        snippet = root().join("ops/nginx-outbox.conf").display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

fn nginx_cmd(nginx: &Path, dir: &Path, conf: &Path) -> Command {
    let mut c = Command::new(nginx);
    c.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(conf);
    c
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, child: &mut KillOnDrop, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited early: {status}\n{log}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nginx did not listen on {port}");
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    body: String,
    headers: &[(&str, String)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("origin", ORIGIN)
        .header("idempotency-key", id)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.expect("nginx answers");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, headers, v)
}

fn stored_client_ip(data: &Path, id: &str) -> String {
    let run = harness::ops::outbox(data, "inspect", &[id, "--json"]);
    assert_eq!(run.code, 0, "inspect {id}: {}", run.stderr);
    run.json()["enrichment"]["client_ip"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An nginx error of ours: JSON in outbox's shape, readable by a page (CORS).
fn assert_page_readable_error(status: u16, headers: &reqwest::header::HeaderMap, v: &Value) {
    assert_eq!(headers["content-type"], "application/json", "{status}");
    assert_eq!(headers["access-control-allow-origin"], "*", "{status}");
    assert!(v["error"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "exactly error and message: {v}"
    );
}

#[tokio::test]
async fn the_shipped_snippet_loads_and_keeps_the_client_address_honest() {
    let Some(nginx) = tools::need("the nginx test", "nginx", "Debian: apt-get install nginx")
    else {
        return;
    };
    let _turn = turn().await;
    let tmp = tempfile::tempdir().unwrap();
    let (data, ngx_dir) = (tmp.path().join("data"), tmp.path().join("nginx"));
    std::fs::create_dir(&ngx_dir).unwrap();
    let (outbox_port, nginx_port) = (free_port(), free_port());

    let conf = write_config(&ngx_dir, nginx_port, outbox_port);
    let check = nginx_cmd(&nginx, &ngx_dir, &conf)
        .arg("-t")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t refuses the shipped snippet:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The default client-ip-header (x-forwarded-for); a tight limit, so the count is exact.
    let mut outbox = KillOnDrop(
        Command::new(bin())
            .args(["serve", "--listen", &format!("127.0.0.1:{outbox_port}")])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--trusted-proxies",
                "127.0.0.2/32",
                "--cors-origins",
                ORIGIN,
            ])
            .args(["--rate-limit", "1/m", "--rate-burst", "10"])
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn outbox"),
    );
    wait_healthy(outbox_port, &mut outbox);
    let mut proxy = KillOnDrop(
        nginx_cmd(&nginx, &ngx_dir, &conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx"),
    );
    wait_listening(nginx_port, &mut proxy, &ngx_dir);
    let url = format!("http://127.0.0.1:{nginx_port}/api/collect");
    let client = reqwest::Client::new();
    let form =
        |n: usize| json!({"email": format!("n{n}@example.com"), "message": "hi"}).to_string();

    // A plain post through nginx stores the client's own address.
    let (s, h, _) = post(&client, &url, "nginx-plain-0001", form(0), &[]).await;
    assert_eq!(s, 202);
    assert_eq!(
        h["access-control-allow-origin"], ORIGIN,
        "outbox's CORS passes"
    );
    assert_eq!(stored_client_ip(&data, "nginx-plain-0001"), "127.0.0.1");

    // Forged headers, different in every post: neither client_ip nor the rate-limit key move.
    let mut accepted = Vec::new();
    let mut limited = 0;
    for n in 1..=60 {
        let forged = [
            ("x-forwarded-for", format!("203.0.113.{n}")),
            ("forwarded", format!("for=198.51.100.{n}")),
            ("x-real-ip", format!("192.0.2.{n}")),
        ];
        let id = format!("nginx-forged-{n:04}");
        match post(&client, &url, &id, form(n), &forged).await {
            (202, _, _) => accepted.push(id),
            (429, h, v) => {
                assert_eq!(
                    v["error"], "rate_limited",
                    "outbox's own answer passes: {v}"
                );
                assert_eq!(h["access-control-allow-origin"], ORIGIN);
                limited += 1;
            }
            (s, _, v) => panic!("post {n}: {s} {v}"),
        }
    }
    // One client, one budget: the burst of 10 less the first post (one more may have been
    // earned if this took over a minute).
    assert!(
        (9..=10).contains(&accepted.len()) && accepted.len() + limited == 60,
        "{} accepted, {limited} refused",
        accepted.len()
    );
    for id in &accepted {
        assert_eq!(stored_client_ip(&data, id), "127.0.0.1", "{id}");
    }

    // nginx's own 413: outbox's shape, CORS headers, JSON.
    let big = json!({"message": "x".repeat(100 * 1024)}).to_string();
    let (s, h, v) = post(&client, &url, "nginx-big-00001", big, &[]).await;
    assert_eq!(s, 413);
    assert_eq!(v["error"], "body_too_large");
    assert_page_readable_error(s, &h, &v);

    // The browser client through the snippet: gzipped, its bytes and ETag from outbox.
    let js = format!("http://127.0.0.1:{nginx_port}/outbox.js");
    let r = client
        .get(&js)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["cache-control"], "public, max-age=3600");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let gzipped = r.bytes().await.unwrap();
    assert_eq!(&gzipped[..2], [0x1f, 0x8b], "a gzip stream");
    eprintln!("outbox.js through nginx: {} bytes gzipped", gzipped.len());
    assert!(gzipped.len() <= 4096, "{} bytes", gzipped.len());
    let plain = client.get(&js).send().await.unwrap();
    assert_eq!(
        plain.bytes().await.unwrap().as_ref(),
        outbox::http::client_script::SCRIPT.as_bytes()
    );
    let again = client
        .get(&js)
        .header("accept-encoding", "gzip")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        304,
        "revalidated with the tag nginx handed out ({etag})"
    );

    // outbox down: nginx's 502 is JSON a page can read too.
    outbox.0.kill().unwrap();
    outbox.0.wait().unwrap();
    let (s, h, v) = post(&client, &url, "nginx-down-0001", form(0), &[]).await;
    assert_eq!(s, 502);
    assert_eq!(v["error"], "outbox_unreachable");
    assert_eq!(h["retry-after"], "30");
    assert_page_readable_error(s, &h, &v);
}
