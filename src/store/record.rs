//! The stored record and its encodings.
//!
//! A record lives in two trees: its state in `entries` (keyed by trace ID, rewritten at every
//! step of its life) and its body in `bodies` (keyed by a sequence number in arrival order,
//! written once at intake and removed once at delivery). The body holds what is large and
//! never changes: the form's payload, the client's address and user agent. So a delivery
//! attempt rewrites a value of about 150 bytes, and bodies are added and removed in arrival
//! order, which leaves sled whole pages to drop instead of scattered ones to rewrite.
//!
//! # Formats
//! Every value starts with a format byte followed by a postcard encoding of a struct defined
//! here, owned by the store and apart from the intake and HTTP types. postcard has a specified,
//! stable wire format: a struct's fields and an enum's variants must never be reordered,
//! removed or retyped. A change of shape is a new format byte with a new struct, and the old
//! one stays readable.
//!
//! | byte | tree      | shape          | written by                                         |
//! |------|-----------|----------------|----------------------------------------------------|
//! | 1    | `entries` | [`RecordV1`]   | releases before store format 3 (read only)         |
//! | 2    | `entries` | [`TombstoneV2`]| releases before store format 3 (read only)         |
//! | 3    | `entries` | [`StateV3`]    | this release; `body` names its `bodies` key        |
//! | 1    | `bodies`  | [`BodyV1`]     | this release                                       |
//!
//! A record read in an older format is rewritten in the current one at its next change.
//! Committed golden files (`src/store/golden/`) hold encoded values of every shape and status
//! for each format; a test decodes them all on every build. A value that does not decode is
//! never deleted: it is moved to the `quarantine` tree.

use crate::intake::enrich::Enrichment;
use serde::{Deserialize, Serialize};

/// `entries`: a whole record (releases before store format 3).
pub const FORMAT_V1: u8 = 1;
/// `entries`: a delivered record without payload (releases before store format 3).
pub const FORMAT_TOMBSTONE: u8 = 2;
/// `entries`: a record's state; its body, if any, in `bodies`.
pub const FORMAT_V3: u8 = 3;
/// `bodies`: payload, client address, user agent.
pub const BODY_V1: u8 = 1;

/// Variant order is part of the stored format (postcard writes the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for its next delivery attempt.
    Pending,
    /// Being sent by the delivery worker. Claims live in the worker's memory and are never
    /// written; only stores written by releases that persisted leases hold this status.
    InFlight,
    /// Accepted by the dashboard; kept (without its body) for the idempotency window.
    Delivered,
    /// Given up on; kept until an operator replays, edits or purges it.
    Dead,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Pending,
        Status::InFlight,
        Status::Delivered,
        Status::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InFlight => "in_flight",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether records in this status sit in the due index (and the queue index).
    pub fn is_queued(self) -> bool {
        matches!(self, Status::Pending | Status::InFlight)
    }
}

/// One line of a record's audit trail (edits, replays). Field order is part of the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub action: String,
    pub previous_payload_hash: Option<[u8; 32]>,
    pub note: Option<String>,
}

/// A record as the rest of the service sees it: state and body together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub trace_id: String,
    pub status: Status,
    pub attempts: u32,
    pub received_at_ms: i64,
    /// For queued records, the time part of its due-index key.
    pub next_attempt_at_ms: i64,
    pub last_attempt_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_status_code: Option<u16>,
    /// SHA-256 of the normalized payload (see [`crate::store::payload_hash`]).
    pub payload_hash: [u8; 32],
    /// The form's own fields as JSON text; `None` once dropped after delivery.
    pub payload: Option<String>,
    pub enrichment: Enrichment,
    pub delivered_at_ms: Option<i64>,
    pub dead_at_ms: Option<i64>,
    pub audit: Vec<AuditEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record value")]
    Empty,
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    #[error("record does not decode: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("the record's body {0} is missing")]
    MissingBody(u64),
    #[error("the record's body could not be read: {0}")]
    BodyRead(String),
}

/// Format 1: a whole record, enrichment included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordV1 {
    pub trace_id: String,
    pub status: Status,
    pub attempts: u32,
    pub received_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub last_attempt_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_status_code: Option<u16>,
    pub payload_hash: [u8; 32],
    pub payload: Option<String>,
    pub enrichment: EnrichmentV1,
    pub delivered_at_ms: Option<i64>,
    pub dead_at_ms: Option<i64>,
    pub audit: Vec<AuditEntry>,
}

