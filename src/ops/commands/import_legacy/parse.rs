//! The old proxy's fallback files, read as pure data.
//!
//! When the dashboard was unreachable the old proxy wrote each post to its
//! `pending_submissions` folder as one JSON object per `<yyyymmdd_HHMMSS>_<trace id>.json`
//! file, with its enrichment (`received_at`, `client_ip`, `user_agent`, `trace_id`, `src`,
//! `form_type`) mixed into the form's own fields. outbox keeps enrichment beside the payload,
//! so those keys are taken out here. This parser does no I/O (the caller supplies the file's
//! modification time when neither the body nor the name carries a time) and is fuzzed.

use crate::intake::{check_shape, form_type, trace_id, Limits, ParseError};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Largest legacy file read. The old proxy capped bodies well below this; anything bigger is
/// not one of its files.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The enrichment keys the old proxy mixed into the payload.
pub const ENRICHMENT_KEYS: [&str; 6] = [
    "received_at",
    "client_ip",
    "user_agent",
    "trace_id",
    "src",
    "form_type",
];

/// One legacy file, split into the form's fields and what the old proxy knew about it.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacySubmission {
    pub file_name: String,
    pub trace_id: String,
    /// True when the file had no trace ID and one was derived from its content.
    pub trace_id_derived: bool,
    /// From the body, else from the file name; `None`: use the file's modification time.
    pub received_at: Option<DateTime<Utc>>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub src: Option<String>,
    pub form_type: Option<String>,
    /// The form's own fields, enrichment keys removed.
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LegacyError {
    #[error("larger than {MAX_FILE_BYTES} bytes; not a file the old proxy wrote")]
    TooLarge,
    #[error("the JSON ends early at line {line}, column {column} (a write cut short?); fix or remove the file")]
    Truncated { line: usize, column: usize },
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    NotJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the JSON is not an object; each file must hold one submission object")]
    NotAnObject,
    #[error("the submission has no form fields (only enrichment, or nothing); nothing to import")]
    EmptyPayload,
    #[error("trace_id must be 8 to 128 characters of A-Z a-z 0-9 . _ : - ; fix it in the file")]
    InvalidTraceId,
    #[error("{0}; the live endpoint would refuse these form fields, so the import does too")]
    Shape(ParseError),
    #[error("field {field} {problem}")]
    BadField {
        field: &'static str,
        problem: &'static str,
    },
}

/// Parses one legacy file. `file_name` is the name only (its timestamp prefix is used when the
/// body has no `received_at`).
pub fn parse_legacy_file(file_name: &str, bytes: &[u8]) -> Result<LegacySubmission, LegacyError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(LegacyError::TooLarge);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        if e.is_eof() {
            LegacyError::Truncated { line, column }
        } else {
            LegacyError::NotJson {
                line,
                column,
                message: e.to_string(),
            }
        }
    })?;
    let Value::Object(mut fields) = value else {
        return Err(LegacyError::NotAnObject);
    };
    let mut take = |field: &'static str| -> Result<Option<String>, LegacyError> {
        match fields.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(LegacyError::BadField {
                field,
                problem: "must be a string",
            }),
        }
    };
    let given_trace_id = take("trace_id")?;
    let received_at = take("received_at")?;
    let client_ip = take("client_ip")?;
    let user_agent = take("user_agent")?;
    let src = take("src")?;
    let form_type = take("form_type")?;

    let (trace_id, trace_id_derived) = match given_trace_id {
        Some(id) if trace_id::is_valid(&id) => (id, false),
        Some(_) => return Err(LegacyError::InvalidTraceId),
        None => (derived_trace_id(bytes), true),
    };
    let received_at = match received_at {
        Some(s) => Some(
            DateTime::parse_from_rfc3339(&s)
                .map_err(|_| LegacyError::BadField {
                    field: "received_at",
                    problem: "is not an RFC 3339 time (e.g. 2025-01-14T09:30:12.418000+00:00)",
                })?
                .with_timezone(&Utc),
        ),
        None => time_from_file_name(file_name),
    };
    if let Some(ft) = &form_type {
        if !form_type::is_valid_name(ft) {
            return Err(LegacyError::BadField {
                field: "form_type",
                problem: "must be 1 to 64 characters of A-Z a-z 0-9 _ - .",
            });
        }
    }
    if client_ip
        .as_deref()
        .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_err())
    {
        return Err(LegacyError::BadField {
            field: "client_ip",
            problem: "is not an IP address",
        });
    }
    // Intake never stores a submission without fields; an import must not either.
    if fields.is_empty() {
        return Err(LegacyError::EmptyPayload);
    }
    // Nor one deeper or wider than intake's limits (what the dashboard is promised).
    check_shape(&fields, &Limits::default()).map_err(LegacyError::Shape)?;
    Ok(LegacySubmission {
        file_name: file_name.to_owned(),
        trace_id,
        trace_id_derived,
        received_at,
        client_ip,
        user_agent,
        src,
        form_type,
        fields,
    })
}

