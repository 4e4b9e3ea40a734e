//! `outbox import-legacy DIR`: reads the old proxy's files here (the CLI's user can read
//! them; the server may not), sends them to the store, and moves them with `--move`.
//!
//! - `parse`: one legacy file as pure data (fuzzed);
//! - `records`: the files as records, stored (operation `import`).

pub mod parse;
pub mod records;

use crate::ops::output::{print_json, status};
use crate::ops::socket::route::{explain, Place};
use crate::ops::target::Target;
use anyhow::Context;
use clap::Args;
use records::{Failed, ImportReport, ImportRequest, LegacyFile};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub target: Target,
    /// The old proxy's pending_submissions directory
    pub dir: PathBuf,
    /// Report what would be imported, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Move imported files (and files already imported before) to DIR/imported/
    #[arg(long = "move")]
    pub move_files: bool,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

/// Where `--move` puts files that are in the store.
pub const IMPORTED_DIR: &str = "imported";

pub fn run(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let (files, unreadable) = read_legacy_dir(&a.dir)?;
    // The PostgreSQL store is made by the schema migrations when it is opened.
    let place = match a.target.store()? {
        Some(_) => Place::of(&a.target)?,
        None => {
            let dir = a.target.dir()?;
            if !a.dry_run {
                create_if_new(&dir)?;
            }
            Place::Directory(dir)
        }
    };
    let req = ImportRequest {
        files,
        dry_run: a.dry_run,
    };
    let mut report = place.call(req, "importing")?;
    report.failed.extend(
        unreadable
            .into_iter()
            .map(|(file, error)| Failed { file, error }),
    );
    if a.move_files && !a.dry_run {
        let target = a.dir.join(IMPORTED_DIR);
        std::fs::create_dir_all(&target)
            .with_context(|| format!("cannot create {}", target.display()))?;
        for i in report.imported.iter().chain(&report.duplicates) {
            std::fs::rename(a.dir.join(&i.file), target.join(&i.file))
                .with_context(|| format!("cannot move {} to {}", i.file, target.display()))?;
        }
    }
    Ok(status(print_import(&report, a.json)))
}

/// Creates a new store in `dir` when it is absent or an empty directory: an import is a
/// natural first step of a migration, before the new service ever ran.
fn create_if_new(dir: &Path) -> anyhow::Result<()> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if !empty {
        return Ok(());
    }
    crate::store::Store::open(dir)
        .map_err(|e| explain(dir, e.into()))?
        .sync()?;
    eprintln!("outbox: created a new data directory at {}", dir.display());
    Ok(())
}

/// Prints an import report; returns whether any file failed.
pub fn print_import(r: &ImportReport, json: bool) -> bool {
    if json {
        print_json(r);
    } else {
        let verb = if r.dry_run {
            "would import"
        } else {
            "imported"
        };
        for i in &r.imported {
            println!("{verb} {} as {}", i.file, i.trace_id);
        }
        for i in &r.duplicates {
            println!("already stored {} as {}", i.file, i.trace_id);
        }
        for f in &r.failed {
            println!("skipped {}: {}", f.file, f.error);
        }
        println!(
            "{} {verb}, {} already stored, {} skipped",
            r.imported.len(),
            r.duplicates.len(),
            r.failed.len()
        );
    }
    !r.failed.is_empty()
}

/// Reads the `*.json` files of a legacy directory (not its `imported/` folder).
/// Files read, and `(file name, error)` for those that could not be.
type ReadDir = (Vec<LegacyFile>, Vec<(String, String)>);

pub fn read_legacy_dir(dir: &Path) -> anyhow::Result<ReadDir> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || !e.file_type()?.is_file() {
            continue;
        }
        let read = std::fs::read(e.path()).and_then(|content| {
            let mtime = e.metadata()?.modified()?;
            let mtime_ms = chrono::DateTime::<chrono::Utc>::from(mtime).timestamp_millis();
            Ok(LegacyFile {
                file_name: name.clone(),
                content,
                mtime_ms,
            })
        });
        match read {
            Ok(f) => files.push(f),
            Err(e) => unreadable.push((name, format!("cannot read: {e}"))),
        }
    }
    Ok((files, unreadable))
}