/// The enrichment as format 1 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichmentV1 {
    pub received_at: String,
    pub client_ip: String,
    pub user_agent: Option<String>,
    pub trace_id: String,
    pub src: String,
    pub form_type: String,
}

/// Format 2: a delivered record whose payload is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneV2 {
    pub trace_id: String,
    pub received_at_ms: i64,
    pub received_at: String,
    pub src: String,
    pub form_type: String,
    pub payload_hash: [u8; 32],
    pub attempts: u32,
    pub last_attempt_at_ms: Option<i64>,
    pub last_status_code: Option<u16>,
    pub delivered_at_ms: Option<i64>,
    pub audit: Vec<AuditEntry>,
}

/// Format 3: everything but the body, and the `bodies` key of the body if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV3 {
    pub trace_id: String,
    pub status: Status,
    pub attempts: u32,
    pub received_at_ms: i64,
    pub received_at: String,
    pub next_attempt_at_ms: i64,
    pub last_attempt_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_status_code: Option<u16>,
    pub payload_hash: [u8; 32],
    pub src: String,
    pub form_type: String,
    pub delivered_at_ms: Option<i64>,
    pub dead_at_ms: Option<i64>,
    pub audit: Vec<AuditEntry>,
    pub body: Option<u64>,
}

/// Body format 1: what a record carries that is large and never changes. The trace ID ties
/// a body to its record should the record's state ever be lost (see `verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyV1 {
    pub trace_id: String,
    pub payload: Option<String>,
    pub client_ip: String,
    pub user_agent: Option<String>,
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Record {
        let e = r.enrichment;
        Record {
            trace_id: r.trace_id,
            status: r.status,
            attempts: r.attempts,
            received_at_ms: r.received_at_ms,
            next_attempt_at_ms: r.next_attempt_at_ms,
            last_attempt_at_ms: r.last_attempt_at_ms,
            last_error: r.last_error,
            last_status_code: r.last_status_code,
            payload_hash: r.payload_hash,
            payload: r.payload,
            enrichment: Enrichment {
                received_at: e.received_at,
                client_ip: e.client_ip,
                user_agent: e.user_agent,
                trace_id: e.trace_id,
                src: e.src,
                form_type: e.form_type,
            },
            delivered_at_ms: r.delivered_at_ms,
            dead_at_ms: r.dead_at_ms,
            audit: r.audit,
        }
    }
}

impl From<TombstoneV2> for Record {
    fn from(t: TombstoneV2) -> Record {
        Record {
            status: Status::Delivered,
            attempts: t.attempts,
            received_at_ms: t.received_at_ms,
            next_attempt_at_ms: t.received_at_ms,
            last_attempt_at_ms: t.last_attempt_at_ms,
            last_error: None,
            last_status_code: t.last_status_code,
            payload_hash: t.payload_hash,
            payload: None,
            enrichment: Enrichment {
                received_at: t.received_at,
                client_ip: String::new(),
                user_agent: None,
                trace_id: t.trace_id.clone(),
                src: t.src,
                form_type: t.form_type,
            },
            trace_id: t.trace_id,
            delivered_at_ms: t.delivered_at_ms,
            dead_at_ms: None,
            audit: t.audit,
        }
    }
}

impl StateV3 {
    fn of(r: &Record, body: Option<u64>) -> StateV3 {
        StateV3 {
            trace_id: r.trace_id.clone(),
            status: r.status,
            attempts: r.attempts,
            received_at_ms: r.received_at_ms,
            received_at: r.enrichment.received_at.clone(),
            next_attempt_at_ms: r.next_attempt_at_ms,
            last_attempt_at_ms: r.last_attempt_at_ms,
            last_error: r.last_error.clone(),
            last_status_code: r.last_status_code,
            payload_hash: r.payload_hash,
            src: r.enrichment.src.clone(),
            form_type: r.enrichment.form_type.clone(),
            delivered_at_ms: r.delivered_at_ms,
            dead_at_ms: r.dead_at_ms,
            audit: r.audit.clone(),
            body,
        }
    }

