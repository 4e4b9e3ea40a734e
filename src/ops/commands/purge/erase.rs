//! `outbox purge --erase-email`: erase everything held about one email address (a privacy
//! request).
//!
//! Erasure removes every record whose payload or enrichment mentions the address in any
//! letter case, dead letters included; removes quarantined copies that mention it; and
//! scrubs it from audit notes of records that are otherwise kept. Erased records count as
//! purged, so the accounting identity still holds.

use crate::ops::operation::Progress;
use crate::ops::shared::Shared;
use crate::store::lifecycle::{mentions, record_mentions, ERASE_PATIENCE};
use crate::store::record::Record;
use crate::store::{
    Change, Engine, Entry, QuarantineEntry, RecordStore, Store, StoreError, Updated,
};

/// Whether a quarantined entry holds `needle` (lower case) anywhere: its reason, the
/// status it left, or its original bytes.
fn quarantine_mentions(e: &QuarantineEntry, needle: &str) -> bool {
    mentions(&e.reason, needle)
        || e.previous_status
            .as_deref()
            .is_some_and(|s| mentions(s, needle))
        || mentions(&String::from_utf8_lossy(&e.original()), needle)
        || mentions(&String::from_utf8_lossy(&e.original_body()), needle)
}

/// What an audit note says where an erased address was.
const ERASED: &str = "[erased]";

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

/// What an erasure removed (or, in a dry run, would).
#[derive(Debug, Default)]
pub struct Erased {
    /// Trace IDs of the records erased.
    pub records: Vec<String>,
    pub quarantined_copies: u64,
    pub audit_notes_scrubbed: u64,
    /// Bodies holding the address whose record's state was lost.
    pub orphan_bodies: u64,
}

/// Erases `needle` (an address, lower case) from the store.
pub fn erase(
    store: &Store,
    needle: &str,
    dry_run: bool,
    progress: Progress,
) -> anyhow::Result<Erased> {
    let mut report = Erased::default();
    check_address(needle)?;
    let total = store.entry_count();
    let mut erase_ids = Vec::new();
    let mut scrub_ids = Vec::new();
    let mut raw_ids = Vec::new();
    for (i, entry) in store.entries().enumerate() {
        let Entry {
            trace_id: id,
            record,
        } = entry?;
        match record {
            Ok(r) if record_mentions(&r, needle) => erase_ids.push(id),
            Ok(r) if audit_mentions(&r, needle) => scrub_ids.push(id),
            Ok(_) => {}
            Err(raw)
                if mentions(&String::from_utf8_lossy(&raw.bytes), needle)
                    || raw
                        .body
                        .as_deref()
                        .is_some_and(|b| mentions(&String::from_utf8_lossy(b), needle)) =>
            {
                raw_ids.push(id)
            }
            Err(_) => {}
        }
        progress(i as u64 + 1, Some(total));
    }
    if dry_run {
        report.records = erase_ids.into_iter().chain(raw_ids).collect();
        report.audit_notes_scrubbed = scrub_ids.len() as u64;
    } else {
        // A record being delivered is erased as soon as its attempt ends.
        report.records = store.erase_mentioning(erase_ids, needle)?;
        for id in scrub_ids {
            if let Updated::Busy(_) =
                store.update_when_settled(&id, scrubbing(needle), ERASE_PATIENCE)?
            {
                let (trace_id, waited) = (id, ERASE_PATIENCE);
                return Err(StoreError::StillDelivering { trace_id, waited }.into());
            }
            report.audit_notes_scrubbed += 1;
        }
        // An undecodable entry cannot be read to be sure; it holds the address in its raw
        // bytes, so it goes: through quarantine, which keeps the accounting.
        for id in raw_ids {
            store.quarantine(&id, "erased on request")?;
            store.drop_quarantined(id.as_bytes())?;
            report.records.push(id);
        }
    }
    let mut quarantined = Vec::new();
    for q in store.quarantined() {
        let q = q?;
        if quarantine_mentions(&q.entry, needle) {
            quarantined.push(q.trace_id);
        }
    }
    // A body whose record's state was lost holds the address with no record to erase.
    // Found with writers held off: a body whose record is being committed is not taken for
    // one without a record (see `Store::orphan_bodies`).
    for (key, bytes) in store.exclusive(|| store.orphan_bodies())? {
        if mentions(&String::from_utf8_lossy(&bytes), needle) {
            if !dry_run {
                store.drop_orphan_body(key)?;
            }
            report.orphan_bodies += 1;
        }
    }
    for k in quarantined {
        if dry_run || store.drop_quarantined(k.as_bytes())? {
            report.quarantined_copies += 1;
        }
    }
    Ok(report)
}

