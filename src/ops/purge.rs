//! `outbox purge`: drop delivered tombstones older than a date, or erase everything held
//! about one email address (a privacy request).
//!
//! Erasure removes every record whose payload or enrichment mentions the address in any
//! letter case, dead letters included; removes quarantined copies that mention it; and
//! scrubs it from audit notes of records that are otherwise kept. Erased records count as
//! purged, so the accounting identity still holds.

use crate::ops::handler::Progress;
use crate::store::done::TOMBSTONE;
use crate::store::record::{self, Record, Status};
use crate::store::{Change, Store, Updated};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an audit note says where an erased address was.
const ERASED: &str = "[erased]";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PurgeQuery {
    /// Drop delivered tombstones delivered before this time (ms).
    pub delivered_before_ms: Option<i64>,
    pub erase_email: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub tombstones_purged: u64,
    /// Trace IDs of records erased (or, in a dry run, that would be).
    pub erased: Vec<String>,
    pub quarantined_copies_erased: u64,
    pub audit_notes_scrubbed: u64,
    /// Bodies holding the address whose record's state was lost (see `Store::orphan_bodies`).
    #[serde(default)]
    pub orphan_bodies_erased: u64,
}

/// Whether `haystack` contains `needle_lower` in any letter case.
fn mentions(haystack: &str, needle_lower: &str) -> bool {
    haystack.to_lowercase().contains(needle_lower)
}

fn value_mentions(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => mentions(s, needle),
        Value::Array(a) => a.iter().any(|x| value_mentions(x, needle)),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| mentions(k, needle) || value_mentions(x, needle)),
        _ => false,
    }
}

/// Whether a record holds the address in its payload or enrichment.
pub fn record_mentions(r: &Record, needle_lower: &str) -> bool {
    let payload = r.payload.as_deref().unwrap_or("");
    let parsed = serde_json::from_str::<Value>(payload).unwrap_or(Value::Null);
    let e = &r.enrichment;
    mentions(payload, needle_lower)
        || value_mentions(&parsed, needle_lower)
        || [
            &e.client_ip,
            &e.trace_id,
            &e.src,
            &e.form_type,
            &e.received_at,
        ]
        .iter()
        .any(|s| mentions(s, needle_lower))
        || e.user_agent
            .as_deref()
            .is_some_and(|ua| mentions(ua, needle_lower))
}

fn audit_mentions(r: &Record, needle: &str) -> bool {
    r.audit
        .iter()
        .any(|a| a.note.as_deref().is_some_and(|n| mentions(n, needle)))
}

/// Replaces every case variant of `needle_lower` in `text` by [`ERASED`].
fn scrub(text: &str, needle_lower: &str) -> String {
    let lower = text.to_lowercase();
    if lower.len() != text.len() {
        // Lower-casing changed byte offsets (rare scripts): drop the whole note.
        return ERASED.into();
    }
    let mut out = String::new();
    let mut last = 0;
    for (i, _) in lower.match_indices(needle_lower) {
        out.push_str(&text[last..i]);
        out.push_str(ERASED);
        last = i + needle_lower.len();
    }
    out.push_str(&text[last..]);
    out
}

pub fn purge(store: &Store, q: &PurgeQuery, progress: Progress) -> anyhow::Result<PurgeReport> {
    anyhow::ensure!(
        q.delivered_before_ms.is_some() || q.erase_email.is_some(),
        "say what to purge: --before DATE / --older-than AGE, or --erase-email ADDRESS"
    );
    let mut report = PurgeReport {
        dry_run: q.dry_run,
        ..Default::default()
    };
    if let Some(before) = q.delivered_before_ms {
        let due = store.delivered_before(TOMBSTONE, before, usize::MAX)?;
        let total = due.len() as u64;
        for (i, (at, id)) in due.into_iter().enumerate() {
            let gone = if q.dry_run {
                store
                    .get(&id)?
                    .is_some_and(|r| r.status == Status::Delivered)
            } else {
                let out = store.update(&id, |r| match (r.status, r.delivered_at_ms) {
                    (Status::Delivered, Some(t)) if t < before => Change::Purge,
                    (Status::Delivered, None) if r.received_at_ms < before => Change::Purge,
                    _ => Change::Keep,
                })?;
                if out == Updated::NotFound {
                    store.forget_delivered(TOMBSTONE, at, &id)?;
                }
                out == Updated::Purged
            };
            report.tombstones_purged += u64::from(gone);
            progress(i as u64 + 1, Some(total));
        }
    }
    if let Some(email) = &q.erase_email {
        erase(
            store,
            &email.trim().to_lowercase(),
            q.dry_run,
            &mut report,
            progress,
        )?;
    }
    Ok(report)
}

/// How long an erasure waits for the delivery of a record it must erase to end.
const ERASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

