//! The PostgreSQL store as the ops commands reach it: opened by the command itself, always.
//!
//! sled lets one process hold a data directory, so a command asks the running server over
//! its admin socket. A PostgreSQL store is shared: any number of instances may run on it,
//! and the command is one more client. There is no server to ask and no "is one running"
//! question; a change is safe beside running instances because each one goes through the
//! store boundary ([`RecordStore`]), where a record under a live delivery lease is refused
//! as busy, exactly as the embedded store refuses a record its worker holds.
//!
//! The commands are synchronous (one request, one answer, a progress bar); [`Shared::block`]
//! runs each store call to completion on a runtime of the command's own.

use crate::config::PgSettings;
use crate::store::boundary::RecordStore;
use crate::store::engine::{Engine, EngineError};
use crate::store::postgres::config::masked_url;
use crate::store::postgres::PgStore;
use crate::store::Record;
use std::future::Future;
use std::sync::Arc;

/// Records read per [`RecordStore::page`] call by [`Shared::scan`]: large enough that a
/// scan of a big table is few round trips, small enough to hold in memory at once.
const PAGE: usize = 1000;

/// An open PostgreSQL store and the runtime that drives its calls.
pub struct Shared {
    engine: Engine,
    /// The same store as `engine`, for what only PostgreSQL reads (the queue's figures).
    pg: Arc<PgStore>,
    runtime: tokio::runtime::Runtime,
    /// The store URL with its password masked, for messages and `inspect`.
    pub location: String,
}

impl Shared {
    /// Connects, checks the server and the schema as `outbox serve` does. The error names
    /// the store (password masked) and what failed.
    pub fn open(pg: &PgSettings) -> anyhow::Result<Shared> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let location = masked_url(&pg.options.url);
        let store = runtime
            .block_on(PgStore::open(&pg.options))
            .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store at {location}: {e}"))?;
        Ok(Shared {
            engine: Engine::Postgres(store.clone()),
            pg: store,
            runtime,
            location,
        })
    }

    /// The store, behind the boundary.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The PostgreSQL store itself, beside the boundary.
    pub fn pg(&self) -> &PgStore {
        &self.pg
    }

    /// Runs one store call to completion.
    pub fn block<T>(
        &self,
        call: impl Future<Output = Result<T, EngineError>>,
    ) -> anyhow::Result<T> {
        Ok(self.runtime.block_on(call)?)
    }

    /// Runs any future to completion (several store calls at once).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Calls `each` with every record, in trace ID order, a page at a time. Records that do
    /// not decode are not seen (the store's `verify` reports them).
    pub fn scan(&self, mut each: impl FnMut(Record) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = self.block(self.engine.page(after.as_deref(), PAGE))?;
            let full = page.len() == PAGE;
            after = page.last().map(|r| r.trace_id.clone());
            for r in page {
                each(r)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Every record [`Shared::scan`] sees for which `keep` holds.
    pub fn records_where(&self, keep: impl Fn(&Record) -> bool) -> anyhow::Result<Vec<Record>> {
        let mut out = Vec::new();
        self.scan(|r| {
            if keep(&r) {
                out.push(r);
            }
            Ok(())
        })?;
        Ok(out)
    }
}
