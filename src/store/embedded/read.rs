//! Reads for the ops commands, so that nothing outside the store touches a tree or decodes a
//! value: records and quarantine entries as types, trace ID look-ups, and the checksum a
//! backup manifest carries (the consistency check behind `outbox verify` is [`super::check`]).
//!
//! Every read here is a scan without the write gate: fine for an operator's query, never on a
//! hot path. Whoever changes the tree layout or the value encoding adapts this file.

use super::counters::Counts;
use super::keys;
use super::record::{self, Record, Status};
use super::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A value of the `quarantine` tree: a record that could not be decoded or sent, kept with
/// why. Stored as JSON; the fields are declared in the order earlier releases wrote them
/// (alphabetical), so the bytes on disk are the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// The bytes of the record's body (see [`super::record`]), in hex, when it had one
    /// apart from its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_body_hex: Option<String>,
    /// The entry's bytes as they were in `entries`, in hex.
    pub original_hex: String,
    /// `original_hex` holds a row the PostgreSQL store quarantined (the JSON text of the
    /// row), not bytes of this store: `outbox move-store --to embedded` brings such rows
    /// here, and a move back to PostgreSQL restores them. Absent (false) otherwise, so
    /// entries this store writes keep their bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub postgres_row: bool,
    /// The status its index entries said it had, when it was queued.
    pub previous_status: Option<String>,
    pub quarantined_at_ms: i64,
    pub reason: String,
}

impl QuarantineEntry {
    pub fn new(reason: &str, at_ms: i64, previous: Option<Status>, original: &[u8]) -> Self {
        QuarantineEntry {
            original_body_hex: None,
            original_hex: hex::encode(original),
            postgres_row: false,
            previous_status: previous.map(|s| s.as_str().to_owned()),
            quarantined_at_ms: at_ms,
            reason: reason.to_owned(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data serializes")
    }

    /// Reads a stored entry. One that is not such JSON (never written by any release) is
    /// shown rather than hidden: its bytes become `original_hex`, the reason says so.
    pub fn decode(bytes: &[u8]) -> QuarantineEntry {
        serde_json::from_slice(bytes).unwrap_or_else(|e| QuarantineEntry {
            original_body_hex: None,
            original_hex: hex::encode(bytes),
            postgres_row: false,
            previous_status: None,
            quarantined_at_ms: 0,
            reason: format!("unreadable quarantine entry ({e})"),
        })
    }

    /// The original entry's bytes.
    pub fn original(&self) -> Vec<u8> {
        hex::decode(&self.original_hex).unwrap_or_default()
    }

    /// The original body's bytes (empty if it had none apart from its state).
    pub fn original_body(&self) -> Vec<u8> {
        let hex = self.original_body_hex.as_deref().unwrap_or_default();
        hex::decode(hex).unwrap_or_default()
    }
}

/// One quarantined entry and the key it had in `entries`.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub trace_id: String,
    pub entry: QuarantineEntry,
}

/// One item of `entries`: the trace ID it is stored under, and its record or why not.
#[derive(Debug, Clone)]
pub struct Entry {
    pub trace_id: String,
    pub record: Result<Record, Undecodable>,
}

/// A stored value that does not decode.
#[derive(Debug, Clone)]
pub struct Undecodable {
    pub bytes: Vec<u8>,
    /// The body the state points to, as stored, if it names one that exists.
    pub body: Option<Vec<u8>>,
    pub error: String,
}

/// Counts and checksum of the records in a data directory, for a backup manifest.
#[derive(Debug, Clone)]
pub struct Digest {
    pub counts: Counts,
    pub records: u64,
    /// SHA-256 over every `entries` item in key order, then every `bodies` item in key
    /// order: for each, the key length (u32 BE), the key, the value length (u32 BE), the
    /// value. A store from before bodies were kept apart has none, so its backups keep the
    /// checksum they were written with.
    pub sha256: String,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Store {
    /// How many entries `entries` holds (records, decodable or not): a scan's total.
    pub fn entry_count(&self) -> u64 {
        self.gen().trees.entries.len() as u64
    }

    /// Every entry in trace ID order, exactly as stored (claims are not shown).
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        self.gen().trees.entries.iter().map(|item| {
            let (k, v) = item?;
            let record = match self.gen().trees.decode(&v) {
                Ok(r) => Ok(r),
                Err(e) => {
                    let body = match record::decode_entry(&v).ok().and_then(|e| e.body_key()) {
                        Some(key) => self.gen().trees.bodies.get(record::body_key(key))?,
                        None => None,
                    };
                    Err(Undecodable {
                        bytes: v.to_vec(),
                        body: body.map(|b| b.to_vec()),
                        error: e.to_string(),
                    })
                }
            };
            Ok(Entry {
                trace_id: lossy(&k),
                record,
            })
        })
    }

