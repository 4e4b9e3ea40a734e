//! What an operation over the store is: the contract between the commands, which define
//! operations, and the admin socket, which carries them.
//!
//! An operation is a serializable request type with a name (the socket's `op`) and a `run`
//! on the store. A command sends it through [`crate::ops::socket::route::call`]: to the
//! running server, which looks its name up in the command list and runs it, or straight to
//! `run` on the directory opened offline. Both paths run the same code. With the PostgreSQL
//! store, the command opens the store itself and calls [`Operation::run_shared`]: the same
//! request and the same output, the work done through the store boundary.

use crate::delivery::DeliveryState;
use crate::ops::shared::Shared;
use crate::store::Store;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::Notify;

/// Progress callback: items done so far, and the total when known.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Sync);

/// What an operation may touch: the store, plus the live delivery state and the worker's
/// wake-up when a server runs (both absent offline).
#[derive(Clone)]
pub struct OpsContext {
    pub store: Arc<Store>,
    pub delivery: Option<Arc<DeliveryState>>,
    pub wake: Option<Arc<Notify>>,
}

impl OpsContext {
    /// A directory opened by the command itself: nothing is delivering.
    pub fn offline(store: Arc<Store>) -> OpsContext {
        OpsContext {
            store,
            delivery: None,
            wake: None,
        }
    }

    /// Tells the delivery worker that records became due (a replay, an import).
    pub fn wake_worker(&self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }
}

/// One operation over the store. The request's fields travel as the socket request's fields
/// beside `op`, so a request type serializes as a JSON object.
pub trait Operation: Serialize + DeserializeOwned {
    /// The request's `op` on the socket.
    const NAME: &'static str;
    /// Read-only requests are logged by the server at debug level (`outbox top` sends one a
    /// second), changes at info.
    const READ_ONLY: bool = false;
    type Output: Serialize + DeserializeOwned;

    /// Runs to completion. Errors are for the operator: they say what to do.
    fn run(self, ctx: &OpsContext, progress: Progress) -> anyhow::Result<Self::Output>;

    /// Runs on the PostgreSQL store the command opened ([`Shared`]): same request, same
    /// output. An operation that only the embedded store does says so.
    fn run_shared(self, store: &Shared, progress: Progress) -> anyhow::Result<Self::Output> {
        let _ = (store, progress);
        anyhow::bail!(
            "operation {} works on the embedded store only, not on the PostgreSQL store",
            Self::NAME
        )
    }
}

/// An operation as the socket server runs it: found by name, arguments and result as JSON.
#[derive(Clone, Copy)]
pub struct Handler {
    pub name: &'static str,
    pub read_only: bool,
    pub run: fn(&OpsContext, Map<String, Value>, Progress) -> anyhow::Result<Value>,
}

impl Handler {
    pub const fn of<Q: Operation>() -> Handler {
        Handler {
            name: Q::NAME,
            read_only: Q::READ_ONLY,
            run: run_json::<Q>,
        }
    }
}

/// A request whose arguments do not fit its operation (a client of another version).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotUnderstood(pub String);

fn run_json<Q: Operation>(
    ctx: &OpsContext,
    args: Map<String, Value>,
    progress: Progress,
) -> anyhow::Result<Value> {
    let q: Q =
        serde_json::from_value(Value::Object(args)).map_err(|e| NotUnderstood(e.to_string()))?;
    Ok(serde_json::to_value(q.run(ctx, progress)?).expect("ops results are plain data"))
}
