//! `outbox edit`: correct a record's payload (typically a dead letter the dashboard refused
//! with a 422) before replaying it.
//!
//! The CLI fetches the payload, lets the operator change it in $EDITOR ([`editor`]) or takes
//! it from `--payload FILE`, and sends it. The record keeps an audit line with the previous
//! payload's hash, the time and the operator's note, so what was delivered can always be
//! told apart from what was received.

pub mod editor;

use crate::ops::commands::inspect::record::{resolve, resolve_shared, view, GetRecord, RecordView};
use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::output::print_json;
use crate::ops::shared::Shared;
use crate::ops::socket::route::Place;
use crate::ops::target::Target;
use crate::store::record::{AuditEntry, Record, Status};
use crate::store::{payload_hash, Change, RecordStore, Store, Updated};
use crate::time::now_ms;
use anyhow::{bail, Context};
use clap::Args;
use editor::{edit_until_valid, parse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct EditArgs {
    #[command(flatten)]
    pub target: Target,
    /// The record's trace ID (or a unique prefix of it)
    pub trace_id: String,
    /// Take the new payload (a JSON object) from FILE instead of opening $EDITOR
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// Why, for the audit trail
    #[arg(long)]
    pub note: Option<String>,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EditArgs) -> anyhow::Result<ExitCode> {
    let place = Place::of(&a.target)?;
    let (trace_id, payload) = match &a.payload {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match parse(&text) {
                Ok(p) => (a.trace_id.clone(), p),
                Err(e) => bail!("{e}; nothing edited"),
            }
        }
        None => {
            let get = GetRecord {
                trace_id: a.trace_id.clone(),
            };
            let current = place.call(get, "reading")?;
            let before = serde_json::to_string_pretty(&current.payload)?;
            match edit_until_valid(&current.trace_id, &before)? {
                Some(p) => (current.trace_id, p),
                None => return Ok(ExitCode::SUCCESS),
            }
        }
    };
    let req = EditRequest {
        trace_id,
        payload,
        note: a.note.clone(),
    };
    let r = place.call(req, "editing")?;
    if a.json {
        print_json(&r);
    } else {
        println!(
            "edited {} (payload sha256 {}); replay it with `outbox replay {}{}`",
            r.trace_id,
            r.payload_sha256,
            r.trace_id,
            target_flags(&a.target)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--store-url`/`--data-dir`/`--config` this command was given, for the commands it suggests.
fn target_flags(t: &Target) -> String {
    let quote = |p: &Path| {
        let s = p.display().to_string();
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        {
            s
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    match (&t.store_url, &t.data_dir, &t.config) {
        (Some(url), _, _) => format!(
            " --store-url '{}'",
            crate::store::postgres::config::masked_url(url).replace('\'', r"'\''")
        ),
        (None, Some(d), _) => format!(" --data-dir {}", quote(d)),
        (None, None, Some(c)) => format!(" --config {}", quote(c)),
        (None, None, None) => String::new(),
    }
}

/// The new payload of one record (socket `op`: `edit`). `trace_id` may be a unique prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditRequest {
    pub trace_id: String,
    pub payload: Map<String, Value>,
    pub note: Option<String>,
}

impl Operation for EditRequest {
    const NAME: &'static str = "edit";
    type Output = RecordView;

    fn run(self, ctx: &OpsContext, _: Progress) -> anyhow::Result<RecordView> {
        let store = &*ctx.store;
        let trace_id = resolve(store, &self.trace_id)?.unwrap_or(self.trace_id);
        edit(store, &trace_id, self.payload, self.note)
    }

    /// Through the store boundary: a record under a delivery lease is refused as busy.
    fn run_shared(self, store: &Shared, _: Progress) -> anyhow::Result<RecordView> {
        let trace_id = resolve_shared(store, &self.trace_id)?.unwrap_or(self.trace_id);
        let decide = editing(self.payload, self.note, now_ms());
        edited(
            &trace_id,
            store.block(store.engine().update(&trace_id, decide))?,
        )
    }
}

/// Statuses whose payload may be changed: the worker holds in-flight records, and a
/// delivered one was already sent as it is.
pub fn editable(status: Status) -> bool {
    matches!(status, Status::Dead | Status::Pending)
}

pub fn edit(
    store: &Store,
    trace_id: &str,
    payload: Map<String, Value>,
    note: Option<String>,
) -> anyhow::Result<RecordView> {
    edited(
        trace_id,
        store.update(trace_id, editing(payload, note, now_ms()))?,
    )
}

/// The change an edit makes: the new payload and an audit line with the previous payload's
/// hash, for a pending record or a dead letter whose payload differs; else none.
fn editing(
    payload: Map<String, Value>,
    note: Option<String>,
    now: i64,
) -> impl Fn(&Record) -> Change + Send + Sync {
    let text = Value::Object(payload.clone()).to_string();
    let hash = payload_hash(&payload);
    move |r| {
        if !editable(r.status) || r.payload_hash == hash {
            return Change::Keep;
        }
        let mut n = r.clone();
        n.audit.push(AuditEntry {
            at_ms: now,
            action: "edit".into(),
            previous_payload_hash: Some(r.payload_hash),
            note: note.clone(),
        });
        n.payload = Some(text.clone());
        n.payload_hash = hash;
        Change::Put(n)
    }
}

/// The edited record, or why it was not edited.
fn edited(trace_id: &str, outcome: Updated) -> anyhow::Result<RecordView> {
    match outcome {
        Updated::NotFound => bail!("no record with trace ID {trace_id}"),
        Updated::Busy(_) => {
            bail!("record {trace_id} is being delivered right now; retry when the attempt ends")
        }
        Updated::Kept(r) if !editable(r.status) => bail!(
            "record {trace_id} is {}; only pending records and dead letters can be edited",
            r.status.as_str()
        ),
        Updated::Kept(_) => bail!("the new payload is the same as the stored one; nothing changed"),
        Updated::Put(r) => Ok(view(&r)),
        Updated::Purged => unreachable!("edit never purges"),
    }
}