    /// The record without its body: no payload, client address or user agent.
    fn into_record(self) -> Record {
        Record {
            status: self.status,
            attempts: self.attempts,
            received_at_ms: self.received_at_ms,
            next_attempt_at_ms: self.next_attempt_at_ms,
            last_attempt_at_ms: self.last_attempt_at_ms,
            last_error: self.last_error,
            last_status_code: self.last_status_code,
            payload_hash: self.payload_hash,
            payload: None,
            enrichment: Enrichment {
                received_at: self.received_at,
                client_ip: String::new(),
                user_agent: None,
                trace_id: self.trace_id.clone(),
                src: self.src,
                form_type: self.form_type,
            },
            trace_id: self.trace_id,
            delivered_at_ms: self.delivered_at_ms,
            dead_at_ms: self.dead_at_ms,
            audit: self.audit,
        }
    }
}

/// An `entries` value, decoded. When the record's body is stored apart, the record is not
/// whole until [`Entry::complete`] adds it; [`Entry::state`] serves what needs no body
/// (idempotency, indexes, counts).
#[derive(Debug, Clone)]
pub struct Entry {
    record: Record,
    body: Option<u64>,
}

impl Entry {
    /// The `bodies` key this entry points to, if its body is stored apart.
    pub fn body_key(&self) -> Option<u64> {
        self.body
    }

    /// Status, times, attempts, hash and receipt; payload, client address and user agent may
    /// be missing.
    pub fn state(&self) -> &Record {
        &self.record
    }

    /// The whole record, given the value under [`Entry::body_key`] (`None` if absent).
    pub fn complete(self, body: Option<&[u8]>) -> Result<Record, DecodeError> {
        let mut record = self.record;
        if let Some(key) = self.body {
            let b = decode_body(body.ok_or(DecodeError::MissingBody(key))?)?;
            record.payload = b.payload;
            record.enrichment.client_ip = b.client_ip;
            record.enrichment.user_agent = b.user_agent;
        }
        Ok(record)
    }
}

/// Whether `record` keeps a body: every record but a delivered one whose payload is dropped
/// (a tombstone, kept for the idempotency window).
pub fn has_body(record: &Record) -> bool {
    !(record.status == Status::Delivered && record.payload.is_none())
}

/// Whether two versions of a record carry the same body (then it is not rewritten).
pub fn same_body(a: &Record, b: &Record) -> bool {
    a.payload == b.payload
        && a.enrichment.client_ip == b.enrichment.client_ip
        && a.enrichment.user_agent == b.enrichment.user_agent
}

/// The `entries` value for `record`, whose body is under `body` (see [`has_body`]).
pub fn encode_state(record: &Record, body: Option<u64>) -> Vec<u8> {
    let mut out = vec![FORMAT_V3];
    // Serializing plain owned data into a Vec cannot fail.
    out.extend(postcard::to_stdvec(&StateV3::of(record, body)).expect("state serializes"));
    out
}

/// The `bodies` value for `record`.
pub fn encode_body(record: &Record) -> Vec<u8> {
    let body = BodyV1 {
        trace_id: record.trace_id.clone(),
        payload: record.payload.clone(),
        client_ip: record.enrichment.client_ip.clone(),
        user_agent: record.enrichment.user_agent.clone(),
    };
    let mut out = vec![BODY_V1];
    out.extend(postcard::to_stdvec(&body).expect("body serializes"));
    out
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let (record, body) = match bytes.split_first() {
        None => return Err(DecodeError::Empty),
        Some((&FORMAT_V1, rest)) => (postcard::from_bytes::<RecordV1>(rest)?.into(), None),
        Some((&FORMAT_TOMBSTONE, rest)) => {
            (postcard::from_bytes::<TombstoneV2>(rest)?.into(), None)
        }
        Some((&FORMAT_V3, rest)) => {
            let s = postcard::from_bytes::<StateV3>(rest)?;
            let body = s.body;
            (s.into_record(), body)
        }
        Some((&v, _)) => return Err(DecodeError::UnknownVersion(v)),
    };
    Ok(Entry { record, body })
}

pub fn decode_body(bytes: &[u8]) -> Result<BodyV1, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&BODY_V1, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(DecodeError::UnknownVersion(v)),
    }
}

/// The `bodies` key for sequence number `seq`: big-endian, so keys sort in arrival order.
pub fn body_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

