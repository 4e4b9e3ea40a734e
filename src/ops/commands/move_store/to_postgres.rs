//! From a stopped data directory into PostgreSQL.
//!
//! The target may be empty, or hold exactly what an earlier run of this move copied (it was
//! interrupted, or ran to the end): every row there must be a record of the source with the
//! same content (a trace ID quarantined twice never is), the counters of what left the table
//! must be zero or the source's, and the group committers cannot have counted more accepted
//! than the source did (their rows count records of the source, when it was moved out of
//! this database before). Then
//! only the missing records are inserted (`ON CONFLICT DO NOTHING` all the same), so a rerun
//! completes the copy and changes nothing else. Anything else there (another outbox's
//! records, posts an instance already took) is refused before anything is written.

use super::digest::{first_named, repeated, Digest};
use super::{Moved, BATCH};
use crate::ops::operation::Progress;
use crate::store::postgres::copy::MovedCounters;
use crate::store::postgres::PgStore;
use crate::store::{Counts, Store};
use anyhow::{bail, Context};

/// The source's records and quarantined entries, after checking that it is sound.
fn read_source(source: &Store, tick: &dyn Fn(u64)) -> anyhow::Result<(Digest, Counts)> {
    let check = source.check(&|_, _| {})?;
    if !check.problems.is_empty() {
        bail!(
            "the data directory has problems ({}); run `outbox verify --repair` on it first, then move it",
            check.problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    let counts = source.counts()?;
    let mut digest = Digest::default();
    for (i, e) in source.entries().enumerate() {
        let e = e?;
        tick(i as u64);
        match e.record {
            Ok(r) => digest.add(&r),
            Err(u) => bail!(
                "record {} does not decode ({}); run `outbox verify --repair` to quarantine it, then move",
                e.trace_id,
                u.error
            ),
        }
    }
    for q in source.quarantined() {
        digest.add_quarantined(&q?);
    }
    Ok((digest, counts))
}

/// What the PostgreSQL store holds, and the trace IDs it quarantined more than once; `tick`
/// gets the records read so far.
async fn read_postgres(
    store: &PgStore,
    tick: &dyn Fn(u64),
) -> anyhow::Result<(Digest, Vec<String>)> {
    let mut digest = Digest::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.copy_page(after.as_deref(), BATCH).await?;
        for r in &page {
            digest.add(r);
        }
        tick(digest.records());
        match page.last() {
            Some(r) if page.len() == BATCH => after = Some(r.trace_id.clone()),
            _ => break,
        }
    }
    let quarantined = store.copy_quarantined().await?;
    for q in &quarantined {
        digest.add_quarantined(q);
    }
    Ok((digest, repeated(&quarantined)))
}

pub async fn run(
    source: &Store,
    target: &PgStore,
    progress: Progress<'_>,
) -> anyhow::Result<Moved> {
    // Three passes over the records: read the source, copy, read the copy back.
    let n = source.entry_count() + source.counts()?.quarantined;
    let total = 3 * n;
    let step = |pass: u64| move |done: u64| progress(pass * n + done.min(n), Some(total));
    let (digest, counts) = read_source(source, &step(0))?;
    let (there, twice) = read_postgres(target, &|_| {})
        .await
        .context("cannot read the PostgreSQL store")?;
    let mut foreign = there.not_in(&digest);
    foreign.extend(twice.iter().map(|id| format!("{id} (quarantined twice)")));
    if !foreign.is_empty() {
        bail!(
            "the PostgreSQL store already holds {} this move did not copy ({}): it is another outbox's store, or an instance already took posts into it; point store-url at an empty database (nothing was written)",
            crate::ops::text::count(foreign.len() as u64, "record", "records"),
            first_named(&foreign)
        );
    }
    let moved = MovedCounters {
        accepted: counts.accepted,
        quarantined: counts.quarantined,
        purged: counts.purged,
    };
    let found = target.moved_counters().await?;
    for (name, have, want) in [
        ("quarantined", found.quarantined, moved.quarantined),
        ("purged", found.purged, moved.purged),
    ] {
        if have != 0 && have != want {
            bail!(
                "the PostgreSQL store already counts {have} records {name} (the data directory {want}): it has a history of its own; point store-url at an empty database (nothing was written)"
            );
        }
    }
    let counted = target.accepted_by_committers().await?;
    if counted > counts.accepted {
        bail!(
            "the PostgreSQL store already counts {counted} submissions accepted by its instances (the data directory {}): it has a history of its own; point store-url at an empty database (nothing was written)",
            counts.accepted
        );
    }
    let mut done = 0u64;
    let mut inserted = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    for e in source.entries() {
        let r = e?
            .record
            .map_err(|u| anyhow::anyhow!("a record stopped decoding: {}", u.error))?;
        done += 1;
        if !there.holds(&r) {
            batch.push(r);
        }
        if batch.len() == BATCH {
            inserted += target.copy_in(&std::mem::take(&mut batch)).await?;
            step(1)(done);
        }
    }
    inserted += target.copy_in(&batch).await?;
    let quarantined: Vec<_> = source.quarantined().collect::<Result<_, _>>()?;
    let missing: Vec<_> = quarantined
        .into_iter()
        .filter(|q| !there.holds_quarantined(q))
        .collect();
    inserted += target.copy_in_quarantined(&missing).await?;
    target.set_moved_counters(moved).await?;
    let (copied, _) = read_postgres(target, &step(2)).await?;
    Ok(Moved {
        source: digest,
        target: copied,
        source_counts: counts,
        target_counts: target.counts().await?,
        written: inserted,
        already_there: there.records() + there.quarantined(),
    })
}
