//! `outbox inspect --list`: records and quarantined entries, newest first, filtered.

use super::record::imported_at;
use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::shared::Shared;
use crate::store::record::{Record, Status};
use crate::store::{Quarantined, RecordStore, Store};
use crate::time::rfc3339;
use serde::{Deserialize, Serialize};

/// Asks for a [`Listing`] (socket `op`: `list`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// `pending`, `in_flight`, `delivered`, `dead` or `quarantined`.
    pub status: Option<String>,
    pub form_type: Option<String>,
    /// Only records received at or after this time (ms).
    pub since_ms: Option<i64>,
    pub limit: usize,
}

impl Operation for ListQuery {
    const NAME: &'static str = "list";
    const READ_ONLY: bool = true;
    type Output = Listing;

    fn run(self, ctx: &OpsContext, _: Progress) -> anyhow::Result<Listing> {
        list(&ctx.store, &self)
    }

    /// The records, read a page at a time in trace ID order (none when only quarantined
    /// entries are asked for), and the quarantined entries, as on a data directory.
    fn run_shared(self, store: &Shared, _: Progress) -> anyhow::Result<Listing> {
        check_status(&self)?;
        let mut rows = Vec::new();
        if self.status.as_deref() != Some(QUARANTINED) {
            store.scan(|r| {
                if wants(
                    &self,
                    r.status.as_str(),
                    &r.enrichment.form_type,
                    r.received_at_ms,
                ) {
                    rows.push(row(&r));
                }
                Ok(())
            })?;
        }
        if self.status.as_deref().is_none_or(|s| s == QUARANTINED) {
            let entries = store.block(store.engine().quarantined())?;
            rows.extend(entries.iter().filter_map(|e| quarantined_row(&self, e)));
        }
        Ok(newest_first(rows, self.limit))
    }
}

/// One line of `inspect --list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub trace_id: String,
    pub status: String,
    pub form_type: String,
    /// When the submission was received (for an imported record: by the old proxy).
    pub received_at: String,
    /// The record's own receipt time in this store: the list's order and what `--since`
    /// compares (the import or the last replay for records that went through one).
    pub received_at_ms: i64,
    /// For a record imported from the old proxy: when it was imported.
    #[serde(default)]
    pub imported_at: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    /// The dashboard's last HTTP status for this record, if it answered.
    #[serde(default)]
    pub status_code: Option<u16>,
    pub last_error: Option<String>,
}

/// The rows shown, and how many matched before `limit` cut the list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    pub rows: Vec<Row>,
    pub matched: usize,
}

/// Newest first. A full scan of `entries`: fine for an operator's query, never on a hot path.
pub fn list(store: &Store, q: &ListQuery) -> anyhow::Result<Listing> {
    check_status(q)?;
    let mut rows = Vec::new();
    for r in store.records() {
        let r = r?;
        if wants(
            q,
            r.status.as_str(),
            &r.enrichment.form_type,
            r.received_at_ms,
        ) {
            rows.push(row(&r));
        }
    }
    for entry in store.quarantined() {
        rows.extend(quarantined_row(q, &entry?));
    }
    Ok(newest_first(rows, q.limit))
}

/// The status a quarantined entry is listed (and filtered) under.
const QUARANTINED: &str = "quarantined";

/// The line of a quarantined entry, if it passes the query's filters: listed by the time it
/// was quarantined, with its reason as the error; it has no form type a filter can match.
fn quarantined_row(q: &ListQuery, entry: &Quarantined) -> Option<Row> {
    let at = entry.entry.quarantined_at_ms;
    wants(q, QUARANTINED, "", at).then(|| Row {
        trace_id: entry.trace_id.clone(),
        status: QUARANTINED.into(),
        form_type: "?".into(),
        received_at: rfc3339(at),
        received_at_ms: at,
        imported_at: None,
        attempts: 0,
        next_attempt_at: None,
        status_code: None,
        last_error: Some(entry.entry.reason.clone()),
    })
}

fn check_status(q: &ListQuery) -> anyhow::Result<()> {
    if let Some(s) = &q.status {
        anyhow::ensure!(
            s == QUARANTINED || Status::parse(s).is_some(),
            "unknown status {s:?}: use pending, in_flight, delivered, dead or quarantined"
        );
    }
    Ok(())
}

/// Whether a row with this status, form type and receipt time passes the query's filters.
fn wants(q: &ListQuery, status: &str, form_type: &str, at: i64) -> bool {
    q.status.as_deref().is_none_or(|s| s == status)
        && q.form_type.as_deref().is_none_or(|f| f == form_type)
        && q.since_ms.is_none_or(|t| at >= t)
}

/// The rows newest first (then by trace ID), cut to `limit`, with how many matched.
fn newest_first(mut rows: Vec<Row>, limit: usize) -> Listing {
    rows.sort_by(|a, b| {
        b.received_at_ms
            .cmp(&a.received_at_ms)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
    let matched = rows.len();
    rows.truncate(limit);
    Listing { rows, matched }
}

fn row(r: &Record) -> Row {
    Row {
        trace_id: r.trace_id.clone(),
        status: r.status.as_str().into(),
        form_type: r.enrichment.form_type.clone(),
        received_at: r.enrichment.received_at.clone(),
        received_at_ms: r.received_at_ms,
        imported_at: imported_at(r),
        attempts: r.attempts,
        next_attempt_at: r.status.is_queued().then(|| rfc3339(r.next_attempt_at_ms)),
        status_code: r.last_status_code,
        last_error: r.last_error.clone(),
    }
}
