//! `outbox purge`: drop delivered tombstones older than a date, or erase everything held
//! about one email address ([`mod@erase`]).
//!
//! The CLI counts first (a dry run on the store), refuses to drop tombstones still inside the
//! idempotency window without `--force`, confirms, then purges.

mod backup_dir;
pub mod erase;

use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::output::print_json;
use crate::ops::shared::Shared;
use crate::ops::socket::route::Place;
use crate::ops::target::Target;
use crate::ops::text::{self, parse_when};
use crate::store::done::TOMBSTONE;
use crate::store::record::{Record, Status};
use crate::store::{Change, RecordStore, Store, Updated};
use anyhow::{bail, Context};
use clap::Args;
use erase::{erase, erase_shared, Erased};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Drop delivered tombstones delivered before this time (RFC 3339 or YYYY-MM-DD)
    #[arg(long, conflicts_with = "older_than")]
    pub before: Option<String>,
    /// Drop delivered tombstones older than this age (e.g. 30d)
    #[arg(long)]
    pub older_than: Option<String>,
    /// Erase every record, dead letters included, holding this address (any case)
    #[arg(long, value_name = "ADDRESS")]
    pub erase_email: Option<String>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// Also drop tombstones still inside the idempotency window (a late duplicate of one of
    /// those would be stored and delivered again)
    #[arg(long)]
    pub force: bool,
    /// Count what would go, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let place = Place::of(&a.target)?;
    let before = match (&a.before, &a.older_than) {
        (Some(b), _) => Some(parse_when(b)?),
        (None, Some(age)) => Some(
            crate::time::now_ms()
                - humantime::parse_duration(age)
                    .with_context(|| format!("--older-than {age:?}: use an age like 30d or 12h"))?
                    .as_millis() as i64,
        ),
        (None, None) => None,
    };
    if before.is_none() && a.erase_email.is_none() {
        bail!("say what to purge: --before DATE, --older-than AGE or --erase-email ADDRESS");
    }
    let mut q = PurgeQuery {
        delivered_before_ms: before,
        erase_email: a.erase_email.clone(),
        dry_run: true,
    };
    let plan = place.call(q.clone(), "counting")?;
    let what = describe_purge(&q, &plan);
    if let Some(before) = before {
        check_window(&place, &a, before, &plan)?;
    }
    if a.dry_run {
        if a.json {
            print_json(&plan);
        } else {
            println!("would purge: {what}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!("purge would remove {what}; pass --yes to confirm without a prompt");
        }
        eprint!("purge {what}? This cannot be undone. [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing purged");
            return Ok(ExitCode::SUCCESS);
        }
    }
    q.dry_run = false;
    let done = place.call(q.clone(), "purging")?;
    if let (Some(_), Some(dir)) = (&q.erase_email, place.dir()) {
        if let Some(m) = backup_dir::rewrite_if_backup(dir)? {
            eprintln!(
                "outbox: backup rewritten without the address: {} ({}), restorable as before",
                text::count(m.record_count, "record", "records"),
                m.records_sha256
            );
        }
    }
    if a.json {
        print_json(&done);
    } else {
        println!("purged: {}", describe_purge(&q, &done));
    }
    Ok(ExitCode::SUCCESS)
}

/// What a purge removed (or would), naming only the parts the query asked for.
fn describe_purge(q: &PurgeQuery, r: &PurgeReport) -> String {
    use text::count;
    let mut parts = Vec::new();
    if q.delivered_before_ms.is_some() {
        parts.push(count(
            r.tombstones_purged,
            "delivered tombstone",
            "delivered tombstones",
        ));
    }
    if q.erase_email.is_some() {
        parts.push(format!(
            "{} holding the address",
            count(r.erased.len() as u64, "record", "records")
        ));
        parts.push(count(
            r.quarantined_copies_erased,
            "quarantined copy",
            "quarantined copies",
        ));
        parts.push(format!(
            "{} scrubbed",
            count(r.audit_notes_scrubbed, "audit note", "audit notes")
        ));
        if r.orphan_bodies_erased > 0 {
            parts.push(count(
                r.orphan_bodies_erased,
                "body without a record",
                "bodies without a record",
            ));
        }
    }
    parts.join(", ")
}

