//! `outbox replay`: send records back to the delivery queue.
//!
//! A replayed record keeps its trace ID, so the dashboard sees the same `Idempotency-Key` and
//! can drop it if it did get the first attempt. It starts again at attempt 0, due now, and
//! its age for the delivery age limit counts from the replay (the enrichment keeps the
//! original receipt time), or an old dead letter would get a single attempt. A
//! delivered record is only replayed with `force` (and only while it still has its payload);
//! one in flight is never touched (the worker holds it).

use crate::ops::commands::inspect::record::{resolve, resolve_shared};
use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::output::{print_json, status};
use crate::ops::shared::Shared;
use crate::ops::socket::route::Place;
use crate::ops::target::Target;
use crate::ops::text::parse_when;
use crate::store::record::{AuditEntry, Record, Status};
use crate::store::Updated;
use crate::store::{Change, RecordStore, Store};
use crate::time::now_ms;
use anyhow::bail;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub target: Target,
    /// Trace IDs (or unique prefixes) to replay
    pub trace_ids: Vec<String>,
    /// Replay dead letters (all of them, or those the filters select)
    #[arg(long)]
    pub dead: bool,
    /// With --dead: died at or after this time (RFC 3339, YYYY-MM-DD) or age (2h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// With --dead: died before this time or age
    #[arg(long)]
    pub until: Option<String>,
    /// With --dead: only this form type
    #[arg(long)]
    pub form_type: Option<String>,
    /// With --dead: only those the dashboard last answered with this HTTP status
    #[arg(long)]
    pub status_code: Option<u16>,
    /// List what would be replayed, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also replay delivered records
    #[arg(long)]
    pub force: bool,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let filters =
        a.since.is_some() || a.until.is_some() || a.form_type.is_some() || a.status_code.is_some();
    if filters && !a.dead {
        bail!("--since, --until, --form-type and --status-code select dead letters: add --dead (e.g. `outbox replay --dead --since 1h`)");
    }
    if !a.dead && a.trace_ids.is_empty() {
        bail!("say what to replay: trace IDs, or --dead for dead letters");
    }
    let place = Place::of(&a.target)?;
    let q = ReplayQuery {
        trace_ids: a.trace_ids,
        dead: a.dead,
        since_ms: a.since.as_deref().map(parse_when).transpose()?,
        until_ms: a.until.as_deref().map(parse_when).transpose()?,
        form_type: a.form_type,
        status_code: a.status_code,
        dry_run: a.dry_run,
        force: a.force,
    };
    let r = place.call(q, "replaying")?;
    if a.json {
        print_json(&r);
    } else {
        let verb = if r.dry_run {
            "would replay"
        } else {
            "replayed"
        };
        for id in &r.replayed {
            println!("{verb} {id}");
        }
        for x in &r.refused {
            println!("refused {}: {}", x.trace_id, x.reason);
        }
        println!("{} {verb}, {} refused", r.replayed.len(), r.refused.len());
    }
    Ok(status(!r.refused.is_empty()))
}

/// What to replay (socket `op`: `replay`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayQuery {
    pub trace_ids: Vec<String>,
    /// All dead letters, narrowed by the filters below.
    pub dead: bool,
    /// Dead letters that died at or after this time (ms).
    pub since_ms: Option<i64>,
    /// ... and before this time (ms).
    pub until_ms: Option<i64>,
    pub form_type: Option<String>,
    /// Dead letters whose last answer from the dashboard had this HTTP status.
    pub status_code: Option<u16>,
    pub dry_run: bool,
    pub force: bool,
}

impl Operation for ReplayQuery {
    const NAME: &'static str = "replay";
    type Output = ReplayReport;

    fn run(mut self, ctx: &OpsContext, progress: Progress) -> anyhow::Result<ReplayReport> {
        // An ID that names no record is left as given: the replay refuses it.
        for id in &mut self.trace_ids {
            if let Some(full) = resolve(&ctx.store, id)? {
                *id = full;
            }
        }
        let report = replay(&ctx.store, &self, progress)?;
        if !report.replayed.is_empty() && !self.dry_run {
            ctx.wake_worker();
        }
        Ok(report)
    }

