//! `outbox move-store --to postgres|embedded`: moves a whole outbox between the embedded
//! store (a stopped data directory) and the PostgreSQL store, when one machine is no longer
//! enough, or back.
//!
//! Everything moves as it is: pending records with their attempts, due times and last error,
//! dead letters, quarantined entries with their reason and bytes, and delivered tombstones
//! (so a duplicate post after the move still gets 200 with the original receipt, and another
//! payload under the same key 409). Claims do not move: records arrive unclaimed. The
//! source's `accepted` and the counters of what left the records before the move
//! (quarantined, purged) carry over, so `accepted = pending + in_flight + delivered + dead +
//! quarantined + purged` holds on the target with the source's figures.
//!
//! The source is only read. Before it says done, the move reads the target back and compares
//! the counts and every record's hash ([`digest`]); a difference is an error naming the first
//! trace IDs that differ. Switching the service to the target is the operator's step, after
//! that (the command prints it): there is never a moment when the service runs on a
//! half-copied store. Settings are read as every ops command reads them ([`Target`]):
//! `--data-dir`, `--store-url`, the password file, or the `--config` file's keys.

mod digest;
mod to_embedded;
mod to_postgres;

use crate::ops::progress::with_bar;
use crate::ops::socket::route::{explain, refuse_if_served};
use crate::ops::target::Target;
use crate::ops::text::count;
use crate::store::postgres::config::masked_url;
use crate::store::postgres::PgStore;
use crate::store::{Counts, Status, Store};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use digest::{first_named, Digest};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Records per read and per write: one statement (PostgreSQL) or one transaction (sled) each,
/// large enough that a round trip is a small share of it, small enough to bound memory.
const BATCH: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum To {
    /// From the stopped data directory (--data-dir) into PostgreSQL (--store-url)
    Postgres,
    /// From PostgreSQL (--store-url) into a new data directory (--data-dir)
    Embedded,
}

/// [`Target`]'s flags, with the help saying what each is to a move: both stores are named.
#[derive(Debug, Args)]
#[command(
    mut_arg("data_dir", |a| a.help("Data directory: the source with --to postgres (stopped), the target with --to embedded (absent or empty) [default: data_dir from --config, else ./data]")),
    mut_arg("store_url", |a| a.help("PostgreSQL store: the target with --to postgres, the source with --to embedded (or OUTBOX_STORE_URL, or store_url from --config)")),
)]
pub struct MoveArgs {
    /// Which store the outbox moves to
    #[arg(long, value_enum)]
    pub to: To,
    #[command(flatten)]
    pub target: Target,
}

/// Both sides after a move, for the check.
pub struct Moved {
    source: Digest,
    target: Digest,
    source_counts: Counts,
    target_counts: Counts,
    /// Records and quarantined entries this run wrote.
    written: u64,
    /// Those an earlier run had copied already.
    already_there: u64,
}

impl Moved {
    /// What differs between the two sides, in words; empty when the copy is whole.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.source_counts != self.target_counts {
            out.push(format!(
                "the counts differ: source {}, target {}",
                self.source_counts.describe(),
                self.target_counts.describe()
            ));
        }
        let ids = self.source.differences(&self.target);
        if !ids.is_empty() {
            let verb = if ids.len() == 1 { "differs" } else { "differ" };
            out.push(format!(
                "{} {verb} between source and target: {}",
                count(ids.len() as u64, "record", "records"),
                first_named(&ids)
            ));
        }
        out
    }
}

