//! Intake through real TCP: content types, error codes, idempotency, enrichment, restart.

use crate::harness;
use crate::harness::{spawn_app, spawn_app_in};
use outbox::store::{Status, Store};
use serde_json::{json, Value};

async fn body(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap())
}

/// Stops the app and opens its store to look at what was written.
async fn stored(app: harness::TestApp) -> (Option<tempfile::TempDir>, Store) {
    let dir = app.data_dir.clone();
    let tmp = app.stop().await;
    (tmp, Store::open(&dir).unwrap())
}

#[tokio::test]
async fn every_accepted_content_type_is_stored_with_its_fields() {
    let app = spawn_app(&[]).await;
    fn key(k: &'static str) -> [(&'static str, &'static str); 1] {
        [("Idempotency-Key", k)]
    }
    let (s, _) = body(
        app.post_json(
            &json!({"email": "a@example.com", "n": [1, 2]}),
            &key("ct-json-0001"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 202);
    let (s, _) = body(
        app.post_raw(
            "text/plain;charset=UTF-8",
            br#"{"email":"b@example.com"}"#.to_vec(),
            &key("ct-text-0001"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 202);
    let form = b"email=c%40example.com&topic=a&topic=b".to_vec();
    let (s, _) = body(
        app.post_raw(
            "application/x-www-form-urlencoded",
            form,
            &key("ct-form-0001"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 202);
    let multipart = b"--b0\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nd@example.com\r\n--b0--\r\n".to_vec();
    let (s, _) = body(
        app.post_raw(
            "multipart/form-data; boundary=b0",
            multipart,
            &key("ct-mult-0001"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 202);

    let (_tmp, store) = stored(app).await;
    let payload = |id: &str| -> Value {
        serde_json::from_str(store.get(id).unwrap().unwrap().payload.as_deref().unwrap()).unwrap()
    };
    assert_eq!(
        payload("ct-json-0001"),
        json!({"email": "a@example.com", "n": [1, 2]})
    );
    assert_eq!(payload("ct-text-0001"), json!({"email": "b@example.com"}));
    assert_eq!(
        payload("ct-form-0001"),
        json!({"email": "c@example.com", "topic": ["a", "b"]})
    );
    assert_eq!(payload("ct-mult-0001"), json!({"email": "d@example.com"}));
    let c = store.counts().unwrap();
    assert_eq!((c.accepted, c.pending), (4, 4));
}

/// content type, body, extra headers, expected status, expected error code
type Case = (
    &'static str,
    Vec<u8>,
    Vec<(&'static str, &'static str)>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_requests_get_their_status_and_a_json_error_naming_the_fix() {
    let app = spawn_app(&["--max-body", "1KiB"]).await;
    let deep = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
    let many: serde_json::Map<String, Value> =
        (0..300).map(|i| (format!("f{i}"), json!(1))).collect();
    let file = b"--b0\r\nContent-Disposition: form-data; name=\"cv\"; filename=\"cv.pdf\"\r\n\r\nxx\r\n--b0--\r\n".to_vec();
    let cases: Vec<Case> = vec![
        (
            "application/json",
            vec![b'{'; 2000],
            vec![],
            413,
            "body_too_large",
        ),
        (
            "application/json",
            deep.into_bytes(),
            vec![],
            400,
            "too_deep",
        ),
        (
            "application/json",
            Value::Object(many).to_string().into_bytes(),
            vec![],
            413,
            "body_too_large",
        ),
        (
            "application/json",
            b"{\"a\":\"\xff\"}".to_vec(),
            vec![],
            400,
            "invalid_utf8",
        ),
        (
            "application/json",
            b"[1,2]".to_vec(),
            vec![],
            400,
            "not_an_object",
        ),
        (
            "application/json",
            b"{\"a\":".to_vec(),
            vec![],
            400,
            "invalid_json",
        ),
        (
            "application/json",
            b"{\"a\":1,\"a\":2}".to_vec(),
            vec![],
            400,
            "duplicate_key",
        ),
        (
            "application/json",
            b"{}".to_vec(),
            vec![],
            400,
            "empty_submission",
        ),
        (
            "application/xml",
            b"<a/>".to_vec(),
            vec![],
            415,
            "unsupported_media_type",
        ),
        (
            "multipart/form-data; boundary=b0",
            file,
            vec![],
            415,
            "file_upload_not_accepted",
        ),
        (
            "application/json",
            b"{\"a\":1}".to_vec(),
            vec![("Idempotency-Key", "short")],
            400,
            "invalid_trace_id",
        ),
        (
            "application/json",
            b"{\"a\":1}".to_vec(),
            vec![("X-Trace-Id", "bad id with spaces")],
            400,
            "invalid_trace_id",
        ),
        (
            "application/json",
            b"{\"trace_id\":42}".to_vec(),
            vec![],
            400,
            "invalid_trace_id",
        ),
        (
            "application/json",
            b"{\"form_type\":\"no spaces!\"}".to_vec(),
            vec![],
            400,
            "invalid_form_type",
        ),
    ];
    for (ct, b, headers, status, code) in cases {
        let r = app.post_raw(ct, b, &headers).await;
        assert_eq!(r.headers()["content-type"], "application/json", "{code}");
        let (s, v) = body(r).await;
        assert_eq!((s, v["error"].as_str().unwrap()), (status, code), "{v}");
        assert!(v["message"].as_str().unwrap().len() > 10, "{v}");
    }
    let many_small: serde_json::Map<String, Value> =
        (0..257).map(|i| (format!("{i}"), json!(0))).collect();
    let app2 = spawn_app(&[]).await;
    let (s, v) = body(app2.post_json(&Value::Object(many_small), &[]).await).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (400, "too_many_fields"));
    let (s, v) = app.get_json("/nope").await;
    assert_eq!((s, v["error"].as_str().unwrap()), (404, "not_found"));
    let (_t, store) = stored(app).await;
    assert_eq!(
        store.counts().unwrap().accepted,
        0,
        "nothing invalid is stored"
    );
}

#[tokio::test]
async fn a_repeated_trace_id_returns_the_original_receipt_and_a_different_payload_conflicts() {
    let app = spawn_app(&[]).await;
    let h = [("Idempotency-Key", "dup-trace-0001")];
    let (s1, first) = body(
        app.post_json(&json!({"email": "a@example.com", "name": "Jo"}), &h)
            .await,
    )
    .await;
    assert_eq!(s1, 202);
    assert_eq!(first["status"], "accepted");
    assert_eq!(first["trace_id"], "dup-trace-0001");
    // Same fields in another order and spacing: the same normalized payload.
    let same = br#"{ "name": "Jo",  "email": "a@example.com" }"#.to_vec();
    let (s2, second) = body(app.post_raw("application/json", same, &h).await).await;
    assert_eq!(s2, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["received_at"], first["received_at"]);
    let (s3, conflict) = body(app.post_json(&json!({"email": "b@example.com"}), &h).await).await;
    assert_eq!(
        (s3, conflict["error"].as_str().unwrap()),
        (409, "idempotency_conflict")
    );
    // X-Trace-Id and a body trace_id are idempotency keys too.
    let (s, _) = body(
        app.post_json(&json!({"a": 1}), &[("X-Trace-Id", "x-trace-000001")])
            .await,
    )
    .await;
    assert_eq!(s, 202);
    let (s, _) = body(
        app.post_json(&json!({"a": 1}), &[("X-Trace-Id", "x-trace-000001")])
            .await,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = body(
        app.post_json(&json!({"a": 1, "trace_id": "body-trace-0001"}), &[])
            .await,
    )
    .await;
    assert_eq!(
        (s, v["trace_id"].as_str().unwrap()),
        (202, "body-trace-0001")
    );
    let (_t, store) = stored(app).await;
    let c = store.counts().unwrap();
    assert_eq!(c.accepted, 3, "duplicates are not stored twice");
}

#[tokio::test]
async fn concurrent_posts_of_one_trace_id_store_it_once() {
    let app = spawn_app(&[]).await;
    let payload = json!({"email": "race@example.com"});
    let h = [("Idempotency-Key", "race-trace-01")];
    let posts = (0..16).map(|_| app.post_json(&payload, &h));
    let statuses: Vec<u16> = futures_util::future::join_all(posts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        15,
        "{statuses:?}"
    );
    let (_t, store) = stored(app).await;
    assert_eq!(store.counts().unwrap().accepted, 1);
}

#[tokio::test]
async fn enrichment_is_kept_apart_and_forwarded_headers_are_only_believed_from_trusted_proxies() {
    // The test client connects from 127.0.0.1, trusted by default.
    let app = spawn_app(&[]).await;
    let long_ua = "U".repeat(600);
    let headers = [
        ("Idempotency-Key", "enrich-trust-1"),
        ("X-Forwarded-For", "6.6.6.6, 198.51.100.7"),
        ("User-Agent", long_ua.as_str()),
    ];
    let payload = json!({"email": "a@example.com", "client_ip": "1.2.3.4", "src": "form"});
    assert_eq!(app.post_json(&payload, &headers).await.status(), 202);
    let (_t, store) = stored(app).await;
    let r = store.get("enrich-trust-1").unwrap().unwrap();
    assert_eq!(
        r.enrichment.client_ip, "198.51.100.7",
        "rightmost untrusted hop"
    );
    assert_eq!(r.enrichment.user_agent.as_deref().map(str::len), Some(512));
    assert_eq!(r.enrichment.src, "site-proxy");
    assert_eq!(
        r.enrichment.form_type, "generic",
        "email plus other fields is no newsletter"
    );
    assert_eq!(r.enrichment.trace_id, "enrich-trust-1");
    assert!(r.enrichment.received_at.ends_with('Z') && r.enrichment.received_at.len() == 24);
    let stored_payload: Value = serde_json::from_str(r.payload.as_deref().unwrap()).unwrap();
    assert_eq!(
        stored_payload, payload,
        "the form's own fields are untouched"
    );
    assert_eq!(r.status, Status::Pending);
    drop(store);

    // Nothing trusted: a spoofed X-Forwarded-For from the peer is ignored.
    let app = spawn_app(&["--trusted-proxies", "10.0.0.0/8", "--source", "landing"]).await;
    let h = [
        ("Idempotency-Key", "enrich-spoof-1"),
        ("X-Forwarded-For", "6.6.6.6"),
    ];
    assert_eq!(
        app.post_json(&json!({"message": "hi"}), &h).await.status(),
        202
    );
    let (_t, store) = stored(app).await;
    let r = store.get("enrich-spoof-1").unwrap().unwrap();
    assert_eq!(r.enrichment.client_ip, "127.0.0.1");
    assert_eq!(
        (r.enrichment.src.as_str(), r.enrichment.form_type.as_str()),
        ("landing", "contact")
    );
}

#[tokio::test]
async fn a_restart_keeps_every_accepted_submission_and_its_idempotency() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let app = spawn_app_in(&dir, &[]).await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = app
            .post_json(&json!({"email": format!("u{i}@example.com")}), &[])
            .await;
        let (s, v) = body(r).await;
        assert_eq!(s, 202);
        ids.push((i, v["trace_id"].as_str().unwrap().to_owned()));
    }
    app.stop().await;
    let app = spawn_app_in(&dir, &[]).await;
    let (_, detail) = app.get_json("/health/detailed").await;
    assert_eq!(detail["counts"]["accepted"], 50);
    assert_eq!(detail["counts"]["pending"], 50);
    assert_eq!(detail["accounting_balanced"], true);
    let (i, id) = &ids[7];
    let again = app
        .post_json(
            &json!({"email": format!("u{i}@example.com")}),
            &[("Idempotency-Key", id)],
        )
        .await;
    assert_eq!(
        again.status(),
        200,
        "a trace ID from before the restart is still recognised"
    );
    app.stop().await;
}

#[tokio::test]
async fn health_endpoints_report_liveness_readiness_and_details() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get_json("/health").await.0, 200);
    let (s, ready) = app.get_json("/health/ready").await;
    assert_eq!(s, 200);
    assert!(
        ready["warnings"][0]
            .as_str()
            .unwrap()
            .contains("delivery off"),
        "{ready}"
    );
    let (s, d) = app.get_json("/health/detailed").await;
    assert_eq!(s, 200);
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d["delivery"]["mode"], "off");
    assert!(d["store"]["free_disk_bytes"].as_u64().unwrap() > 0);
    assert!(d["counts"].is_object() && d["uptime_seconds"].is_u64());
    app.stop().await;
}

/// The request log (JSON lines on stdout): one line per request with its status, and for a
/// submission its trace ID and form type, on success and on error alike; never a field value.
#[tokio::test]
async fn the_request_log_names_each_submission_and_never_its_fields() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("stdout.log");
    let port = harness::free_port();
    let mut child = std::process::Command::new(harness::bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .args(["--rate-limit", "off", "--log-format", "json"])
        .stdout(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    harness::wait_healthy(port, &mut child);
    let url = format!("http://127.0.0.1:{port}/api/collect");
    let post = |key: &'static str, message: &'static str| {
        reqwest::Client::new()
            .post(&url)
            .header("Idempotency-Key", key)
            .json(&json!({"email": "log-test@example.com", "message": message}))
            .send()
    };
    assert_eq!(
        post("trace-log-0001", "first-field-value")
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        post("trace-log-0001", "second-field-value")
            .await
            .unwrap()
            .status(),
        409
    );
    let bad = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/json")
        .body("[\"third-field-value\"]")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());

    let text = std::fs::read_to_string(&log_path).unwrap();
    for value in [
        "first-field-value",
        "second-field-value",
        "third-field-value",
        "log-test@",
    ] {
        assert!(
            !text.contains(value),
            "the log holds a field value ({value}):\n{text}"
        );
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v: &Value| v["message"] == "request" && v["route"] == "/api/collect")
        .collect();
    let seen: Vec<(u64, Value, Value, Value)> = lines
        .iter()
        .map(|v| {
            assert!(v["latency_ms"].is_string(), "no latency: {v}");
            (
                v["status"].as_u64().unwrap(),
                v["trace_id"].clone(),
                v["form_type"].clone(),
                v["error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (202, json!("trace-log-0001"), json!("contact"), Value::Null),
            (
                409,
                json!("trace-log-0001"),
                json!("contact"),
                json!("idempotency_conflict")
            ),
            (400, Value::Null, Value::Null, json!("not_an_object")),
        ]
    );
}
