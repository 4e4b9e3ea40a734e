//! `outbox inspect` without arguments: counts, ages, the next attempt and the server's
//! delivery state.

use crate::delivery::DeliveryView;
use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::shared::Shared;
use crate::store::{Counts, Store};
use crate::time::now_ms;
use crate::time::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Asks for the [`Summary`] (socket `op`: `summary`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SummaryRequest {}

impl Operation for SummaryRequest {
    const NAME: &'static str = "summary";
    const READ_ONLY: bool = true;
    type Output = Summary;

    fn run(self, ctx: &OpsContext, _: Progress) -> anyhow::Result<Summary> {
        let view = ctx.delivery.as_ref().map(|d| d.snapshot());
        let held = match (&ctx.delivery, &view) {
            (Some(d), Some(v)) => d.next_probe_ms(v),
            _ => None,
        };
        summary(&ctx.store, view, held)
    }

    /// One statement: the server counts and finds the two times (`top` asks every second).
    fn run_shared(self, store: &Shared, _: Progress) -> anyhow::Result<Summary> {
        let f = store.block_on(store.pg().queue_figures())?;
        let (oldest, next) = (f.oldest_queued_ms, f.next_attempt_ms);
        let mut s = assemble(store.location.clone(), f.counts, oldest, next, None, 0);
        s.shared = true;
        Ok(s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub data_dir: String,
    pub counts: Counts,
    /// Whether `accepted` equals the sum of the other counts.
    pub balanced: bool,
    pub oldest_pending_at: Option<String>,
    pub oldest_pending_age_secs: Option<i64>,
    pub next_attempt_at: Option<String>,
    /// The server's delivery state (mode, circuit, last success and failure); `None`
    /// offline, where nothing is delivering.
    pub delivery: Option<Value>,
    /// 0 for the PostgreSQL store, whose size is PostgreSQL's to report.
    pub disk_bytes: u64,
    /// The store is PostgreSQL, shared by several instances: `data_dir` is its URL
    /// (password masked), and `delivery` is `None` because the command asks no instance.
    #[serde(default)]
    pub shared: bool,
}

/// The summary; `held_until` is the next probe while the circuit is open or delivery paused
/// (nothing is sent before it, so the next attempt is no earlier).
pub fn summary(
    store: &Store,
    delivery: Option<DeliveryView>,
    held_until: Option<i64>,
) -> anyhow::Result<Summary> {
    let counts = store.counts()?;
    let oldest = store.oldest_queued_ms()?;
    let next = store
        .next_due_ms()?
        .map(|t| held_until.map_or(t, |h| t.max(h)));
    Ok(assemble(
        store.path().display().to_string(),
        counts,
        oldest,
        next,
        delivery,
        store.disk_bytes(),
    ))
}

/// The summary from what either engine read: the oldest queued record's receipt time and
/// the next attempt (ms).
fn assemble(
    data_dir: String,
    counts: Counts,
    oldest: Option<i64>,
    next: Option<i64>,
    delivery: Option<DeliveryView>,
    disk_bytes: u64,
) -> Summary {
    Summary {
        data_dir,
        balanced: counts.balanced(),
        counts,
        oldest_pending_at: oldest.map(rfc3339),
        oldest_pending_age_secs: oldest.map(|t| (now_ms() - t).max(0) / 1000),
        next_attempt_at: next.map(rfc3339),
        delivery: delivery.map(|d| serde_json::to_value(d).expect("plain data")),
        disk_bytes,
        shared: false,
    }
}