/// Refuses (without `--force`) a purge that would drop tombstones delivered within the
/// idempotency window: a late duplicate of one of those would be stored and delivered again.
fn check_window(
    place: &Place,
    a: &PurgeArgs,
    before: i64,
    plan: &PurgeReport,
) -> anyhow::Result<()> {
    let window = a.target.idempotency_window()?;
    let window_start = crate::time::now_ms() - window.as_millis() as i64;
    if before <= window_start || plan.tombstones_purged == 0 {
        return Ok(());
    }
    let q = PurgeQuery {
        delivered_before_ms: Some(window_start),
        erase_email: None,
        dry_run: true,
    };
    let outside = place.call(q, "counting")?;
    let inside = plan
        .tombstones_purged
        .saturating_sub(outside.tombstones_purged);
    if inside == 0 {
        return Ok(());
    }
    let what = format!(
        "{} delivered within the idempotency window ({}, since {}): a duplicate post of one of those would be stored and delivered again",
        text::count(inside, "tombstone was", "tombstones were"),
        text::span(window),
        crate::time::rfc3339(window_start)
    );
    if !a.force && !a.dry_run {
        bail!(
            "purge refused: {what}. Purge --before {} instead, or pass --force",
            crate::time::rfc3339(window_start)
        );
    }
    eprintln!("outbox: warning: {what}");
    Ok(())
}

/// What to purge (socket `op`: `purge`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PurgeQuery {
    /// Drop delivered tombstones delivered before this time (ms).
    pub delivered_before_ms: Option<i64>,
    pub erase_email: Option<String>,
    pub dry_run: bool,
}

impl Operation for PurgeQuery {
    const NAME: &'static str = "purge";
    type Output = PurgeReport;

    fn run(self, ctx: &OpsContext, progress: Progress) -> anyhow::Result<PurgeReport> {
        purge(&ctx.store, &self, progress)
    }

    /// Through the store boundary: the store's purge of tombstones, and its erasure.
    fn run_shared(self, store: &Shared, progress: Progress) -> anyhow::Result<PurgeReport> {
        let q = self;
        check_query(&q)?;
        let mut report = PurgeReport {
            dry_run: q.dry_run,
            ..Default::default()
        };
        if let Some(before) = q.delivered_before_ms {
            report.tombstones_purged = if q.dry_run {
                store.records_where(|r| purgeable(r, before))?.len() as u64
            } else {
                let purge = store.engine().purge_delivered_before(before, usize::MAX);
                store.block(purge)?
            };
        }
        if let Some(email) = &q.erase_email {
            let needle = email.trim().to_lowercase();
            report.add(erase_shared(store, &needle, q.dry_run, progress)?);
        }
        Ok(report)
    }
}

fn check_query(q: &PurgeQuery) -> anyhow::Result<()> {
    anyhow::ensure!(
        q.delivered_before_ms.is_some() || q.erase_email.is_some(),
        "say what to purge: --before DATE / --older-than AGE, or --erase-email ADDRESS"
    );
    Ok(())
}

/// Whether `r` is a tombstone delivered (or, without a delivery time, received) before
/// `before`.
fn purgeable(r: &Record, before: i64) -> bool {
    r.status == Status::Delivered && r.delivered_at_ms.unwrap_or(r.received_at_ms) < before
}

impl PurgeReport {
    /// Takes in what an erasure removed.
    fn add(&mut self, erased: Erased) {
        self.erased = erased.records;
        self.quarantined_copies_erased = erased.quarantined_copies;
        self.audit_notes_scrubbed = erased.audit_notes_scrubbed;
        self.orphan_bodies_erased = erased.orphan_bodies;
    }
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

pub fn purge(store: &Store, q: &PurgeQuery, progress: Progress) -> anyhow::Result<PurgeReport> {
    check_query(q)?;
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
                let out = store.update(&id, |r| match purgeable(r, before) {
                    true => Change::Purge,
                    false => Change::Keep,
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
        report.add(erase(
            store,
            &email.trim().to_lowercase(),
            q.dry_run,
            progress,
        )?);
    }
    Ok(report)
}
