//! One entry point for every operation, shared by the socket server and the offline path.

use crate::delivery::DeliveryState;
use crate::ops::proto::Request;
use crate::ops::{backup, edit, import, inspect, purge, replay, verify};
use crate::store::Store;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Notify;

/// What an operation may touch: the store, plus the live delivery state and the worker's
/// wake-up when a server runs (both absent offline).
#[derive(Clone)]
pub struct OpsContext {
    pub store: Arc<Store>,
    pub delivery: Option<Arc<DeliveryState>>,
    pub wake: Option<Arc<Notify>>,
}

/// Progress callback: items done so far, and the total when known.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Sync);

/// Runs one request to completion. Errors are for the operator: they say what to do.
pub fn dispatch(ctx: &OpsContext, req: Request, progress: Progress) -> anyhow::Result<Value> {
    let store = &*ctx.store;
    let out = match req {
        Request::Summary => {
            let view = ctx.delivery.as_ref().map(|d| d.snapshot());
            let held = match (&ctx.delivery, &view) {
                (Some(d), Some(v)) => d.next_probe_ms(v),
                _ => None,
            };
            to_value(inspect::summary(store, view, held)?)
        }
        Request::List(q) => to_value(inspect::list(store, &q)?),
        Request::Get { trace_id } => {
            let trace_id = inspect::resolve(store, &trace_id)?.unwrap_or(trace_id);
            match inspect::get(store, &trace_id)? {
                Some(view) => to_value(view),
                None => anyhow::bail!(
                    "no record with trace ID {trace_id} (see `outbox inspect --list`)"
                ),
            }
        }
        Request::Replay(mut q) => {
            // An ID that names no record is left as given: the replay refuses it.
            for id in &mut q.trace_ids {
                if let Some(full) = inspect::resolve(store, id)? {
                    *id = full;
                }
            }
            let report = replay::replay(store, &q, progress)?;
            wake(ctx, !report.replayed.is_empty() && !q.dry_run);
            to_value(report)
        }
        Request::Edit {
            trace_id,
            payload,
            note,
        } => {
            let trace_id = inspect::resolve(store, &trace_id)?.unwrap_or(trace_id);
            to_value(edit::edit(store, &trace_id, payload, note)?)
        }
        Request::Verify { repair } => to_value(verify::verify_with(store, repair, progress)),
        Request::Backup { dest } => {
            anyhow::ensure!(
                dest.is_absolute(),
                "backup destination must be an absolute path"
            );
            to_value(backup::snapshot(store, &dest, progress)?)
        }
        Request::Import { files, dry_run } => {
            let report = import::import(store, &files, dry_run, progress)?;
            wake(ctx, !report.imported.is_empty() && !dry_run);
            to_value(report)
        }
        Request::Purge(q) => to_value(purge::purge(store, &q, progress)?),
    };
    Ok(out)
}

fn wake(ctx: &OpsContext, yes: bool) {
    if let (true, Some(w)) = (yes, &ctx.wake) {
        w.notify_one();
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("ops results are plain data")
}
