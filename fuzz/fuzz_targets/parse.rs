//! Fuzzes the intake parser, the one function that reads untrusted bodies.
//!
//! Input layout (so seed files stay readable): the first line picks the content type, the rest
//! is the body.
//!
//! | first line       | Content-Type sent to the parser             |
//! |------------------|---------------------------------------------|
//! | `json`           | `application/json`                          |
//! | `text`           | `text/plain;charset=UTF-8` (sendBeacon)     |
//! | `form`           | `application/x-www-form-urlencoded`         |
//! | `multipart B`    | `multipart/form-data; boundary=B`           |
//! | `none`           | no Content-Type header                      |
//! | anything else    | the line itself, verbatim                   |
//!
//! Invariants checked beyond "no panic":
//! - an accepted submission has 1..=max_fields values (counted as the parser counts: every
//!   object member and array element at any depth), nests at most max_depth deep, and came
//!   from a body of at most max_body bytes;
//! - form bodies (urlencoded, multipart) only yield strings or arrays of two or more strings;
//! - re-serializing the fields as JSON and parsing that as application/json gives the same
//!   value (the store keeps the JSON text, so this is what delivery will send);
//! - every error maps to 400, 413 or 415; 413 exactly when the body is over the limit, 415 only
//!   for an unknown media type or a file part;
//! - the same input always gives the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox::intake::{parse, Limits, ParseError};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let content_type: Option<String> = match head {
        "json" => Some("application/json".into()),
        "text" => Some("text/plain;charset=UTF-8".into()),
        "form" => Some("application/x-www-form-urlencoded".into()),
        "none" => None,
        _ => match head.strip_prefix("multipart ") {
            Some(boundary) => Some(format!("multipart/form-data; boundary={boundary}")),
            None => Some(head.to_owned()),
        },
    };
    let is_form = matches!(head, "form") || head.starts_with("multipart ");
    let limits = Limits::default();

    let result = parse(content_type.as_deref(), body, &limits);
    assert_eq!(
        result,
        parse(content_type.as_deref(), body, &limits),
        "parse is deterministic"
    );

    match result {
        Ok(sub) => {
            assert!(body.len() <= limits.max_body, "accepted an oversized body");
            let count = count_values(&sub.fields);
            assert!(
                (1..=limits.max_fields).contains(&count),
                "accepted {count} fields"
            );
            let top = Value::Object(sub.fields.clone());
            let depth = depth(&top);
            assert!(depth <= limits.max_depth, "accepted depth {depth}");
            if is_form {
                for v in sub.fields.values() {
                    let ok = match v {
                        Value::String(_) => true,
                        Value::Array(items) => {
                            items.len() >= 2 && items.iter().all(Value::is_string)
                        }
                        _ => false,
                    };
                    assert!(ok, "a form field became {v:?}");
                }
            }
            // Escaping can make the JSON text longer than the original body (`%01` is three
            // bytes, `"\u0001"` six), so the re-parse allows the longer size; every other limit
            // is the same.
            let json = serde_json::to_vec(&top).expect("a Value serializes");
            let relaxed = Limits {
                max_body: json.len().max(limits.max_body),
                ..limits
            };
            let again = parse(Some("application/json"), &json, &relaxed)
                .unwrap_or_else(|e| panic!("re-serialized submission is rejected: {e}"));
            assert_eq!(
                again.fields, sub.fields,
                "JSON round trip changed the value"
            );
        }
        Err(e) => {
            let status = e.status();
            assert!(matches!(status, 400 | 413 | 415), "{e:?} maps to {status}");
            assert_eq!(
                status == 413,
                body.len() > limits.max_body,
                "413 iff the body is over the limit ({e:?})"
            );
            if status == 415 {
                assert!(matches!(
                    e,
                    ParseError::UnsupportedMediaType(_) | ParseError::FilePart(_)
                ));
            }
            assert!(!e.code().is_empty());
            let _ = e.to_string();
        }
    }
});

/// Values as the parser counts them: every object member and array element, at any depth.
fn count_values(fields: &Map<String, Value>) -> usize {
    fn below(v: &Value) -> usize {
        match v {
            Value::Object(m) => m.len() + m.values().map(below).sum::<usize>(),
            Value::Array(a) => a.len() + a.iter().map(below).sum::<usize>(),
            _ => 0,
        }
    }
    fields.len() + fields.values().map(below).sum::<usize>()
}

/// Container nesting: the top-level object is 1, scalars add nothing.
fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