    /// Through the store boundary: a record under another instance's delivery lease is
    /// refused as busy, as one the embedded store's worker holds. The instances find the
    /// replayed records at their next poll.
    fn run_shared(mut self, store: &Shared, progress: Progress) -> anyhow::Result<ReplayReport> {
        for id in &mut self.trace_ids {
            if let Some(full) = resolve_shared(store, id)? {
                *id = full;
            }
        }
        let mut ids = self.trace_ids.clone();
        if self.dead {
            let dead = store.records_where(|r| matches_dead(r, &self))?;
            ids.extend(dead.into_iter().map(|r| r.trace_id));
        }
        let (force, now) = (self.force, now_ms());
        replay_each(ids, &self, progress, |id| {
            if self.dry_run {
                return Ok(match store.block(store.engine().get(id))? {
                    None => Updated::NotFound,
                    Some(r) if r.status == Status::InFlight => Updated::Busy(r),
                    Some(r) => would(r, force),
                });
            }
            store.block(store.engine().update(id, move |r| match refusal(r, force) {
                Some(_) => Change::Keep,
                None => Change::Put(replayed(r, now)),
            }))
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayReport {
    pub dry_run: bool,
    /// Replayed (or, in a dry run, would be).
    pub replayed: Vec<String>,
    pub refused: Vec<Refusal>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    pub trace_id: String,
    pub reason: String,
}

const BEING_DELIVERED: &str = "being delivered right now; retry when the attempt ends";

/// Why `r` may not be replayed, if it may not (a record being delivered is refused too: the
/// store reports it as busy).
pub fn refusal(r: &Record, force: bool) -> Option<&'static str> {
    match r.status {
        Status::InFlight => Some(BEING_DELIVERED),
        Status::Delivered if !force => Some("already delivered; pass --force to send it again"),
        Status::Delivered if r.payload.is_none() => {
            Some("delivered and its payload was already dropped; nothing to send")
        }
        _ => None,
    }
}

/// The record as replayed: pending, due at `now`, attempt 0, with an audit line.
pub fn replayed(r: &Record, now: i64) -> Record {
    let mut n = r.clone();
    n.status = Status::Pending;
    n.attempts = 0;
    n.next_attempt_at_ms = now;
    n.received_at_ms = now;
    n.dead_at_ms = None;
    n.delivered_at_ms = None;
    n.audit.push(AuditEntry {
        at_ms: now,
        action: format!("replay (was {})", r.status.as_str()),
        previous_payload_hash: None,
        note: None,
    });
    n
}

fn matches_dead(r: &Record, q: &ReplayQuery) -> bool {
    let at = r.dead_at_ms.unwrap_or(r.received_at_ms);
    r.status == Status::Dead
        && q.since_ms.is_none_or(|t| at >= t)
        && q.until_ms.is_none_or(|t| at < t)
        && q.form_type
            .as_deref()
            .is_none_or(|f| f == r.enrichment.form_type)
        && q.status_code.is_none_or(|c| r.last_status_code == Some(c))
}

pub fn replay(store: &Store, q: &ReplayQuery, progress: Progress) -> anyhow::Result<ReplayReport> {
    anyhow::ensure!(
        q.dead || !q.trace_ids.is_empty(),
        "name trace IDs to replay, or pass --dead"
    );
    let mut ids = q.trace_ids.clone();
    if q.dead {
        for r in store.records() {
            let r = r?;
            if matches_dead(&r, q) {
                ids.push(r.trace_id);
            }
        }
    }
    let now = now_ms();
    replay_each(ids, q, progress, |id| {
        Ok(if q.dry_run {
            match store.get(id)? {
                None => Updated::NotFound,
                Some(r) if store.is_claimed(id) => Updated::Busy(r),
                Some(r) => would(r, q.force),
            }
        } else {
            store.update(id, |r| match refusal(r, q.force) {
                Some(_) => Change::Keep,
                None => Change::Put(replayed(r, now)),
            })?
        })
    })
}

/// What a replay would do to `r` (not being delivered): keep it, or put it back.
fn would(r: Record, force: bool) -> Updated {
    match refusal(&r, force) {
        Some(_) => Updated::Kept(r),
        None => Updated::Put(r),
    }
}

/// Replays each of `ids` with `step` (or, in a dry run, says what it would do), reporting
/// progress; the report says what was replayed and why the rest was refused.
fn replay_each(
    ids: Vec<String>,
    q: &ReplayQuery,
    progress: Progress,
    step: impl Fn(&str) -> anyhow::Result<Updated>,
) -> anyhow::Result<ReplayReport> {
    let total = ids.len() as u64;
    let mut report = ReplayReport {
        dry_run: q.dry_run,
        ..Default::default()
    };
    for (i, id) in ids.into_iter().enumerate() {
        let refuse = |reason: &str| Refusal {
            trace_id: id.clone(),
            reason: reason.to_owned(),
        };
        match step(&id)? {
            Updated::NotFound => report.refused.push(refuse("no record with this trace ID")),
            Updated::Busy(_) => report.refused.push(refuse(BEING_DELIVERED)),
            Updated::Kept(r) => report
                .refused
                .push(refuse(refusal(&r, q.force).unwrap_or("unchanged"))),
            Updated::Put(_) => report.replayed.push(id.clone()),
            Updated::Purged => {}
        }
        progress(i as u64 + 1, Some(total));
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
