//! The stored record and its encoding.
//!
//! Value layout in the `entries` tree: one format byte followed by a postcard encoding.
//! - [`FORMAT_V1`]: a whole [`Record`] (pending, dead, or delivered with its payload kept).
//! - [`FORMAT_TOMBSTONE`]: a delivered record whose payload is gone, as a [`Tombstone`]: what
//!   idempotency, the purge and an operator's look-up need (trace ID, receipt, payload hash,
//!   attempts, times, audit), about a fifth of a whole record. The client's address and user
//!   agent are not kept past delivery.
//!
//! postcard has a specified, stable wire format; the format byte lets a later release change
//! a struct and still read old values. A value that does not decode is never deleted: it is
//! moved to the `quarantine` tree.

use crate::intake::enrich::Enrichment;
use serde::{Deserialize, Serialize};

pub const FORMAT_V1: u8 = 1;
pub const FORMAT_TOMBSTONE: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for its next delivery attempt.
    Pending,
    /// Being sent by the delivery worker. Claims live in the worker's memory and are never
    /// written; only stores written by releases that persisted leases hold this status.
    InFlight,
    /// Accepted by the dashboard; a tombstone kept for the idempotency window.
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

/// One line of a record's audit trail (edits, replays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub action: String,
    pub previous_payload_hash: Option<[u8; 32]>,
    pub note: Option<String>,
}

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
}

/// What is left of a delivered record once its payload is dropped (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
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

impl Tombstone {
    fn of(r: &Record) -> Tombstone {
        Tombstone {
            trace_id: r.trace_id.clone(),
            received_at_ms: r.received_at_ms,
            received_at: r.enrichment.received_at.clone(),
            src: r.enrichment.src.clone(),
            form_type: r.enrichment.form_type.clone(),
            payload_hash: r.payload_hash,
            attempts: r.attempts,
            last_attempt_at_ms: r.last_attempt_at_ms,
            last_status_code: r.last_status_code,
            delivered_at_ms: r.delivered_at_ms,
            audit: r.audit.clone(),
        }
    }

    fn into_record(self) -> Record {
        Record {
            status: Status::Delivered,
            attempts: self.attempts,
            received_at_ms: self.received_at_ms,
            next_attempt_at_ms: self.received_at_ms,
            last_attempt_at_ms: self.last_attempt_at_ms,
            last_error: None,
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
            dead_at_ms: None,
            audit: self.audit,
        }
    }
}

/// Whether `record` is stored as a [`Tombstone`]: delivered, payload dropped.
pub fn is_tombstone(record: &Record) -> bool {
    record.status == Status::Delivered && record.payload.is_none()
}

pub fn encode(record: &Record) -> Vec<u8> {
    // Serializing plain owned data into a Vec cannot fail.
    if is_tombstone(record) {
        let mut out = vec![FORMAT_TOMBSTONE];
        out.extend(postcard::to_stdvec(&Tombstone::of(record)).expect("tombstone serializes"));
        return out;
    }
    let mut out = vec![FORMAT_V1];
    out.extend(postcard::to_stdvec(record).expect("record serializes"));
    out
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&FORMAT_V1, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&FORMAT_TOMBSTONE, rest)) => {
            Ok(postcard::from_bytes::<Tombstone>(rest)?.into_record())
        }
        Some((&v, _)) => Err(DecodeError::UnknownVersion(v)),
    }
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
    fn encode_decode_round_trip() {
        let r = sample("trace-0001");
        assert_eq!(decode(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn a_delivered_record_without_payload_is_stored_as_a_small_tombstone() {
        let mut r = sample("trace-0001-delivered");
        r.status = Status::Delivered;
        r.attempts = 2;
        r.last_attempt_at_ms = Some(1_700_000_000_500);
        r.last_status_code = Some(204);
        r.delivered_at_ms = Some(1_700_000_000_600);
        r.enrichment.user_agent = Some("Mozilla/5.0 ".repeat(20));
        let whole = encode(&r);
        r.payload = None;
        let small = encode(&r);
        assert_eq!(small[0], FORMAT_TOMBSTONE);
        assert!(
            small.len() * 3 < whole.len(),
            "{} vs {}",
            small.len(),
            whole.len()
        );
        let back = decode(&small).unwrap();
        // What idempotency, the purge and inspect need survives; the client's address and
        // user agent do not.
        let mut expected = r.clone();
        expected.enrichment.client_ip = String::new();
        expected.enrichment.user_agent = None;
        expected.next_attempt_at_ms = r.received_at_ms;
        assert_eq!(back, expected);
        assert_eq!(back.receipt(), r.receipt());
        // A delivered record that keeps its payload (a retention) stays whole.
        r.payload = Some("{}".into());
        assert_eq!(encode(&r)[0], FORMAT_V1);
    }

    #[test]
    fn a_whole_delivered_record_without_payload_from_an_older_release_is_rewritten_as_a_tombstone()
    {
        // Releases before tombstones stored delivered records whole, payload dropped.
        let mut r = sample("trace-0003-old");
        r.status = Status::Delivered;
        r.payload = None;
        r.delivered_at_ms = Some(1_700_000_000_900);
        let mut old = vec![FORMAT_V1];
        old.extend(postcard::to_stdvec(&r).unwrap());
        let read = decode(&old).unwrap();
        assert_eq!(read, r);
        let rewritten = encode(&read);
        assert_eq!(rewritten[0], FORMAT_TOMBSTONE);
        let again = decode(&rewritten).unwrap();
        assert_eq!(again.receipt(), r.receipt());
        assert_eq!(again.delivered_at_ms, r.delivered_at_ms);
        assert_eq!(encode(&again), rewritten, "stable from then on");
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors() {
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            decode(&[9, 1, 2]),
            Err(DecodeError::UnknownVersion(9))
        ));
        assert!(matches!(
            decode(&[FORMAT_V1, 0xff]),
            Err(DecodeError::Postcard(_))
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn round_trip_any_payload(payload in ".{0,200}", attempts in any::<u32>(), code in proptest::option::of(any::<u16>())) {
            let mut r = sample("trace-0002");
            r.payload = Some(payload);
            r.attempts = attempts;
            r.last_status_code = code;
            prop_assert_eq!(decode(&encode(&r)).unwrap(), r);
        }
    }
}