impl Record {
    /// A new record waiting for its first delivery attempt at `now_ms`. The trace ID is the
    /// enrichment's; the payload is kept as JSON text with the hash of its normal form.
    pub fn pending(
        fields: serde_json::Map<String, serde_json::Value>,
        enrichment: Enrichment,
        now_ms: i64,
    ) -> Record {
        let (payload, payload_hash) = super::normal_payload(&fields);
        Record {
            trace_id: enrichment.trace_id.clone(),
            status: Status::Pending,
            attempts: 0,
            received_at_ms: now_ms,
            next_attempt_at_ms: now_ms,
            last_attempt_at_ms: None,
            last_error: None,
            last_status_code: None,
            payload_hash,
            payload: Some(payload),
            enrichment,
            delivered_at_ms: None,
            dead_at_ms: None,
            audit: vec![],
        }
    }

    /// Whether the record sits in the `queue` index: queued, and not fresh. A fresh record
    /// (pending, due at its own receipt time: never claimed) is ordered by arrival in `due`
    /// already, so intake writes one index entry fewer.
    pub fn in_queue_index(&self) -> bool {
        self.status.is_queued() && !self.is_fresh()
    }

    /// Pending and due at its receipt time: its `due` key is its arrival key.
    pub fn is_fresh(&self) -> bool {
        self.status == Status::Pending && self.next_attempt_at_ms == self.received_at_ms
    }

    /// The receipt a client gets for this record, first time or duplicate.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            trace_id: self.trace_id.clone(),
            received_at: self.enrichment.received_at.clone(),
        }
    }
}

/// What `202 Accepted` (and a duplicate's `200`) carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub trace_id: String,
    pub received_at: String,
}

