//! What a move compares: every record's and every quarantined entry's logical content as a
//! SHA-256, by trace ID, so the copy is checked record by record, whatever each store's own
//! encoding (postcard values in sled, columns in PostgreSQL).
//!
//! A record's hash covers everything a record is ([`Record`]'s fields, serialized as JSON in
//! their declared order): trace ID, status, attempts, times, last error and status code,
//! payload hash, payload, enrichment, audit trail. In flight counts as pending: a claim is
//! not part of the record, and a move copies none. A quarantined entry's hash covers its
//! trace ID and the entry as the embedded store writes it (reason, time, previous status and
//! the bytes set aside).

use crate::store::{Quarantined, Record, Status};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

pub type Hash = [u8; 32];

/// How many differing trace IDs an error names: enough to start looking, short enough to read.
pub const NAMED: usize = 10;

/// The hash of a record's logical content.
pub fn record_hash(r: &Record) -> Hash {
    let mut r = r.clone();
    if r.status == Status::InFlight {
        r.status = Status::Pending;
    }
    Sha256::digest(serde_json::to_vec(&r).expect("a record serializes")).into()
}

/// The hash of a quarantined entry.
pub fn quarantined_hash(q: &Quarantined) -> Hash {
    let mut h = Sha256::new();
    h.update(q.trace_id.as_bytes());
    h.update([0]);
    h.update(q.entry.encode());
    h.finalize().into()
}

/// One side of a move: each record's status and hash, each quarantined entry's hash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Digest {
    records: BTreeMap<String, (Status, Hash)>,
    quarantined: BTreeMap<String, Hash>,
}

impl Digest {
    pub fn add(&mut self, r: &Record) {
        let status = match r.status {
            Status::InFlight => Status::Pending,
            s => s,
        };
        self.records
            .insert(r.trace_id.clone(), (status, record_hash(r)));
    }

    pub fn add_quarantined(&mut self, q: &Quarantined) {
        self.quarantined
            .insert(q.trace_id.clone(), quarantined_hash(q));
    }

    pub fn records(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn quarantined(&self) -> u64 {
        self.quarantined.len() as u64
    }

    /// Whether this side holds the record, with the same content.
    pub fn holds(&self, r: &Record) -> bool {
        self.records
            .get(&r.trace_id)
            .is_some_and(|(_, h)| *h == record_hash(r))
    }

    pub fn holds_quarantined(&self, q: &Quarantined) -> bool {
        self.quarantined
            .get(&q.trace_id)
            .is_some_and(|h| *h == quarantined_hash(q))
    }

    /// How many records are in `status`.
    pub fn count(&self, status: Status) -> u64 {
        self.records.values().filter(|(s, _)| *s == status).count() as u64
    }

    /// Trace IDs this side holds that `other` does not hold the same (absent or different),
    /// in order.
    pub fn not_in(&self, other: &Digest) -> Vec<String> {
        let records = self
            .records
            .iter()
            .filter(|(id, v)| other.records.get(*id) != Some(v))
            .map(|(id, _)| id.clone());
        let quarantined = self
            .quarantined
            .iter()
            .filter(|(id, h)| other.quarantined.get(*id) != Some(h))
            .map(|(id, _)| format!("{id} (quarantined)"));
        records.chain(quarantined).collect()
    }

    /// Trace IDs that differ between the two sides (on one only, or different), in order.
    pub fn differences(&self, other: &Digest) -> Vec<String> {
        let mut ids = self.not_in(other);
        ids.extend(other.not_in(self));
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Trace IDs with more than one quarantined entry (a store may quarantine a key again after
/// it was posted anew), in order: the digest, keyed by trace ID, would hold only one.
pub fn repeated(items: &[Quarantined]) -> Vec<String> {
    let mut seen = BTreeMap::new();
    for q in items {
        *seen.entry(q.trace_id.as_str()).or_insert(0u32) += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// `a, b, c and 7 more`: the first [`NAMED`] of `ids`.
pub fn first_named(ids: &[String]) -> String {
    let shown = ids[..ids.len().min(NAMED)].join(", ");
    match ids.len().saturating_sub(NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::sample;
    use crate::store::QuarantineEntry;

    fn side(records: &[Record]) -> Digest {
        let mut d = Digest::default();
        records.iter().for_each(|r| d.add(r));
        d
    }

    #[test]
    fn every_field_of_a_record_is_in_its_hash_but_a_claim_is_not() {
        let r = sample("trace-hash");
        let changes: [&dyn Fn(&mut Record); 8] = [
            &|r| r.attempts += 1,
            &|r| r.next_attempt_at_ms += 1,
            &|r| r.last_error = Some("503".into()),
            &|r| r.payload_hash[0] ^= 1,
            &|r| r.payload = None,
            &|r| r.enrichment.received_at.push('x'),
            &|r| r.status = Status::Dead,
            &|r| r.enrichment.client_ip.clear(),
        ];
        for change in changes {
            let mut other = r.clone();
            change(&mut other);
            assert_ne!(record_hash(&r), record_hash(&other), "{other:?}");
        }
        let mut claimed = r.clone();
        claimed.status = Status::InFlight;
        assert_eq!(record_hash(&r), record_hash(&claimed));
    }

    #[test]
    fn differences_name_missing_extra_and_changed_records_in_order() {
        let (a, b, c) = (sample("trace-a"), sample("trace-b"), sample("trace-c"));
        let mut b2 = b.clone();
        b2.attempts = 9;
        let src = side(&[a.clone(), b.clone()]);
        let dst = side(&[b2, c]);
        assert_eq!(src.differences(&dst), ["trace-a", "trace-b", "trace-c"]);
        assert_eq!(src.not_in(&dst), ["trace-a", "trace-b"]);
        assert!(src.differences(&side(&[b, a])).is_empty());
        let mut with_q = src.clone();
        with_q.add_quarantined(&Quarantined {
            trace_id: "trace-q".into(),
            entry: QuarantineEntry::new("bad", 1, None, &[1]),
        });
        assert_eq!(with_q.differences(&src), ["trace-q (quarantined)"]);
        assert_eq!(src.count(Status::Pending), 2);
        let q = |id: &str| Quarantined {
            trace_id: id.into(),
            entry: QuarantineEntry::new("bad", 1, None, &[1]),
        };
        assert_eq!(repeated(&[q("x"), q("y"), q("x"), q("x")]), ["x"]);
        assert!(repeated(&[q("x"), q("y")]).is_empty());
    }

    #[test]
    fn only_the_first_ids_are_named() {
        let ids: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
        assert_eq!(
            first_named(&ids),
            "t00, t01, t02, t03, t04, t05, t06, t07, t08, t09 and 2 more"
        );
        assert_eq!(first_named(&ids[..2]), "t00, t01");
    }
}
