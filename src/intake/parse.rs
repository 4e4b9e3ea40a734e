//! The intake parser: `(content type, body bytes) -> Submission | ParseError`.
//!
//! Pure and allocation-bounded by [`Limits`], so it can be fuzzed directly. Accepted shapes:
//! - `application/json`: a top-level object;
//! - `text/plain` whose body is JSON (what `navigator.sendBeacon` sends for a string);
//! - `application/x-www-form-urlencoded`: repeated keys become arrays;
//! - `multipart/form-data` without file parts.
//!
//! JSON objects with a repeated key are rejected rather than resolved: two parsers that pick
//! different copies of a key are a classic smuggling vector, and a form never needs one.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A parsed form: the fields exactly as the client sent them.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub fields: Map<String, Value>,
}

/// Bounds applied while parsing. The defaults are the documented service limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body accepted, in bytes (larger -> 413).
    pub max_body: usize,
    /// Deepest nesting accepted; the top-level object is depth 1.
    pub max_depth: usize,
    /// Most values accepted, counting every object member and array element at any depth.
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
            max_depth: 32,
            max_fields: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("content type {0:?} is not accepted; send application/json, text/plain (JSON body), application/x-www-form-urlencoded or multipart/form-data")]
    UnsupportedMediaType(String),
    #[error(
        "the multipart field {0:?} is a file; file uploads are not accepted, send text fields only"
    )]
    FilePart(String),
    #[error("the body is not valid UTF-8")]
    InvalidUtf8,
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the JSON body must be an object ({{\"field\": \"value\", ...}}), not {0}")]
    NotAnObject(&'static str),
    #[error("the JSON object has the key {0:?} more than once; send each field once")]
    DuplicateKey(String),
    #[error("the submission is nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("the submission has more than {0} fields")]
    TooManyFields(usize),
    #[error("the submission has no fields")]
    Empty,
    #[error("the multipart body is malformed: {0}")]
    Multipart(String),
    #[error("the urlencoded body is malformed: {0}")]
    Urlencoded(String),
}

impl ParseError {
    /// The stable error code sent to clients as `{"error": code}`.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::TooLarge { .. } => "body_too_large",
            ParseError::UnsupportedMediaType(_) => "unsupported_media_type",
            ParseError::FilePart(_) => "file_upload_not_accepted",
            ParseError::InvalidUtf8 => "invalid_utf8",
            ParseError::InvalidJson(_) => "invalid_json",
            ParseError::NotAnObject(_) => "not_an_object",
            ParseError::DuplicateKey(_) => "duplicate_key",
            ParseError::TooDeep(_) => "too_deep",
            ParseError::TooManyFields(_) => "too_many_fields",
            ParseError::Empty => "empty_submission",
            ParseError::Multipart(_) => "invalid_multipart",
            ParseError::Urlencoded(_) => "invalid_urlencoded",
        }
    }

    /// The HTTP status for this error: 413 for size, 415 for media types, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::TooLarge { .. } => 413,
            ParseError::UnsupportedMediaType(_) | ParseError::FilePart(_) => 415,
            _ => 400,
        }
    }
}

/// The media types the parser knows, from a `Content-Type` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Text,
    Urlencoded,
    Multipart,
}

fn kind_of(content_type: &str) -> Option<Kind> {
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Kind::Json),
        "text/plain" => Some(Kind::Text),
        "application/x-www-form-urlencoded" => Some(Kind::Urlencoded),
        "multipart/form-data" => Some(Kind::Multipart),
        _ => None,
    }
}

/// Parses one request body. Never panics, never does I/O.
pub fn parse(
    content_type: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<Submission, ParseError> {
    if body.len() > limits.max_body {
        return Err(ParseError::TooLarge {
            size: body.len(),
            limit: limits.max_body,
        });
    }
    let ct = content_type.unwrap_or("");
    let kind = kind_of(ct).ok_or_else(|| {
        ParseError::UnsupportedMediaType(if ct.is_empty() {
            "(none)".into()
        } else {
            ct.chars().take(100).collect()
        })
    })?;
    let fields = match kind {
        Kind::Json | Kind::Text => parse_json(body, limits)?,
        Kind::Urlencoded => parse_urlencoded(body)?,
        Kind::Multipart => parse_multipart(ct, body)?,
    };
    check_shape(&fields, limits)?;
    if fields.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(Submission { fields })
}

fn parse_json(body: &[u8], limits: &Limits) -> Result<Map<String, Value>, ParseError> {
    let text = std::str::from_utf8(body).map_err(|_| ParseError::InvalidUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = StrictValue {
        depth_left: limits.max_depth,
    };
    let value = match seed.deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => return Err(classify_json_error(e, limits)),
    };
    de.end()
        .map_err(|e| ParseError::InvalidJson(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Array(_) => Err(ParseError::NotAnObject("an array")),
        Value::String(_) => Err(ParseError::NotAnObject("a string")),
        Value::Number(_) => Err(ParseError::NotAnObject("a number")),
        Value::Bool(_) => Err(ParseError::NotAnObject("a boolean")),
        Value::Null => Err(ParseError::NotAnObject("null")),
    }
}

/// Our visitor reports limit breaches as custom errors with these prefixes; map them back.
const DUPLICATE_PREFIX: &str = "\u{0}duplicate:";
const TOO_DEEP: &str = "\u{0}too-deep";

fn classify_json_error(e: serde_json::Error, limits: &Limits) -> ParseError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUPLICATE_PREFIX) {
        // serde_json appends " at line L column C"; keep only the key.
        let key = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
        return ParseError::DuplicateKey(key.to_string());
    }
    if msg.starts_with(TOO_DEEP)
        || e.classify() == serde_json::error::Category::Syntax
            && msg.starts_with("recursion limit exceeded")
    {
        return ParseError::TooDeep(limits.max_depth);
    }
    ParseError::InvalidJson(msg)
}

