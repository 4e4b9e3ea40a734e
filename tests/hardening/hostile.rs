//! The hostile-input suite: malformed, oversized and deceptive requests sent as raw bytes over
//! TCP, each with the status it must get. Afterwards the service still answers and the store's
//! accounting matches exactly the submissions that were acknowledged as stored, and the
//! stopped store passes `outbox verify`.

use crate::harness::{raw_exchange, spawn_app};
use outbox::ops::commands::verify::verify;
use outbox::store::Store;
use std::collections::BTreeMap;

/// A POST to /api/collect with `Connection: close`, the given header lines and a
/// Content-Length matching `body`.
fn post(headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r =
        b"POST /api/collect HTTP/1.1\r\nHost: outbox.test\r\nConnection: close\r\n".to_vec();
    for h in headers {
        r.extend_from_slice(h.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    r.extend_from_slice(body);
    r
}

fn json_post(body: &[u8]) -> Vec<u8> {
    post(&["Content-Type: application/json"], body)
}

/// The same, with raw bytes in place of the header lines (for bytes that are not UTF-8).
fn post_raw_headers(header_bytes: &[u8], body: &[u8]) -> Vec<u8> {
    let mut r =
        b"POST /api/collect HTTP/1.1\r\nHost: outbox.test\r\nConnection: close\r\n".to_vec();
    r.extend_from_slice(header_bytes);
    r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    r.extend_from_slice(body);
    r
}

fn chunked(content_type: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut r = format!(
        "POST /api/collect HTTP/1.1\r\nHost: outbox.test\r\nConnection: close\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in chunks {
        r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

fn multipart(parts: &str) -> Vec<u8> {
    post(
        &["Content-Type: multipart/form-data; boundary=XyZ"],
        parts.replace('\n', "\r\n").as_bytes(),
    )
}

/// The statuses of every final (non-1xx) response in a raw exchange, in order.
fn final_statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse::<u16>().ok())
        .filter(|s| *s >= 200)
        .collect()
}

/// The table: name, raw request, expected status (0: the server closes without answering).
fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let big_value = "x".repeat(70 * 1024);
    let deep_arrays = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
    let ten_thousand_json = format!("{{\"a\":[{}0]}}", "0,".repeat(9_999));
    let ten_thousand_form: String = (0..10_000)
        .map(|i| format!("{i}="))
        .collect::<Vec<_>>()
        .join("&");
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    let huge_header = format!("X-Big: {}", "h".repeat(100_000));
    let many_headers: Vec<String> = (0..200).map(|i| format!("X-H{i}: v")).collect();
    let many_headers: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    let long_key = format!("Idempotency-Key: {}", "k".repeat(129));
    let near_limit = format!("{{\"message\":\"{}\"}}", "y".repeat(60 * 1024));
    let mut unknown_length = json_post(b"{}");
    unknown_length.truncate(unknown_length.len() - 2);

    vec![
        // Size
        ("declared length over the limit", b"POST /api/collect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{\"a\":1}".to_vec(), 413),
        ("actual body over the limit", json_post(format!("{{\"a\":\"{big_value}\"}}").as_bytes()), 413),
        ("chunked body over the limit without a length", chunked("application/json", &[b"{\"a\":\"", big_value.as_bytes(), b"\"}"]), 413),
        ("a value just under the limit", json_post(near_limit.as_bytes()), 202),
        // Structure
        ("10,000 nested arrays", json_post(deep_arrays.as_bytes()), 400),
        ("100 nested objects", json_post(deep_objects.as_bytes()), 400),
        ("10,000 values in JSON", json_post(ten_thousand_json.as_bytes()), 400),
        ("10,000 urlencoded fields", post(&["Content-Type: application/x-www-form-urlencoded"], ten_thousand_form.as_bytes()), 400),
        ("duplicate JSON keys", json_post(br#"{"email":"a@example.com","email":"b@example.com"}"#), 400),
        ("top-level array", json_post(b"[1,2,3]"), 400),
        ("top-level string", json_post(br#""hello""#), 400),
        ("empty object", json_post(b"{}"), 400),
        ("empty body", json_post(b""), 400),
        ("truncated JSON", json_post(br#"{"email":"a@exa"#), 400),
        ("trailing garbage after JSON", json_post(br#"{"a":"b"} {"c":"d"}"#), 400),
        // Bytes
        ("invalid UTF-8 in JSON", json_post(b"{\"a\":\"\xff\xfe\"}"), 400),
        ("overlong UTF-8 encoding of /", json_post(b"{\"a\":\"\xc0\xaf\"}"), 400),
        ("raw NUL byte in a JSON string", json_post(b"{\"a\":\"x\x00y\"}"), 400),
        ("escaped NUL in a JSON string is data", json_post(br#"{"a":"x\u0000y"}"#), 202),
        ("lone surrogate escape", json_post(br#"{"a":"\ud800"}"#), 400),
        ("byte order mark before JSON", json_post(b"\xef\xbb\xbf{\"a\":\"b\"}"), 400),
        ("invalid UTF-8 in urlencoded", post(&["Content-Type: application/x-www-form-urlencoded"], b"a=%ff%fe&b=\xff"), 400),
        ("huge exponent", json_post(br#"{"n":1e400}"#), 400),
        ("huge integer", json_post(br#"{"n":123456789012345678901234567890123456789}"#), 202),
        ("unicode field names and bidi controls", json_post("{\"\u{202e}name\":\"\u{1f600}\",\"__proto__\":{\"x\":1}}".as_bytes()), 202),
        // Content types
        ("missing content type", post(&[], br#"{"a":"b"}"#), 415),
        ("text/html", post(&["Content-Type: text/html"], b"<b>hi</b>"), 415),
        ("application/xml", post(&["Content-Type: application/xml"], b"<a>b</a>"), 415),
        ("garbage content type", post(&["Content-Type: ;;;==="], br#"{"a":"b"}"#), 415),
        ("text/plain carrying JSON", post(&["Content-Type: text/plain;charset=UTF-8"], br#"{"a":"b"}"#), 202),
        ("multipart with a file part", multipart("--XyZ\nContent-Disposition: form-data; name=\"f\"; filename=\"a.exe\"\n\nMZ\n--XyZ--\n"), 415),
        ("multipart without its closing boundary", multipart("--XyZ\nContent-Disposition: form-data; name=\"a\"\n\nb\n"), 400),
        ("multipart with no boundary parameter", post(&["Content-Type: multipart/form-data"], b"--x\r\n"), 400),
        // Headers
        ("CR inside a header value", post_raw_headers(b"Content-Type: application/json\r\nX-Evil: a\rInjected: 1\r\n", br#"{"a":"b"}"#), 400),
        ("space inside a header name", post_raw_headers(b"Content-Type: application/json\r\nX Evil: a\r\n", br#"{"a":"b"}"#), 400),
        ("header line without a colon", post_raw_headers(b"Content-Type: application/json\r\nnocolon\r\n", br#"{"a":"b"}"#), 400),
        ("obsolete line folding", post_raw_headers(b"Content-Type: application/json\r\nX-Fold: a\r\n folded\r\n", br#"{"a":"b"}"#), 400),
        ("control byte in a header value", post_raw_headers(b"Content-Type: application/json\x01\r\n", br#"{"a":"b"}"#), 400),
        ("one 100 KB header", post(&["Content-Type: application/json", &huge_header], br#"{"a":"b"}"#), 431),
        ("200 headers", post(&many_headers, br#"{"a":"b"}"#), 431),
        ("two different Content-Lengths", post_raw_headers(b"Content-Type: application/json\r\nContent-Length: 3\r\n", br#"{"a":"b"}"#), 400),
        // RFC 9112 6.1: chunked wins over Content-Length and the connection is closed after.
        ("Content-Length and chunked together", post_raw_headers(b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", b"9\r\n{\"a\":\"b\"}\r\n0\r\n\r\n"), 202),
        ("negative Content-Length", b"POST /api/collect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n{}".to_vec(), 400),
        ("malformed chunk size", b"POST /api/collect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(), 400),
        ("Expect: 100-continue", post(&["Content-Type: application/json", "Expect: 100-continue"], br#"{"a":"b"}"#), 202),
        // Trace IDs
        ("unicode Idempotency-Key", post(&["Content-Type: application/json", "Idempotency-Key: ключ-ключ-ключ"], br#"{"a":"b"}"#), 400),
        ("latin-1 byte in Idempotency-Key", post_raw_headers(b"Content-Type: application/json\r\nIdempotency-Key: caf\xe9-caf\xe9-1\r\n", br#"{"a":"b"}"#), 400),
        ("129-character Idempotency-Key", post(&["Content-Type: application/json", &long_key], br#"{"a":"b"}"#), 400),
        ("short X-Trace-Id", post(&["Content-Type: application/json", "X-Trace-Id: abc"], br#"{"a":"b"}"#), 400),
        ("path traversal as a trace ID", post(&["Content-Type: application/json", "X-Trace-Id: ../../etc/passwd"], br#"{"a":"b"}"#), 400),
        ("trace_id field that is an object", json_post(br#"{"trace_id":{"$gt":""},"a":"b"}"#), 400),
        // Addresses
        ("spoofed X-Forwarded-For chain", post(&["Content-Type: application/json", "X-Forwarded-For: 127.0.0.1, 10.0.0.1, <script>"], br#"{"a":"b"}"#), 202),
        ("malformed Forwarded header", post(&["Content-Type: application/json", "Forwarded: for=\"[::1\";;;by=", "X-Forwarded-For: 1.2.3.4"], br#"{"a":"b"}"#), 202),
        // Protocol
        ("HTTP/1.0 without Host", b"POST /api/collect HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":\"b\"}".to_vec(), 202),
        ("HTTP/0.9 style request line", b"GET /\r\n\r\n".to_vec(), 400),
        ("unknown method", b"FROB /api/collect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 405),
        ("GET on the intake route", b"GET /api/collect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 405),
        ("path traversal", b"GET /api/collect/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
        // The 32 KiB head limit covers the request line too.
        ("100 KB request target", long_uri.into_bytes(), 431),
        ("binary garbage instead of HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(), 400),
        ("a body that trickles in and stops", unknown_length, 408),
    ]
}

#[tokio::test]
async fn hostile_requests_get_their_expected_status_and_the_store_stays_consistent() {
    let app = spawn_app(&["--body-timeout", "2s"]).await;
    let table = cases();
    assert!(table.len() >= 40);

    let mut stored = 0;
    let mut wrong = BTreeMap::new();
    for (name, request, expected) in &table {
        let (_, text) = raw_exchange(app.addr, request).await;
        let got = final_statuses(&text).first().copied().unwrap_or(0);
        if got != *expected {
            wrong.insert(
                *name,
                (got, *expected, text.chars().take(300).collect::<String>()),
            );
        }
        if got == 202 {
            stored += 1;
        }
    }

    // Pipelining: two submissions in one write, both answered in order.
    let mut two = json_post(br#"{"pipelined":"1"}"#);
    let keep_alive = String::from_utf8(two.clone())
        .unwrap()
        .replace("Connection: close\r\n", "");
    two = [keep_alive.into_bytes(), json_post(br#"{"pipelined":"2"}"#)].concat();
    let (_, text) = raw_exchange(app.addr, &two).await;
    assert_eq!(final_statuses(&text), [202, 202], "pipelined: {text}");
    stored += 2;

    assert!(
        wrong.is_empty(),
        "unexpected answers (got, expected, response):\n{wrong:#?}"
    );

    let (status, health) = app.get_json("/health/detailed").await;
    assert_eq!(status, 200, "the service still answers");
    assert_eq!(health["accounting_balanced"], true, "{health}");
    assert_eq!(
        health["counts"]["accepted"], stored,
        "exactly the 202s were stored"
    );
    assert_eq!(health["counts"]["pending"], stored);

    // The store's own consistency check, on the stopped directory.
    let dir = app.data_dir.clone();
    let _keep = app.stop().await;
    let store = Store::open(&dir).expect("the store reopens");
    let report = verify(&store, false);
    assert!(report.ok(), "verify found problems: {:?}", report.problems);
    assert_eq!(report.records, stored);
}