#[cfg(test)]
pub(crate) fn sample(trace_id: &str) -> Record {
    Record {
        trace_id: trace_id.into(),
        status: Status::Pending,
        attempts: 0,
        received_at_ms: 1_700_000_000_000,
        next_attempt_at_ms: 1_700_000_000_000,
        last_attempt_at_ms: None,
        last_error: None,
        last_status_code: None,
        payload_hash: [7; 32],
        payload: Some(r#"{"email":"a@b.c"}"#.into()),
        enrichment: Enrichment {
            received_at: "2023-11-14T22:13:20.000Z".into(),
            client_ip: "203.0.113.1".into(),
            user_agent: Some("test".into()),
            trace_id: trace_id.into(),
            src: "site-proxy".into(),
            form_type: "newsletter".into(),
        },
        delivered_at_ms: None,
        dead_at_ms: None,
        audit: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};
    use std::path::{Path, PathBuf};

    /// Encodes as the store does and reads it back.
    fn round_trip(r: &Record) -> Record {
        let body = has_body(r).then_some(7);
        let entry = decode_entry(&encode_state(r, body)).unwrap();
        assert_eq!(entry.body_key(), body);
        entry
            .complete(body.map(|_| encode_body(r)).as_deref())
            .unwrap()
    }

    #[test]
    fn a_new_record_stores_its_payload_in_normal_form_under_that_forms_hash() {
        let fields = |text: &str| match serde_json::from_str(text).unwrap() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let enrichment = sample("trace-norm").enrichment;
        let a = Record::pending(
            fields(r#"{ "b": [1, 2], "a": "x" }"#),
            enrichment.clone(),
            1,
        );
        let b = Record::pending(fields(r#"{"a":"x","b":[1,2]}"#), enrichment, 2);
        assert_eq!(a.payload.as_deref(), Some(r#"{"a":"x","b":[1,2]}"#));
        assert_eq!(a.payload, b.payload);
        assert_eq!(a.payload_hash, b.payload_hash);
        let stored: [u8; 32] = Sha256::digest(a.payload.unwrap().as_bytes()).into();
        assert_eq!(a.payload_hash, stored);
    }

    #[test]
    fn state_and_body_round_trip() {
        let r = sample("trace-0001");
        assert_eq!(round_trip(&r), r);
    }

    #[test]
    fn the_state_is_small_and_the_body_holds_what_never_changes() {
        let mut r = sample("8e5a3a1e-7d0f-4c1e-9a43-3f1c2b0d9e11");
        r.payload = Some(format!(r#"{{"message":"{}"}}"#, "x".repeat(300)));
        r.enrichment.user_agent = Some("Mozilla/5.0 ".repeat(10));
        let state = encode_state(&r, Some(1));
        assert!(state.len() < 150, "{} bytes", state.len());
        assert!(encode_body(&r).len() > 400);
        let entry = decode_entry(&state).unwrap();
        assert_eq!(entry.state().payload_hash, r.payload_hash);
        assert_eq!(entry.state().receipt(), r.receipt());
        // Without its body the record is not whole, and says so.
        assert!(matches!(
            entry.complete(None),
            Err(DecodeError::MissingBody(1))
        ));
    }

    #[test]
    fn a_delivered_record_without_payload_keeps_no_body() {
        let mut r = sample("trace-0001-delivered");
        r.status = Status::Delivered;
        r.delivered_at_ms = Some(1_700_000_000_600);
        assert!(
            has_body(&r),
            "a delivered record that keeps its payload keeps its body"
        );
        r.payload = None;
        assert!(!has_body(&r));
        let back = round_trip(&r);
        // What idempotency, the purge and inspect need survives; the client's address and
        // user agent do not.
        let mut expected = r.clone();
        expected.enrichment.client_ip = String::new();
        expected.enrichment.user_agent = None;
        assert_eq!(back, expected);
        // A dead record whose payload was erased keeps the rest of its body.
        r.status = Status::Dead;
        assert!(has_body(&r));
        assert_eq!(round_trip(&r), r);
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors() {
        assert!(matches!(decode_entry(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            decode_entry(&[9, 1, 2]),
            Err(DecodeError::UnknownVersion(9))
        ));
        assert!(matches!(
            decode_entry(&[FORMAT_V1, 0xff]),
            Err(DecodeError::Postcard(_))
        ));
        assert!(matches!(
            decode_body(&[2, 0]),
            Err(DecodeError::UnknownVersion(2))
        ));
    }

    fn golden_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/golden")
    }

    fn expected(path: &Path) -> Record {
        let text = std::fs::read_to_string(path.with_extension("json"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Every golden value of every format decodes to the record beside it. A change to a
    /// stored struct, or to the order of `Status`, fails here before it reaches a user's disk.
    #[test]
    fn golden_values_of_every_format_decode() {
        let mut seen: std::collections::BTreeSet<(String, &str)> = Default::default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .filter(|p| !p.to_string_lossy().ends_with(".body.bin"))
            .collect();
        files.sort();
        for path in &files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let version = name.split('-').next().unwrap().to_owned();
            let entry = decode_entry(&std::fs::read(path).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let body_path =
                PathBuf::from(path.to_string_lossy().replace(".state.bin", ".body.bin"));
            let body = entry
                .body_key()
                .map(|_| std::fs::read(&body_path).unwrap_or_else(|e| panic!("{name}: {e}")));
            let base = PathBuf::from(path.to_string_lossy().replace(".state.bin", ".bin"));
            let want = expected(&base);
            let got = entry
                .complete(body.as_deref())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, want, "{name}");
            seen.insert((version, got.status.as_str()));
        }
        for version in ["v1", "v3"] {
            for status in Status::ALL {
                assert!(
                    seen.contains(&(version.to_owned(), status.as_str())),
                    "no golden {version} value for status {}",
                    status.as_str()
                );
            }
        }
        assert!(seen.contains(&("v2".to_owned(), "delivered")));
    }

    /// Writes the golden values of the current format that are not there yet, from the
    /// format 1 samples: `OUTBOX_WRITE_GOLDEN=1 cargo test --lib write_golden`. Committed
    /// files are never rewritten.
    #[test]
    fn write_golden_values_of_the_current_format() {
        if std::env::var_os("OUTBOX_WRITE_GOLDEN").is_none() {
            return;
        }
        let dir = golden_dir();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(stem) = name
                .strip_prefix("v1-")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let state_path = dir.join(format!("v3-{stem}.state.bin"));
            if state_path.exists() {
                continue;
            }
            let r = expected(&path);
            let body = has_body(&r).then_some(42);
            std::fs::write(&state_path, encode_state(&r, body)).unwrap();
            if body.is_some() {
                std::fs::write(dir.join(format!("v3-{stem}.body.bin")), encode_body(&r)).unwrap();
            }
            let back = round_trip(&r);
            std::fs::write(
                dir.join(format!("v3-{stem}.json")),
                serde_json::to_string_pretty(&back).unwrap() + "\n",
            )
            .unwrap();
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_entry(&bytes);
            let _ = decode_body(&bytes);
        }

        #[test]
        fn round_trip_any_payload(payload in ".{0,200}", attempts in any::<u32>(), code in proptest::option::of(any::<u16>())) {
            let mut r = sample("trace-0002");
            r.payload = Some(payload);
            r.attempts = attempts;
            r.last_status_code = code;
            prop_assert_eq!(round_trip(&r), r);
        }
    }
}