pub fn run(a: MoveArgs) -> anyhow::Result<ExitCode> {
    let Some(pg) = a.target.store()? else {
        bail!("no PostgreSQL store is named: pass --store-url (or OUTBOX_STORE_URL, or store_url in the --config file)");
    };
    let dir = a.target.dir()?;
    let url = masked_url(&pg.options.url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (moved, from, to) = match a.to {
        To::Postgres => {
            let source = open_source(&dir)?;
            let moved = with_bar("moving", |p| {
                rt.block_on(async {
                    let target = open_postgres(&pg.options, &url).await?;
                    to_postgres::run(&source, &target, p).await
                })
            })?;
            (moved, dir.display().to_string(), url.clone())
        }
        To::Embedded => {
            let moved = to_embedded::into_new_dir(&dir, |target| {
                with_bar("moving", |p| {
                    rt.block_on(async {
                        let source = open_postgres(&pg.options, &url).await?;
                        to_embedded::run(&source, target, p).await
                    })
                })
            })?;
            (moved, url.clone(), dir.display().to_string())
        }
    };
    let problems = moved.problems();
    if !problems.is_empty() {
        eprintln!("outbox: the copy in {to} does not match {from}:");
        for p in &problems {
            eprintln!("  {p}");
        }
        eprintln!("outbox: nothing in {from} was changed; do not switch the service to {to}");
        return Ok(ExitCode::from(1));
    }
    report(&moved, &from, &to, started.elapsed());
    next_steps(a.to, &dir, &url);
    Ok(ExitCode::SUCCESS)
}

async fn open_postgres(
    o: &crate::store::postgres::PgOptions,
    url: &str,
) -> anyhow::Result<std::sync::Arc<PgStore>> {
    PgStore::open(o)
        .await
        .with_context(|| format!("cannot open the PostgreSQL store at {url}"))
}

/// Opens the stopped data directory; refuses one a server holds, or none at all.
fn open_source(dir: &Path) -> anyhow::Result<Store> {
    refuse_if_served(dir, "stop it before moving its outbox")?;
    if !dir.join("db").exists() {
        bail!(
            "{} holds no outbox store (no db file): check --data-dir",
            dir.display()
        );
    }
    Store::open(dir).map_err(|e| explain(dir, e.into()))
}

fn report(m: &Moved, from: &str, to: &str, took: Duration) {
    let t = &m.target;
    println!(
        "moved {} ({} pending, {} delivered, {} dead) and {} from {from} to {to} in {:.1} s",
        count(t.records(), "record", "records"),
        t.count(Status::Pending),
        t.count(Status::Delivered),
        t.count(Status::Dead),
        count(t.quarantined(), "quarantined entry", "quarantined entries"),
        took.as_secs_f64()
    );
    if m.already_there > 0 {
        println!(
            "{} of them were there from an earlier run; this run wrote {}",
            m.already_there, m.written
        );
    }
    println!(
        "verified: counts equal ({}), and every record's hash equal on both sides",
        m.target_counts.describe()
    );
}

fn next_steps(to: To, dir: &Path, url: &str) {
    let dir = dir.display();
    println!("next steps:");
    match to {
        To::Postgres => {
            println!("  1. set store_url = \"{url}\" in the service's settings (or OUTBOX_STORE_URL), with its password in store_password_file");
            println!("  2. start outbox (every instance with the same store_url); `outbox config check` shows the store it uses");
            println!("  3. keep {dir} until you no longer need to go back: the move did not change it, and outbox no longer reads it");
        }
        To::Embedded => {
            println!("  1. remove store_url (and OUTBOX_STORE_URL) from the service's settings, and set data_dir = \"{dir}\"");
            println!("  2. start one outbox instance on {dir}; `outbox inspect --data-dir {dir}` shows what it holds");
            println!("  3. the PostgreSQL store at {url} was not changed: drop its tables (outbox_records, outbox_accepted, outbox_counters, outbox_quarantine, outbox_schema_history) once you no longer need it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::sample;
    use crate::store::Record;

    fn moved(source: &[Record], target: &[Record]) -> Moved {
        let side = |records: &[Record]| {
            let mut d = Digest::default();
            records.iter().for_each(|r| d.add(r));
            d
        };
        let counts = Counts {
            accepted: source.len() as u64,
            pending: source.len() as u64,
            ..Counts::default()
        };
        Moved {
            source: side(source),
            target: side(target),
            source_counts: counts,
            target_counts: counts,
            written: 0,
            already_there: 0,
        }
    }

    #[test]
    fn a_copy_that_differs_is_a_problem_naming_the_first_trace_ids() {
        let (a, b) = (sample("trace-a"), sample("trace-b"));
        assert!(moved(&[a.clone(), b.clone()], &[b.clone(), a.clone()])
            .problems()
            .is_empty());
        let mut changed = b.clone();
        changed.last_error = Some("lost on the way".into());
        let mut m = moved(&[a.clone(), b], &[changed]);
        m.target_counts.pending = 1;
        let problems = m.problems();
        assert!(problems[0].starts_with("the counts differ"), "{problems:?}");
        assert_eq!(
            problems[1],
            "2 records differ between source and target: trace-a, trace-b"
        );
    }
}