fn check_address(needle: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        needle.len() >= 3 && needle.contains('@'),
        "--erase-email needs a full email address"
    );
    Ok(())
}

/// The change that scrubs `needle` from a record's audit notes.
fn scrubbing(needle: &str) -> impl Fn(&Record) -> Change + Send + Sync + '_ {
    move |r| {
        let mut n = r.clone();
        for a in &mut n.audit {
            a.note = a.note.as_deref().map(|t| scrub(t, needle));
        }
        Change::Put(n)
    }
}

/// How often the erasure on the PostgreSQL store tries again to scrub a record under a
/// delivery lease: an attempt is short, and the erasure waits for it anyway.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// [`erase`] on the PostgreSQL store, through the store boundary: the store erases the
/// records that mention the address (a record being delivered once its attempt ends), and
/// audit notes are scrubbed one record at a time. Its quarantined entries go through the
/// PostgreSQL store's own `erase_quarantined` (the boundary lists them but erases records
/// only).
pub fn erase_shared(
    store: &Shared,
    needle: &str,
    dry_run: bool,
    progress: Progress,
) -> anyhow::Result<Erased> {
    check_address(needle)?;
    let (mut erase_ids, mut scrub_ids) = (Vec::new(), Vec::new());
    let mut seen = 0;
    store.scan(|r| {
        if record_mentions(&r, needle) {
            erase_ids.push(r.trace_id);
        } else if audit_mentions(&r, needle) {
            scrub_ids.push(r.trace_id);
        }
        seen += 1;
        progress(seen, None);
        Ok(())
    })?;
    let mut report = Erased::default();
    if let Engine::Postgres(pg) = store.engine() {
        let quarantined = pg.erase_quarantined(|e| quarantine_mentions(e, needle), dry_run);
        report.quarantined_copies = store.block(async { Ok(quarantined.await?) })?;
    }
    if dry_run {
        report.records = erase_ids;
        report.audit_notes_scrubbed = scrub_ids.len() as u64;
        return Ok(report);
    }
    report.records = store.block(store.engine().erase_address(needle))?;
    for id in scrub_ids {
        let deadline = std::time::Instant::now() + ERASE_PATIENCE;
        loop {
            match store.block(store.engine().update(&id, scrubbing(needle)))? {
                Updated::Busy(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(BUSY_RETRY)
                }
                Updated::Busy(_) => {
                    let (trace_id, waited) = (id, ERASE_PATIENCE);
                    return Err(StoreError::StillDelivering { trace_id, waited }.into());
                }
                Updated::Put(_) => {
                    report.audit_notes_scrubbed += 1;
                    break;
                }
                _ => break,
            }
        }
    }
    Ok(report)
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
        use crate::store::maintenance::open_raw;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        {
            let store = Store::open(&dir).unwrap();
            for id in ["trace-erase-3", "trace-erase-4"] {
                let mut r = sample(id);
                r.payload = Some(r#"{"email":"jo@example.com"}"#.into());
                futures_executor::block_on(store.submit(r)).unwrap();
            }
        }
        {
            let db = crate::store::when_released(|| open_raw(&dir)).unwrap();
            // The first record's body is cut short: its state is fine, the record is not.
            let bodies = db.open_tree("bodies").unwrap();
            let (key, body) = bodies.first().unwrap().unwrap();
            bodies.insert(key, &body[..body.len() - 3]).unwrap();
            // The second record's state is damaged (a bad status): it cannot say where its
            // body is.
            let entries = db.open_tree("entries").unwrap();
            let mut v = entries.get("trace-erase-4").unwrap().unwrap().to_vec();
            v[2 + "trace-erase-4".len()] = 9;
            entries.insert("trace-erase-4", v).unwrap();
            db.flush().unwrap();
        }
        let store = crate::store::when_released(|| Store::open(&dir)).unwrap();
        assert!(store.get("trace-erase-3").is_err() && store.get("trace-erase-4").is_err());
        let erased = erase(&store, "jo@example.com", false, &|_, _| {}).unwrap();
        assert_eq!(erased.records, vec!["trace-erase-3".to_owned()]);
        assert_eq!(erased.orphan_bodies, 1);
        assert!(store.orphan_bodies().unwrap().is_empty());
        let left: Vec<_> = store.entries().map(Result::unwrap).collect();
        assert_eq!(left.len(), 1, "the damaged state without the address stays");
        assert!(
            left[0].record.as_ref().unwrap_err().body.is_none(),
            "its body is gone"
        );
        assert_eq!(store.quarantined().count(), 0);
    }

    #[test]
    fn escaped_json_still_matches() {
        let mut r = sample("trace-erase-2");
        r.payload = Some(r#"{"note":"jo\u0040example.com"}"#.into());
        assert!(record_mentions(&r, "jo@example.com"));
    }
}
