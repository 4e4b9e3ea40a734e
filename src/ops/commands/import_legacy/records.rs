//! The old proxy's fallback files become pending records (the operation behind
//! `outbox import-legacy`).
//!
//! Records go in through [`Store::submit`], the same path as a live post, so an import that
//! is run twice answers "duplicate" for every file the first run stored and adds nothing.
//! A file the parser rejects is reported and skipped; it never stops the import.

use super::parse::{parse_legacy_file, LegacySubmission};
use crate::config::spec::default_of;
use crate::intake::enrich::{cut_user_agent, Enrichment};
use crate::intake::form_type;
use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::shared::Shared;
use crate::store::record::Record;
use crate::store::{RecordStore, Store, SubmitOutcome};
use crate::time::{format_time, now_ms};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

/// Submissions committed together (one group commit each).
const CHUNK: usize = 256;

/// The audit action of a record imported from the old proxy.
pub const IMPORT_ACTION: &str = "import-legacy";

/// Files to import (socket `op`: `import`). The CLI reads them: it can read the old
/// proxy's directory, the server may not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRequest {
    pub files: Vec<LegacyFile>,
    pub dry_run: bool,
}

impl Operation for ImportRequest {
    const NAME: &'static str = "import";
    type Output = ImportReport;

    fn run(self, ctx: &OpsContext, progress: Progress) -> anyhow::Result<ImportReport> {
        let report = import(&ctx.store, &self.files, self.dry_run, progress)?;
        if !report.imported.is_empty() && !self.dry_run {
            ctx.wake_worker();
        }
        Ok(report)
    }

    /// Through the store boundary: the same submission as a live post on any instance, so
    /// a second import (on any machine) finds every file already stored.
    fn run_shared(self, store: &Shared, progress: Progress) -> anyhow::Result<ImportReport> {
        let engine = store.engine();
        import_with(&self.files, self.dry_run, progress, |chunk| {
            if self.dry_run {
                let gets = chunk.iter().map(|r| engine.get(&r.trace_id));
                let found = store.block_on(join_all(gets));
                return chunk
                    .iter()
                    .zip(found)
                    .map(|(r, old)| Ok(would_submit(r, old?)))
                    .collect();
            }
            let submits = chunk.iter().map(|r| engine.submit(r.clone()));
            Ok(store
                .block_on(join_all(submits))
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?)
        })
    }
}

/// What submitting `r` would answer, given the record stored under its trace ID.
fn would_submit(r: &Record, stored: Option<Record>) -> SubmitOutcome {
    match stored {
        None => SubmitOutcome::Stored(r.receipt()),
        Some(old) if old.payload_hash == r.payload_hash => SubmitOutcome::Duplicate(old.receipt()),
        Some(old) => SubmitOutcome::Conflict(old.receipt()),
    }
}

/// One file as read by the CLI: its name, bytes and modification time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyFile {
    pub file_name: String,
    pub content: Vec<u8>,
    pub mtime_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportReport {
    pub dry_run: bool,
    /// Stored now (or, in a dry run, would be).
    pub imported: Vec<Imported>,
    /// Already in the store with the same payload (an earlier import).
    pub duplicates: Vec<Imported>,
    /// Skipped: the file does not parse, or its trace ID holds a different payload.
    pub failed: Vec<Failed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Imported {
    pub file: String,
    pub trace_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failed {
    pub file: String,
    pub error: String,
}

/// The record a legacy file becomes: pending, due now, enrichment beside the payload.
/// The enrichment keeps the time the old proxy received the post; the record's own receipt
/// time (queue order, oldest-pending age, the delivery age limit) is the import, so months-old
/// files neither trip the oldest-pending alert nor run out of delivery age at once.
pub fn to_record(s: &LegacySubmission, mtime_ms: i64, now: i64) -> Record {
    let received_ms = s.received_at.map_or(mtime_ms, |t| t.timestamp_millis());
    let received = chrono::DateTime::from_timestamp_millis(received_ms).unwrap_or_default();
    let form_type = s.form_type.clone().unwrap_or_else(|| {
        form_type::detect(&s.fields, &form_type::default_rules(), &[])
            .unwrap_or_else(|_| form_type::GENERIC.to_owned())
    });
    let mut record = Record::pending(
        s.fields.clone(),
        Enrichment {
            received_at: format_time(received),
            client_ip: s.client_ip.clone().unwrap_or_else(|| "unknown".into()),
            user_agent: s.user_agent.as_deref().map(cut_user_agent),
            trace_id: s.trace_id.clone(),
            // The old proxy tagged every record with what is still the default `source`.
            src: s.src.clone().unwrap_or_else(|| default_of("source").into()),
            form_type,
        },
        now,
    );
    record.audit = vec![crate::store::record::AuditEntry {
        at_ms: now,
        action: IMPORT_ACTION.into(),
        previous_payload_hash: None,
        note: Some(format!("from {}", s.file_name)),
    }];
    record
}

pub fn import(
    store: &Store,
    files: &[LegacyFile],
    dry_run: bool,
    progress: Progress,
) -> anyhow::Result<ImportReport> {
    import_with(files, dry_run, progress, |chunk| {
        if dry_run {
            return chunk
                .iter()
                .map(|r| Ok(would_submit(r, store.get(&r.trace_id)?)))
                .collect();
        }
        let submits = chunk.iter().map(|r| store.submit(r.clone()));
        Ok(futures_executor::block_on(join_all(submits))
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?)
    })
}

/// Parses `files` and stores the records a chunk at a time with `store_chunk`, which
/// answers each record's submission (or, in a dry run, what it would be).
fn import_with(
    files: &[LegacyFile],
    dry_run: bool,
    progress: Progress,
    store_chunk: impl Fn(&[Record]) -> anyhow::Result<Vec<SubmitOutcome>>,
) -> anyhow::Result<ImportReport> {
    let mut report = ImportReport {
        dry_run,
        ..Default::default()
    };
    let now = now_ms();
    let mut records = Vec::new();
    for f in files {
        match parse_legacy_file(&f.file_name, &f.content) {
            Ok(s) => records.push((f.file_name.clone(), to_record(&s, f.mtime_ms, now))),
            Err(e) => report.failed.push(Failed {
                file: f.file_name.clone(),
                error: e.to_string(),
            }),
        }
    }
    let total = records.len() as u64;
    let mut done = 0u64;
    for chunk in records.chunks(CHUNK) {
        let records: Vec<Record> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let outcomes = store_chunk(&records)?;
        for ((file, r), outcome) in chunk.iter().zip(outcomes) {
            let item = Imported {
                file: file.clone(),
                trace_id: r.trace_id.clone(),
            };
            match outcome {
                SubmitOutcome::Stored(_) => report.imported.push(item),
                SubmitOutcome::Duplicate(_) => report.duplicates.push(item),
                SubmitOutcome::Conflict(_) => report.failed.push(Failed {
                    file: file.clone(),
                    error: format!(
                        "trace ID {} is already stored with a different payload; not imported",
                        r.trace_id
                    ),
                }),
            }
        }
        done += chunk.len() as u64;
        progress(done, Some(total));
    }
    Ok(report)
}
