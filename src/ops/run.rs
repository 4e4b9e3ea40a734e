//! The ops subcommands as the binary runs them: arguments in, request out (to the running
//! server or offline), result printed as text or `--json`, exit code chosen.
//!
//! Exit codes: 0 ok, 1 problems found (verify, files that failed to import, records
//! refused), 2 usage or environment error (returned as `Err`, printed by `main`).

use crate::ops::client::{self, Access};
use crate::ops::command::*;
use crate::ops::inspect::{ListQuery, RecordView, Row, Summary};
use crate::ops::progress::Bar;
use crate::ops::proto::Request;
use crate::ops::purge::{PurgeQuery, PurgeReport};
use crate::ops::replay::{ReplayQuery, ReplayReport};
use crate::ops::text::{self, parse_when};
use crate::ops::verify::VerifyReport;
use crate::ops::{backup, restore};
use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use std::io::IsTerminal;
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
        OpsCommand::Purge(a) => purge(a),
        OpsCommand::Top(a) => crate::ops::top::run(a),
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
        let (_, rows): (_, Vec<Row>) = call(&dir, Request::List(q), "listing")?;
        if a.json {
            print_json(&rows);
        } else {
            print!("{}", text::table(&rows));
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
            "{} records checked, {} problems",
            r.records,
            r.problems.len()
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
            "backup written to {} ({}): {} records, checksum {}",
            dest.display(),
            manifest.method,
            manifest.record_count,
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
        "restored {} records from {} (backup of {}) into {}",
        r.manifest.record_count,
        a.src.display(),
        r.manifest.created_at,
        dir.display()
    );
    if let Some(aside) = r.moved_aside {
        println!("the previous contents are in {}", aside.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn purge(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let dir = a.target.dir()?;
    let before = match (&a.before, &a.older_than) {
        (Some(b), _) => Some(parse_when(b)?),
        (None, Some(age)) => Some(
            crate::store::now_ms()
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
    format!(
        "{} delivered tombstones, {} records holding the address, {} quarantined copies, {} audit notes scrubbed",
        r.tombstones_purged,
        r.erased.len(),
        r.quarantined_copies_erased,
        r.audit_notes_scrubbed
    )
}
