//! The ops subcommands as the binary runs them: arguments in, request out (to the running
//! server or offline), result printed as text or `--json`, exit code chosen.
//!
//! Exit codes: 0 ok, 1 problems found (verify, files that failed to import, records
//! refused), 2 usage or environment error (returned as `Err`, printed by `main`).

use crate::ops::client::{self, Access};
use crate::ops::command::*;
use crate::ops::inspect::{ListQuery, Listing, RecordView, Summary};
use crate::ops::progress::Bar;
use crate::ops::proto::Request;
use crate::ops::replay::{ReplayQuery, ReplayReport};
use crate::ops::table;
use crate::ops::text::{self, parse_when};
use crate::ops::verify::VerifyReport;
use crate::ops::{backup, restore};
use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::process::ExitCode;

/// Exit code when a command ran but found problems.
pub const EXIT_PROBLEMS: u8 = 1;

pub fn run(cmd: OpsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OpsCommand::Inspect(a) => inspect(a),
        OpsCommand::Replay(a) => replay(a),
        OpsCommand::Edit(a) => crate::ops::edit_cli::run(a),
        OpsCommand::Verify(a) => verify(a),
        OpsCommand::Backup(a) => backup(a),
        OpsCommand::Restore(a) => restore(a),
        OpsCommand::ImportLegacy(a) => crate::ops::import_cli::run(a),
        OpsCommand::Purge(a) => crate::ops::purge_cli::run(a),
        OpsCommand::Top(a) => crate::ops::top::run(a),
        OpsCommand::Compact(a) => crate::ops::compact::run(a),
    }
}

/// Sends `req` and decodes the answer as `T`.
pub fn call<T: DeserializeOwned>(
    dir: &Path,
    req: Request,
    label: &str,
) -> anyhow::Result<(Access, T)> {
    let (access, value) = client::run(dir, req, label)?;
    let out = serde_json::from_value(value)
        .context("the server's answer has an unexpected shape (different outbox versions?)")?;
    Ok((access, out))
}

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("plain data"));
}

pub fn status(problems: bool) -> ExitCode {
    if problems {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    }
}

fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let dir = a.target.dir()?;
    if let Some(id) = a.trace_id {
        let (_, r): (_, RecordView) = call(&dir, Request::Get { trace_id: id }, "reading")?;
        if a.json {
            print_json(&r);
        } else {
            let mut shown = serde_json::to_value(&r)?;
            shown.as_object_mut().expect("object").remove("payload");
            println!("{}", serde_json::to_string_pretty(&shown)?);
            println!("payload:\n{}", serde_json::to_string_pretty(&r.payload)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.list {
        let q = ListQuery {
            status: a.status,
            form_type: a.form_type,
            since_ms: a.since.as_deref().map(parse_when).transpose()?,
            limit: a.limit,
        };
        let (_, listing): (_, Listing) = call(&dir, Request::List(q), "listing")?;
        if a.json {
            print_json(&listing.rows);
            if listing.matched > listing.rows.len() {
                eprintln!(
                    "outbox: {} of {} shown; --limit {} shows all",
                    listing.rows.len(),
                    listing.matched,
                    listing.matched
                );
            }
        } else {
            print!("{}", table::table(&listing, table::width()));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (_, s): (_, Summary) = call(&dir, Request::Summary, "summary")?;
    if a.json {
        print_json(&s);
    } else {
        print!("{}", text::summary(&s));
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let filters =
        a.since.is_some() || a.until.is_some() || a.form_type.is_some() || a.status_code.is_some();
    if filters && !a.dead {
        bail!("--since, --until, --form-type and --status-code select dead letters: add --dead (e.g. `outbox replay --dead --since 1h`)");
    }
    if !a.dead && a.trace_ids.is_empty() {
        bail!("say what to replay: trace IDs, or --dead for dead letters");
    }
    let dir = a.target.dir()?;
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
    let (_, r): (_, ReplayReport) = call(&dir, Request::Replay(q), "replaying")?;
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

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let dir = a.target.dir()?;
    let (_, r): (_, VerifyReport) = call(&dir, Request::Verify { repair: a.repair }, "verifying")?;
    if a.json {
        print_json(&r);
    } else {
        for p in &r.problems {
            println!("problem: {p}");
        }
        for p in &r.repaired {
            println!("repaired: {p}");
        }
        for p in &r.remaining {
            println!("still wrong: {p}");
        }
        println!(
            "{} checked, {}",
            text::count(r.records, "record", "records"),
            text::count(r.problems.len() as u64, "problem", "problems")
        );
        if !r.problems.is_empty() && r.repaired.is_empty() {
            println!("run `outbox verify --repair` to rebuild the indexes and counters");
        }
    }
    Ok(status(!r.ok()))
}

fn backup(a: BackupArgs) -> anyhow::Result<ExitCode> {
    let dir = a.target.dir()?;
    let dest = std::path::absolute(&a.dest)
        .with_context(|| format!("cannot resolve {}", a.dest.display()))?;
    let manifest = match client::connect(&dir)? {
        Some(conn) => {
            eprintln!("outbox: {}", Access::Server { pid: conn.pid });
            let bar = Bar::new("backing up");
            let out = conn.call(&Request::Backup { dest: dest.clone() }, &bar);
            bar.finish();
            serde_json::from_value::<backup::Manifest>(out?)?
        }
        None => {
            client::require_data_dir(&dir)?;
            eprintln!("outbox: {}", Access::Offline);
            let bar = Bar::new("copying");
            let m = backup::copy_stopped(&dir, &dest, &|n, t| bar.update(n, t));
            bar.finish();
            m?
        }
    };
    if a.json {
        print_json(&manifest);
    } else {
        println!(
            "backup written to {} ({}): {}, checksum {}",
            dest.display(),
            manifest.method,
            text::count(manifest.record_count, "record", "records"),
            manifest.records_sha256
        );
        println!("start a server on it with --data-dir {}", dest.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn restore(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let dir = a.target.dir()?;
    if let Some(conn) = client::connect(&dir)? {
        bail!(
            "a server is running on {} (pid {}); stop it before restoring",
            dir.display(),
            conn.pid
        );
    }
    let bar = Bar::new("restoring");
    let r = restore::restore(&a.src, &dir, a.force, &|n, t| bar.update(n, t));
    bar.finish();
    let r = r?;
    println!(
        "restored {} from {} (backup of {}) into {}",
        text::count(r.manifest.record_count, "record", "records"),
        a.src.display(),
        r.manifest.created_at,
        dir.display()
    );
    if let Some(aside) = r.moved_aside {
        println!("the previous contents are in {}", aside.display());
    }
    Ok(ExitCode::SUCCESS)
}