/// The trace ID given to a file that has none: a hash of its exact bytes, so importing the
/// same file again finds the record it made the first time.
pub fn derived_trace_id(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("legacy-{}", &hex::encode(digest)[..32])
}

/// `20250114_093012_<anything>` -> 2025-01-14T09:30:12Z (the old proxy named files in UTC).
pub fn time_from_file_name(file_name: &str) -> Option<DateTime<Utc>> {
    let stamp = file_name.get(..15)?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"email": "j.chen@example.org", "received_at": "2025-01-14T10:15:44.002000+00:00", "client_ip": "198.51.100.7", "user_agent": "UA", "trace_id": "ab0f77d1-91e2-4f0e-8a3c-5a7e2d9c4b10", "src": "site-proxy", "form_type": "newsletter"}"#;

    #[test]
    fn enrichment_is_taken_out_of_the_payload() {
        let s = parse_legacy_file("20250114_101544_x.json", FULL.as_bytes()).unwrap();
        assert_eq!(s.trace_id, "ab0f77d1-91e2-4f0e-8a3c-5a7e2d9c4b10");
        assert!(!s.trace_id_derived);
        assert_eq!(s.fields.keys().collect::<Vec<_>>(), vec!["email"]);
        assert_eq!(s.client_ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(s.form_type.as_deref(), Some("newsletter"));
        assert_eq!(s.received_at.unwrap().timestamp_millis(), 1_736_849_744_002);
    }

    #[test]
    fn a_file_without_trace_id_or_time_gets_them_from_content_and_name() {
        let body = br#"{"name": "Sam", "email": "sam@example.net"}"#;
        let a = parse_legacy_file("20250115_171903_manual.json", body).unwrap();
        let b = parse_legacy_file("other-name.json", body).unwrap();
        assert!(a.trace_id_derived);
        assert_eq!(a.trace_id, b.trace_id, "same bytes, same trace ID");
        assert!(trace_id::is_valid(&a.trace_id));
        assert_eq!(
            a.received_at.unwrap().to_rfc3339(),
            "2025-01-15T17:19:03+00:00"
        );
        assert_eq!(
            b.received_at, None,
            "no time anywhere: the caller uses mtime"
        );
        let c = parse_legacy_file("x.json", br#"{"name": "Sam"}"#).unwrap();
        assert_ne!(a.trace_id, c.trace_id);
    }

    #[test]
    fn files_beyond_intakes_depth_or_field_limits_are_errors() {
        let wide: String = (0..257)
            .map(|i| format!("\"f{i}\": 1"))
            .collect::<Vec<_>>()
            .join(",");
        let err = parse_legacy_file("f.json", format!("{{{wide}}}").as_bytes()).unwrap_err();
        assert_eq!(err, LegacyError::Shape(ParseError::TooManyFields(256)));
        assert!(err.to_string().contains("256"), "{err}");
        let deep = |levels: usize| {
            format!(
                "{{\"email\": \"a@b.c\", \"x\": {}1{}}}",
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        // The top-level object is depth 1, so 31 nested arrays reach depth 32.
        assert!(parse_legacy_file("f.json", deep(31).as_bytes()).is_ok());
        assert_eq!(
            parse_legacy_file("f.json", deep(32).as_bytes()).unwrap_err(),
            LegacyError::Shape(ParseError::TooDeep(32))
        );
    }

    #[test]
    fn truncated_and_malformed_files_are_errors() {
        let cut = br#"{"name": "Truncated Write", "email": "trunc@exam"#;
        assert!(matches!(
            parse_legacy_file("f.json", cut),
            Err(LegacyError::Truncated { .. })
        ));
        assert!(matches!(
            parse_legacy_file("f.json", b"[1,2]"),
            Err(LegacyError::NotAnObject)
        ));
        assert!(matches!(
            parse_legacy_file("f.json", b"{nope}"),
            Err(LegacyError::NotJson { .. })
        ));
        assert_eq!(
            parse_legacy_file("f.json", br#"{"trace_id": "bad id"}"#),
            Err(LegacyError::InvalidTraceId)
        );
        assert!(matches!(
            parse_legacy_file("f.json", br#"{"received_at": "yesterday"}"#),
            Err(LegacyError::BadField {
                field: "received_at",
                ..
            })
        ));
        assert!(matches!(
            parse_legacy_file("f.json", br#"{"client_ip": 7}"#),
            Err(LegacyError::BadField {
                field: "client_ip",
                ..
            })
        ));
    }
    /// Found by the `legacy` fuzz target (fuzz/regressions/legacy/empty_object): `{}` and a
    /// file holding only enrichment were accepted with an empty payload, a record intake
    /// would never have stored.
    #[test]
    fn a_file_without_form_fields_is_refused() {
        for body in [
            &b"{}"[..],
            br#"{"trace_id": "only-a-trace-id", "src": "site-proxy"}"#,
        ] {
            assert_eq!(
                parse_legacy_file("f.json", body),
                Err(LegacyError::EmptyPayload)
            );
        }
    }
}