/// Builds a `serde_json::Value` while refusing repeated keys and bounding depth during the parse.
struct StrictValue {
    depth_left: usize,
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl StrictValue {
    /// The seed for a value inside this container (one level deeper).
    fn child(&self) -> StrictValue {
        StrictValue {
            depth_left: self.depth_left.saturating_sub(1),
        }
    }

    /// A container may only open while levels are left.
    fn open<E: de::Error>(&self) -> Result<(), E> {
        if self.depth_left == 0 {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.open()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child())? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.open()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self.child())?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("{DUPLICATE_PREFIX}{key}")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Checks depth and field count of an already-built object (urlencoded and multipart bodies
/// build their maps directly; JSON was bounded during the parse but is checked again here;
/// legacy imports are held to the same bounds).
pub fn check_shape(fields: &Map<String, Value>, limits: &Limits) -> Result<(), ParseError> {
    let mut count = 0usize;
    let mut stack: Vec<(&Value, usize)> = fields.values().map(|v| (v, 2)).collect();
    count += fields.len();
    while let Some((v, depth)) = stack.pop() {
        if count > limits.max_fields {
            break;
        }
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        if depth > limits.max_depth {
            return Err(ParseError::TooDeep(limits.max_depth));
        }
        for c in children {
            count += 1;
            stack.push((c, depth + 1));
        }
    }
    if count > limits.max_fields {
        return Err(ParseError::TooManyFields(limits.max_fields));
    }
    Ok(())
}

/// Adds a form field; a repeated name turns the value into an array, in arrival order.
fn push_field(map: &mut Map<String, Value>, name: String, value: String) {
    match map.get_mut(&name) {
        None => {
            map.insert(name, Value::String(value));
        }
        Some(Value::Array(items)) => items.push(Value::String(value)),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, Value::String(value)]);
        }
    }
}

fn parse_urlencoded(body: &[u8]) -> Result<Map<String, Value>, ParseError> {
    std::str::from_utf8(body).map_err(|_| ParseError::InvalidUtf8)?;
    let mut map = Map::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = decode_component(name)?;
        if name.is_empty() {
            return Err(ParseError::Urlencoded("a field has an empty name".into()));
        }
        push_field(&mut map, name, decode_component(value)?);
    }
    Ok(map)
}

/// Decodes `+` and `%XX` escapes, rejecting escapes that do not yield UTF-8.
fn decode_component(raw: &[u8]) -> Result<String, ParseError> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&plus_as_space)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ParseError::InvalidUtf8)
}

fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Map<String, Value>, ParseError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| ParseError::Multipart("the content type has no boundary parameter".into()))?;
    let chunk = bytes::Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(chunk) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    // The whole body is already in memory, so every await below completes without blocking.
    futures_executor::block_on(async move {
        let mut map = Map::new();
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(ParseError::Multipart(e.to_string())),
            };
            let name = field.name().unwrap_or_default().to_owned();
            if field.file_name().is_some() {
                return Err(ParseError::FilePart(name));
            }
            if name.is_empty() {
                return Err(ParseError::Multipart("a part has no field name".into()));
            }
            let data = field
                .bytes()
                .await
                .map_err(|e| ParseError::Multipart(e.to_string()))?;
            let text = String::from_utf8(data.to_vec()).map_err(|_| ParseError::InvalidUtf8)?;
            push_field(&mut map, name, text);
        }
        Ok(map)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(ct: &str, body: &[u8]) -> Result<Value, ParseError> {
        parse(Some(ct), body, &Limits::default()).map(|s| Value::Object(s.fields))
    }

    #[test]
    fn json_object_is_accepted_with_charset() {
        let v = p(
            "application/json; charset=utf-8",
            br#"{"email":"a@b.c","n":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(v, json!({"email":"a@b.c","n":[1,2]}));
    }

    #[test]
    fn text_plain_json_is_what_send_beacon_sends() {
        let v = p("text/plain;charset=UTF-8", br#"{"email":"a@b.c"}"#).unwrap();
        assert_eq!(v, json!({"email":"a@b.c"}));
    }

    #[test]
    fn urlencoded_repeated_keys_become_arrays() {
        let v = p(
            "application/x-www-form-urlencoded",
            b"name=Jo+Smith&topic=a&topic=b&topic=c&note=caf%C3%A9",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"name":"Jo Smith","topic":["a","b","c"],"note":"café"})
        );
    }

    #[test]
    fn urlencoded_invalid_utf8_escape_is_rejected() {
        assert_eq!(
            p("application/x-www-form-urlencoded", b"a=%FF"),
            Err(ParseError::InvalidUtf8)
        );
    }

    #[test]
    fn multipart_text_fields_are_accepted_and_files_are_not() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@b.c\r\n--XX\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\nx\r\n--XX\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\ny\r\n--XX--\r\n";
        let v = p("multipart/form-data; boundary=XX", body).unwrap();
        assert_eq!(v, json!({"email":"a@b.c","tag":["x","y"]}));
        let file = b"--XX\r\nContent-Disposition: form-data; name=\"cv\"; filename=\"cv.pdf\"\r\n\r\n%PDF\r\n--XX--\r\n";
        let err = p("multipart/form-data; boundary=XX", file).unwrap_err();
        assert_eq!(err, ParseError::FilePart("cv".into()));
        assert_eq!(err.status(), 415);
    }

    #[test]
    fn limits_and_shapes_map_to_their_statuses() {
        let cases: Vec<(&str, Vec<u8>, &str, u16)> = vec![
            ("application/json", b"[1]".to_vec(), "not_an_object", 400),
            ("application/json", b"\"x\"".to_vec(), "not_an_object", 400),
            (
                "application/json",
                b"{\"a\":1,\"a\":2}".to_vec(),
                "duplicate_key",
                400,
            ),
            (
                "application/json",
                b"{\"a\":\xff}".to_vec(),
                "invalid_utf8",
                400,
            ),
            (
                "application/json",
                b"{\"a\":1".to_vec(),
                "invalid_json",
                400,
            ),
            (
                "application/json",
                b"{\"a\":1} x".to_vec(),
                "invalid_json",
                400,
            ),
            (
                "application/json",
                b"{\"a\":1e999}".to_vec(),
                "invalid_json",
                400,
            ),
            ("application/json", b"{}".to_vec(), "empty_submission", 400),
            (
                "application/xml",
                b"<a/>".to_vec(),
                "unsupported_media_type",
                415,
            ),
            ("", b"{}".to_vec(), "unsupported_media_type", 415),
            (
                "application/json",
                vec![b' '; 64 * 1024 + 1],
                "body_too_large",
                413,
            ),
        ];
        for (ct, body, code, status) in cases {
            let err = parse(
                Some(ct).filter(|c| !c.is_empty()),
                &body,
                &Limits::default(),
            )
            .unwrap_err();
            assert_eq!(
                (err.code(), err.status()),
                (code, status),
                "{ct} {:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
    }

    #[test]
    fn depth_32_is_accepted_and_33_is_not() {
        let nest = |levels: usize| {
            let mut s = String::new();
            for _ in 0..levels - 1 {
                s.push_str("{\"a\":");
            }
            s.push_str("{\"a\":1}");
            for _ in 0..levels - 1 {
                s.push('}');
            }
            s
        };
        assert!(p("application/json", nest(32).as_bytes()).is_ok());
        assert_eq!(
            p("application/json", nest(33).as_bytes()),
            Err(ParseError::TooDeep(32))
        );
        let deep_arrays = format!("{{\"a\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(
            p("application/json", deep_arrays.as_bytes()),
            Err(ParseError::TooDeep(32))
        );
    }

    #[test]
    fn field_count_counts_nested_values() {
        let ok: Map<String, Value> = (0..256).map(|i| (format!("f{i}"), json!(i))).collect();
        assert!(p("application/json", Value::Object(ok).to_string().as_bytes()).is_ok());
        let nested = json!({"a": (0..256).collect::<Vec<_>>()});
        assert_eq!(
            p("application/json", nested.to_string().as_bytes()),
            Err(ParseError::TooManyFields(256))
        );
        let form: String = (0..300).map(|i| format!("f{i}=x&")).collect();
        assert_eq!(
            p("application/x-www-form-urlencoded", form.as_bytes()),
            Err(ParseError::TooManyFields(256))
        );
    }

    /// Found by the `parse` fuzz target (fuzz/regressions/parse/float_below_i64_min): without
    /// serde_json's `float_roundtrip` a float was read a few units off, and the stored JSON
    /// text then re-read as yet another number, so delivery could send a different value.
    #[test]
    fn floats_are_read_exactly_and_survive_a_json_round_trip() {
        let text = "-9223372136852775808";
        let v = p("application/json", format!("{{\"n\":{text}}}").as_bytes()).unwrap();
        let exact: f64 = text.parse().unwrap();
        assert_eq!(v["n"].as_f64(), Some(exact));
        let again = p("application/json", v.to_string().as_bytes()).unwrap();
        assert_eq!(again, v);
    }
}