    /// Every record that decodes, in trace ID order, a record being delivered shown in
    /// flight (as [`Store::get`] shows it). Undecodable entries are skipped.
    pub fn records(&self) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
        let claimed = self.claimed();
        self.entries().filter_map(move |e| match e {
            Ok(Entry {
                record: Ok(mut r), ..
            }) => {
                if r.status == Status::Pending && claimed.contains(&r.trace_id) {
                    r.status = Status::InFlight;
                }
                Some(Ok(r))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
    }

    /// Whether an entry (decodable or not) is stored under `trace_id`.
    pub fn contains(&self, trace_id: &str) -> Result<bool, StoreError> {
        Ok(self.gen().trees.entries.contains_key(trace_id)?)
    }

    /// Up to `limit` stored trace IDs that start with `prefix`, in order.
    pub fn trace_ids_starting_with(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let keys = self
            .gen()
            .trees
            .entries
            .scan_prefix(prefix)
            .keys()
            .take(limit);
        keys.map(|k| Ok(lossy(&k?))).collect()
    }

    /// Every quarantined entry, in trace ID order.
    pub fn quarantined(&self) -> impl Iterator<Item = Result<Quarantined, StoreError>> + '_ {
        self.gen().trees.quarantine.iter().map(|item| {
            let (k, v) = item?;
            Ok(Quarantined {
                trace_id: lossy(&k),
                entry: QuarantineEntry::decode(&v),
            })
        })
    }
}

impl Counts {
    /// `accepted=3 pending=1 ...`, every counter in [`Counts::NAMES`] order.
    pub fn describe(&self) -> String {
        Counts::NAMES
            .iter()
            .map(|n| format!("{n}={}", self.get(n)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An index key for people: `(time, trace ID)`, else its bytes in hex.
pub(super) fn show_index_key(tree: &str, k: &[u8]) -> String {
    let k = if tree == "done" && !k.is_empty() {
        &k[1..]
    } else {
        k
    };
    match keys::split_time_key(k) {
        Some((t, id)) => {
            let at = chrono::DateTime::from_timestamp_millis(t)
                .map(crate::time::format_time)
                .unwrap_or_else(|| format!("{t} ms"));
            format!("({at}, {id})")
        }
        None => format!("0x{}", hex::encode(k)),
    }
}

/// Counts and checksum of the records of a data directory opened raw (a backup's copy).
pub fn digest(db: &sled::Db) -> Result<Digest, StoreError> {
    let counts = Counts::from_tree(&db.open_tree("counters")?)?;
    let mut h = Sha256::new();
    let mut records = 0u64;
    for tree in ["entries", "bodies"] {
        for item in db.open_tree(tree)?.iter() {
            let (k, v) = item?;
            h.update((k.len() as u32).to_be_bytes());
            h.update(&k);
            h.update((v.len() as u32).to_be_bytes());
            h.update(&v);
            records += u64::from(tree == "entries");
        }
    }
    Ok(Digest {
        counts,
        records,
        sha256: hex::encode(h.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::sample;

    #[test]
    fn a_quarantine_entry_is_the_json_earlier_releases_wrote() {
        let e = QuarantineEntry::new("bad", 7, Some(Status::Pending), &[1, 0xff]);
        let before = serde_json::json!({
            "reason": "bad",
            "quarantined_at_ms": 7,
            "previous_status": "pending",
            "original_hex": "01ff",
        });
        assert_eq!(e.encode(), serde_json::to_vec(&before).unwrap());
        assert_eq!(QuarantineEntry::decode(&e.encode()), e);
        assert_eq!(e.original(), vec![1, 0xff]);
    }

    #[test]
    fn records_skip_undecodable_entries_which_entries_and_quarantine_show() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data")).unwrap();
        futures_executor::block_on(s.submit(sample("trace-read-1"))).unwrap();
        futures_executor::block_on(s.submit(sample("trace-read-2"))).unwrap();
        s.gen()
            .trees
            .entries
            .insert("trace-read-2", &[1, 0xff])
            .unwrap();
        let ids: Vec<_> = s.records().map(|r| r.unwrap().trace_id).collect();
        assert_eq!(ids, ["trace-read-1"]);
        let bad: Vec<_> = s
            .entries()
            .filter(|e| e.as_ref().unwrap().record.is_err())
            .collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(s.trace_ids_starting_with("trace-read", 5).unwrap().len(), 2);
        s.quarantine("trace-read-2", "test").unwrap();
        let q: Vec<_> = s.quarantined().map(Result::unwrap).collect();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].trace_id, "trace-read-2");
        assert_eq!(q[0].entry.reason, "test");
        assert_eq!(q[0].entry.previous_status.as_deref(), Some("pending"));
        assert_eq!(q[0].entry.original(), vec![1, 0xff]);
        assert!(s.check(&|_, _| {}).unwrap().problems.is_empty());
    }
}
