//! Fuzzes the header-derived identity of a request: the client address (trusted-proxy walk
//! over the one configured header, with the grammar of `Forwarded` or of `X-Forwarded-For`)
//! and the trace ID (`Idempotency-Key`, `X-Trace-Id`, body field).
//!
//! Input layout, one item per line, so seed files stay readable:
//! - line 1: the socket peer address (the input is skipped when it is not an address);
//! - line 2: the trusted proxy networks, comma-separated CIDRs (invalid ones are left out);
//! - then any number of lines, each starting with a tag:
//!   `F:` a `Forwarded` value, `X:` an `X-Forwarded-For` value (`F!` / `X!`: a value that is
//!   not UTF-8), `I:` the `Idempotency-Key`, `T:` the `X-Trace-Id`, `B:` a string `trace_id`
//!   body field, `N:` a numeric one. Header values are raw bytes after the tag.
//!
//! Invariants:
//! - an untrusted peer is always the answer, whatever the headers say;
//! - the answer is canonical (no IPv4-mapped IPv6) and is either the peer or an address written
//!   in the header that was consulted (the `F:` lines are tried as a configured `Forwarded`,
//!   the `X:` lines as a configured `X-Forwarded-For`);
//! - with no values of the consulted header, the answer is the peer;
//! - an accepted trace ID matches `[A-Za-z0-9._:-]{8,128}` and is exactly the value of the first
//!   source present, and only when every source present is valid; no source gives `None`; an
//!   invalid source, outranked or not, is an error whose message is one printable ASCII line
//!   (it is sent back to clients).
#![no_main]

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use outbox::intake::client_ip::{resolve, ForwardedHeader, TrustedProxies};
use outbox::intake::trace_id::{choose, is_valid};
use serde_json::{Map, Value};
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(peer) = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
    else {
        return;
    };
    let trusted = TrustedProxies(
        lines
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .unwrap_or("")
            .split(',')
            .filter_map(|s| s.trim().parse::<IpNet>().ok())
            .collect(),
    );

    let mut forwarded: Vec<Option<&str>> = Vec::new();
    let mut xff: Vec<Option<&str>> = Vec::new();
    let mut idempotency_key: Option<&[u8]> = None;
    let mut x_trace_id: Option<&[u8]> = None;
    let mut fields = Map::new();
    for line in lines {
        if line.len() < 2 {
            continue;
        }
        let (tag, value) = line.split_at(2);
        match tag {
            b"F:" => forwarded.push(std::str::from_utf8(value).ok()),
            b"F!" => forwarded.push(None),
            b"X:" => xff.push(std::str::from_utf8(value).ok()),
            b"X!" => xff.push(None),
            b"I:" => idempotency_key = Some(value),
            b"T:" => x_trace_id = Some(value),
            b"B:" => {
                let s = String::from_utf8_lossy(value).into_owned();
                fields.insert("trace_id".into(), Value::String(s));
            }
            b"N:" => {
                fields.insert("trace_id".into(), Value::from(value.len()));
            }
            _ => {}
        }
    }

    check_client_ip(peer, &ForwardedHeader::Forwarded, &forwarded, &trusted);
    check_client_ip(peer, &ForwardedHeader::default(), &xff, &trusted);
    check_trace_id(idempotency_key, x_trace_id, &fields);
});

fn check_client_ip(
    peer: IpAddr,
    header: &ForwardedHeader,
    values: &[Option<&str>],
    trusted: &TrustedProxies,
) {
    let got = resolve(peer, header, values, trusted);
    let peer = peer.to_canonical();
    assert_eq!(got, got.to_canonical(), "answer is not canonical");
    if !trusted.contains(peer) || values.is_empty() {
        assert_eq!(got, peer, "the peer must be the answer here");
        return;
    }
    if got != peer {
        let written = addresses_written_in(values);
        assert!(
            written.contains(&got),
            "{got} is neither the peer {peer} nor written in {values:?}"
        );
    }
}

/// Every address that appears in the header values, found independently of the parser under
/// test: split on the separators of both header grammars and on whitespace, then read each
/// token as an address, or as an address with a port.
fn addresses_written_in(values: &[Option<&str>]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for v in values.iter().flatten() {
        // `str::trim` (used by the parser) strips every Unicode space, so split on all of them.
        for token in v.split(|c: char| c.is_whitespace() || ",;=\"[]".contains(c)) {
            if let Ok(ip) = token.parse::<IpAddr>() {
                out.push(ip.to_canonical());
            } else if let Some((host, _port)) = token.rsplit_once(':') {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    out.push(ip.to_canonical());
                }
            }
        }
    }
    out
}

fn check_trace_id(
    idempotency_key: Option<&[u8]>,
    x_trace_id: Option<&[u8]>,
    fields: &Map<String, Value>,
) {
    // Every source given, in order of precedence; `Err` where it is not text at all. Each one
    // must be a valid trace ID (an outranked one too: a malformed ID is a client's bug, not
    // something to ignore), and the first is the one chosen.
    let body = fields
        .get("trace_id")
        .map(|v| v.as_str().map(str::as_bytes).ok_or(()));
    let sources: Vec<Result<&str, ()>> = [idempotency_key.map(Ok), x_trace_id.map(Ok), body]
        .into_iter()
        .flatten()
        .map(|b| b.and_then(|b| std::str::from_utf8(b).map_err(|_| ())))
        .collect();
    let all_valid = sources
        .iter()
        .all(|s| matches!(s, Ok(s) if matches_pattern(s)));
    match choose(idempotency_key, x_trace_id, fields) {
        Ok(Some(id)) => {
            assert!(matches_pattern(&id), "accepted {id:?}");
            assert!(is_valid(&id));
            assert!(all_valid, "accepted beside an invalid source: {sources:?}");
            assert_eq!(
                sources.first(),
                Some(&Ok(id.as_str())),
                "not the first source"
            );
        }
        Ok(None) => assert!(sources.is_empty(), "a present source was ignored"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.bytes().all(|b| (b' '..=b'~').contains(&b)),
                "error message is not one printable ASCII line: {msg:?}"
            );
            assert!(!sources.is_empty(), "error without a source");
            assert!(!all_valid, "rejected valid sources {sources:?}");
        }
    }
}

/// `[A-Za-z0-9._:-]{8,128}`, written out independently of `is_valid`.
fn matches_pattern(s: &str) -> bool {
    let n = s.chars().count();
    (8..=128).contains(&n)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}
