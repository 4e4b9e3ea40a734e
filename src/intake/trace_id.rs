//! Trace IDs: the idempotency key of a submission and the key of its record.
//!
//! Taken from the `Idempotency-Key` header, else `X-Trace-Id`, else a `trace_id` body field;
//! without any of them the service makes a UUIDv7 (time-ordered, so fresh keys cluster in the
//! store's B-tree). A supplied ID must match `[A-Za-z0-9._:-]{8,128}`.

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

/// Picks the trace ID for a request: the first source present wins, and an invalid value in it
/// is an error (never silently replaced, or a retried post would not be recognised).
pub fn choose(
    idempotency_key: Option<&[u8]>,
    x_trace_id: Option<&[u8]>,
    fields: &Map<String, Value>,
) -> Result<Option<String>, InvalidTraceId> {
    let body = fields.get("trace_id");
    let (source_name, raw): (&'static str, Vec<u8>) = if let Some(v) = idempotency_key {
        ("the Idempotency-Key header", v.to_vec())
    } else if let Some(v) = x_trace_id {
        ("the X-Trace-Id header", v.to_vec())
    } else if let Some(v) = body {
        match v {
            Value::String(s) => ("the trace_id field", s.as_bytes().to_vec()),
            other => {
                return Err(InvalidTraceId {
                    source_name: "the trace_id field",
                    shown: format!("a JSON {}", json_kind(other)),
                })
            }
        }
    } else {
        return Ok(None);
    };
    match std::str::from_utf8(&raw) {
        Ok(s) if is_valid(s) => Ok(Some(s.to_owned())),
        _ => Err(InvalidTraceId {
            source_name,
            shown: describe(&raw),
        }),
    }
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

    #[test]
    fn generated_ids_are_valid() {
        assert!(is_valid(&generate()));
    }
}
