//! Trace IDs: the idempotency key of a submission and the key of its record.
//!
//! Taken from the `Idempotency-Key` header, else `X-Trace-Id`, else a `trace_id` body field;
//! without any of them the service makes a UUIDv7 (time-ordered, so fresh keys cluster in the
//! store's B-tree). Every ID supplied must match `[A-Za-z0-9._:-]{8,128}`, the one that is used
//! and those it outranks alike: a malformed one is a client's mistake, and the OpenAPI document
//! promises a 400 for it, so it is never silently passed over.

use serde_json::{Map, Value};

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name} must be 8 to 128 characters of A-Z a-z 0-9 . _ : - (got {shown})")]
pub struct InvalidTraceId {
    pub source_name: &'static str,
    shown: String,
}

/// True when `id` is an acceptable trace ID.
pub fn is_valid(id: &str) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Picks the trace ID for a request: the first source present wins. An invalid value in any
/// source present is an error (never silently replaced or passed over, or a retried post
/// would not be recognised).
pub fn choose(
    idempotency_key: Option<&[u8]>,
    x_trace_id: Option<&[u8]>,
    fields: &Map<String, Value>,
) -> Result<Option<String>, InvalidTraceId> {
    let body = match fields.get("trace_id") {
        None => None,
        Some(Value::String(s)) => Some(s.as_bytes()),
        Some(other) => {
            return Err(InvalidTraceId {
                source_name: "the trace_id field",
                shown: format!("a JSON {}", json_kind(other)),
            })
        }
    };
    let sources = [
        ("the Idempotency-Key header", idempotency_key),
        ("the X-Trace-Id header", x_trace_id),
        ("the trace_id field", body),
    ];
    let mut chosen = None;
    for (source_name, raw) in sources {
        let Some(raw) = raw else { continue };
        match std::str::from_utf8(raw) {
            Ok(s) if is_valid(s) => {
                chosen.get_or_insert_with(|| s.to_owned());
            }
            _ => {
                return Err(InvalidTraceId {
                    source_name,
                    shown: describe(raw),
                })
            }
        }
    }
    Ok(chosen)
}

/// A new time-ordered trace ID.
pub fn generate() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Describes a rejected value without echoing arbitrary bytes back.
fn describe(raw: &[u8]) -> String {
    format!("{} bytes", raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validity_follows_the_documented_pattern() {
        for ok in [
            "abcdefgh",
            "A.b_c:d-1",
            &"x".repeat(128),
            "0190a5d2-7c3e-7b1a-9f00-1234567890ab",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "short",
            "",
            &"x".repeat(129),
            "has space1",
            "über-trace-id",
            "a/b/c/d/e",
            "line\r\nbreak",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn header_beats_x_trace_id_beats_body() {
        let body = json!({"trace_id": "body-trace-1"});
        let m = body.as_object().unwrap();
        assert_eq!(
            choose(Some(b"idem-key-1"), Some(b"x-trace-01"), m)
                .unwrap()
                .as_deref(),
            Some("idem-key-1")
        );
        assert_eq!(
            choose(None, Some(b"x-trace-01"), m).unwrap().as_deref(),
            Some("x-trace-01")
        );
        assert_eq!(
            choose(None, None, m).unwrap().as_deref(),
            Some("body-trace-1")
        );
        assert_eq!(choose(None, None, &Map::new()).unwrap(), None);
    }

    #[test]
    fn an_invalid_value_is_an_error_naming_its_source() {
        let err = choose(Some(b"bad"), None, &Map::new()).unwrap_err();
        assert!(err.to_string().contains("Idempotency-Key"), "{err}");
        let body = json!({"trace_id": 12345678});
        let err = choose(None, None, body.as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("trace_id field"), "{err}");
    }

    /// Found by schemathesis: an empty X-Trace-Id beside a valid Idempotency-Key was passed
    /// over, although the OpenAPI document's pattern forbids it.
    #[test]
    fn an_invalid_source_is_an_error_even_when_a_valid_one_outranks_it() {
        let valid = json!({"trace_id": "body-trace-1"});
        let err = choose(Some(b"idem-key-1"), Some(b""), valid.as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("X-Trace-Id"), "{err}");
        let bad = json!({"trace_id": "bad"});
        let err = choose(Some(b"idem-key-1"), None, bad.as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("trace_id field"), "{err}");
        let number = json!({"trace_id": 12345678});
        let err = choose(Some(b"idem-key-1"), None, number.as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("trace_id field"), "{err}");
    }

    #[test]
    fn generated_ids_are_valid() {
        assert!(is_valid(&generate()));
    }
}