fn erase(
    store: &Store,
    needle: &str,
    dry_run: bool,
    report: &mut PurgeReport,
    progress: Progress,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        needle.len() >= 3 && needle.contains('@'),
        "--erase-email needs a full email address"
    );
    let total = store.trees.entries.len() as u64;
    let mut erase_ids = Vec::new();
    let mut scrub_ids = Vec::new();
    let mut raw_ids = Vec::new();
    for (i, item) in store.trees.entries.iter().enumerate() {
        let (k, v) = item?;
        let id = String::from_utf8_lossy(&k).into_owned();
        match store.decode_entry(&v) {
            Ok(r) if record_mentions(&r, needle) => erase_ids.push(id),
            Ok(r) if audit_mentions(&r, needle) => scrub_ids.push(id),
            Ok(_) => {}
            Err(_) if raw_mentions(store, &v, needle)? => raw_ids.push(id),
            Err(_) => {}
        }
        progress(i as u64 + 1, Some(total));
    }
    if dry_run {
        report.erased = erase_ids.into_iter().chain(raw_ids).collect();
        report.audit_notes_scrubbed = scrub_ids.len() as u64;
    } else {
        // A record being delivered is erased as soon as its attempt ends.
        let busy = |id: &str| {
            anyhow::anyhow!("record {id} was being delivered for over {ERASE_PATIENCE:?}; run the erasure again")
        };
        for id in erase_ids {
            let decide = |r: &record::Record| match record_mentions(r, needle) {
                true => Change::Purge,
                false => Change::Keep,
            };
            match store.update_when_settled(&id, decide, ERASE_PATIENCE)? {
                Updated::Purged => report.erased.push(id),
                Updated::Busy(_) => return Err(busy(&id)),
                _ => {}
            }
        }
        for id in scrub_ids {
            let decide = |r: &record::Record| {
                let mut n = r.clone();
                for a in &mut n.audit {
                    a.note = a.note.as_deref().map(|t| scrub(t, needle));
                }
                Change::Put(n)
            };
            if let Updated::Busy(_) = store.update_when_settled(&id, decide, ERASE_PATIENCE)? {
                return Err(busy(&id));
            }
            report.audit_notes_scrubbed += 1;
        }
        // An undecodable entry cannot be read to be sure; it holds the address in its raw
        // bytes, so it goes: through quarantine, which keeps the accounting.
        for id in raw_ids {
            store.quarantine(&id, "erased on request")?;
            store.drop_quarantined(id.as_bytes())?;
            report.erased.push(id);
        }
    }
    let mut quarantined = Vec::new();
    for item in store.trees.quarantine.iter() {
        let (k, v) = item?;
        let doc: Value = serde_json::from_slice(&v).unwrap_or(Value::Null);
        let original = |key: &str| {
            doc[key]
                .as_str()
                .and_then(|h| hex::decode(h).ok())
                .unwrap_or_default()
        };
        if mentions(&String::from_utf8_lossy(&v), needle)
            || mentions(&String::from_utf8_lossy(&original("original_hex")), needle)
            || mentions(
                &String::from_utf8_lossy(&original("original_body_hex")),
                needle,
            )
        {
            quarantined.push(k.to_vec());
        }
    }
    // A body whose record's state was lost holds the address with no record to erase.
    for (key, bytes) in store.orphan_bodies()? {
        if mentions(&String::from_utf8_lossy(&bytes), needle) {
            if !dry_run {
                store.drop_orphan_body(key)?;
            }
            report.orphan_bodies_erased += 1;
        }
    }
    for k in quarantined {
        if dry_run || store.drop_quarantined(&k)? {
            report.quarantined_copies_erased += 1;
        }
    }
    Ok(())
}

/// Whether an entry that does not decode, or the body it points to, mentions `needle`.
fn raw_mentions(store: &Store, value: &[u8], needle: &str) -> anyhow::Result<bool> {
    if mentions(&String::from_utf8_lossy(value), needle) {
        return Ok(true);
    }
    let body = record::decode_entry(value)
        .ok()
        .and_then(|e| e.body_key())
        .map(|k| store.trees.bodies.get(record::body_key(k)))
        .transpose()?
        .flatten();
    Ok(body.is_some_and(|b| mentions(&String::from_utf8_lossy(&b), needle)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::sample;

    #[test]
    fn an_address_is_found_in_any_case_and_scrubbed_from_notes() {
        let mut r = sample("trace-erase-1");
        r.payload = Some(r#"{"email":"Jo.Doe@Example.com"}"#.into());
        assert!(record_mentions(&r, "jo.doe@example.com"));
        assert!(!record_mentions(&r, "jo@example.com"));
        assert_eq!(
            scrub("fixed JO.DOE@example.COM typo", "jo.doe@example.com"),
            "fixed [erased] typo"
        );
    }

    #[test]
    fn an_erasure_reaches_the_bodies_of_records_that_do_not_decode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for id in ["trace-erase-3", "trace-erase-4"] {
            let mut r = sample(id);
            r.payload = Some(r#"{"email":"jo@example.com"}"#.into());
            rt.block_on(store.submit(r)).unwrap();
        }
        // The first record's body is cut short: its state is fine, the record is not.
        let (key, body) = store.trees.bodies.first().unwrap().unwrap();
        store
            .trees
            .bodies
            .insert(key, &body[..body.len() - 3])
            .unwrap();
        // The second record's state is damaged (a bad status): its body is left unclaimed.
        let mut v = store
            .trees
            .entries
            .get("trace-erase-4")
            .unwrap()
            .unwrap()
            .to_vec();
        v[2 + "trace-erase-4".len()] = 9;
        store.trees.entries.insert("trace-erase-4", v).unwrap();
        assert!(store.get("trace-erase-3").is_err() && store.get("trace-erase-4").is_err());

        let mut report = PurgeReport::default();
        erase(&store, "jo@example.com", false, &mut report, &|_, _| {}).unwrap();
        assert_eq!(report.erased, vec!["trace-erase-3".to_owned()]);
        assert_eq!(report.orphan_bodies_erased, 1);
        assert!(
            store.trees.bodies.is_empty(),
            "no copy of the address is left"
        );
        assert!(store.trees.quarantine.is_empty());
    }

    #[test]
    fn escaped_json_still_matches() {
        let mut r = sample("trace-erase-2");
        r.payload = Some(r#"{"note":"jo\u0040example.com"}"#.into());
        assert!(record_mentions(&r, "jo@example.com"));
    }
}
