//! `GET /outbox.js` from the real binary: the exact bytes of `src/http/outbox.js`, a
//! JavaScript content type, a strong ETag and a 304 for it, an hour of caching, `nosniff`, and
//! CORS for any origin (a page's `<script crossorigin integrity=...>` needs it). The integrity
//! value the README and the example page give must be the served file's, so it cannot go
//! stale; and the file stays within its 4 KB gzipped budget.

use crate::harness::{free_port, root, spawn_binary_async, tools};
use outbox::http::client_script::{integrity, SCRIPT};
use sha2::{Digest, Sha256};

/// The budget the issue set for the script, gzipped.
const GZIP_BUDGET: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_is_served_as_built_with_its_etag_caching_and_cors() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = spawn_binary_async(&tmp.path().join("data"), port, &[]).await;
    let url = format!("http://127.0.0.1:{port}/outbox.js");
    let client = reqwest::Client::new();

    let r = client
        .get(&url)
        .header("origin", "https://www.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "public, max-age=3600");
    assert_eq!(h["access-control-allow-origin"], "*");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        etag,
        format!("\"{:x}\"", Sha256::digest(SCRIPT)),
        "strong, from the bytes"
    );
    let body = r.bytes().await.unwrap();
    let file = std::fs::read(root().join("src/http/outbox.js")).unwrap();
    assert_eq!(
        body.as_ref(),
        file.as_slice(),
        "the repository's file, byte for byte"
    );

    let again = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    let stale = client
        .get(&url)
        .header("if-none-match", "\"an-older-release\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200, "another ETag gets the script");
}

#[test]
fn the_documented_integrity_value_is_the_served_files() {
    let want = format!("integrity=\"{}\"", integrity());
    for doc in ["README.md", "ops/site-example/index.html"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        let found: Vec<&str> = text
            .match_indices("integrity=\"")
            .map(|(i, _)| &text[i..i + text[i + 11..].find('"').unwrap() + 12])
            .collect();
        assert!(!found.is_empty(), "{doc} gives the integrity value");
        for f in found {
            assert_eq!(
                f, want,
                "{doc}: the integrity value is stale; outbox.js is now {want}"
            );
        }
    }
}

#[test]
fn the_script_stays_within_its_gzipped_budget() {
    let Some(gzip) = tools::need("the script's size budget", "gzip", "apt-get install gzip") else {
        return;
    };
    let out = std::process::Command::new(gzip)
        .args(["-9", "-c"])
        .arg(root().join("src/http/outbox.js"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let size = out.stdout.len();
    eprintln!("outbox.js: {} bytes, {size} bytes gzipped", SCRIPT.len());
    assert!(
        size <= GZIP_BUDGET,
        "outbox.js is {size} bytes gzipped, over {GZIP_BUDGET}"
    );
}
