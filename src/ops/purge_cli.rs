//! `outbox purge`: count first (a dry run on the store), refuse to drop tombstones still inside
//! the idempotency window without `--force`, confirm, then purge.

use crate::ops::command::PurgeArgs;
use crate::ops::proto::Request;
use crate::ops::purge::{PurgeQuery, PurgeReport};
use crate::ops::run::{call, print_json};
use crate::ops::text::{self, parse_when};
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

pub fn run(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let dir = a.target.dir()?;
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
    let (_, plan): (_, PurgeReport) = call(&dir, Request::Purge(q.clone()), "counting")?;
    let what = describe_purge(&plan);
    if let Some(before) = before {
        check_window(&dir, &a, before, &plan)?;
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
    let (_, done): (_, PurgeReport) = call(&dir, Request::Purge(q), "purging")?;
    if a.json {
        print_json(&done);
    } else {
        println!("purged: {}", describe_purge(&done));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_purge(r: &PurgeReport) -> String {
    use text::count;
    format!(
        "{}, {} holding the address, {}, {} scrubbed",
        count(
            r.tombstones_purged,
            "delivered tombstone",
            "delivered tombstones"
        ),
        count(r.erased.len() as u64, "record", "records"),
        count(
            r.quarantined_copies_erased,
            "quarantined copy",
            "quarantined copies"
        ),
        count(r.audit_notes_scrubbed, "audit note", "audit notes")
    )
}

/// Refuses (without `--force`) a purge that would drop tombstones delivered within the
/// idempotency window: a late duplicate of one of those would be stored and delivered again.
fn check_window(dir: &Path, a: &PurgeArgs, before: i64, plan: &PurgeReport) -> anyhow::Result<()> {
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
    let (_, outside): (_, PurgeReport) = call(dir, Request::Purge(q), "counting")?;
    let inside = plan
        .tombstones_purged
        .saturating_sub(outside.tombstones_purged);
    if inside == 0 {
        return Ok(());
    }
    let what = format!(
        "{} delivered within the idempotency window ({}, since {}): a duplicate post of one of those would be stored and delivered again",
        text::count(inside, "tombstone was", "tombstones were"),
        humantime::format_duration(window),
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
