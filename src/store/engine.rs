//! The engine the service runs on, chosen by one setting: the embedded sled store in the
//! data directory (the default), or a PostgreSQL store that several instances share. The
//! enum implements [`RecordStore`] by dispatch, so the intake path, the delivery worker and
//! the ops commands are written once against the boundary.
//!
//! The sled calls run inline in the returned future, as [`RecordStore`] describes: a caller
//! on the async runtime that may wait for the disk (everything but `submit`, which waits
//! for its group commit without blocking) runs them on a blocking thread, or takes the
//! embedded arm itself for work that batches several calls into one blocking hand-off (the
//! delivery worker's step).

use super::boundary::{RecordStore, StoreFailure, Verified};
use super::postgres::{PgStore, PgStoreError};
use super::{
    Change, Claimed, Counts, Quarantined, Record, Store, StoreError, SubmitOutcome, Updated,
};
use std::sync::Arc;

/// One of the two engines behind the store boundary.
#[derive(Clone)]
pub enum Engine {
    Embedded(Arc<Store>),
    Postgres(Arc<PgStore>),
}

/// The error of whichever engine runs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Embedded(#[from] StoreError),
    #[error(transparent)]
    Postgres(#[from] PgStoreError),
}

impl StoreFailure for EngineError {
    fn not_supported(what: &'static str) -> Self {
        EngineError::Embedded(StoreError::not_supported(what))
    }

    fn is_unavailable(&self) -> bool {
        match self {
            EngineError::Embedded(e) => e.is_unavailable(),
            EngineError::Postgres(e) => e.is_unavailable(),
        }
    }
}

impl Engine {
    /// The engine's name for logs, health and `config check`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Embedded(_) => "embedded",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// The embedded store, when that is the engine.
    pub fn embedded(&self) -> Option<&Arc<Store>> {
        match self {
            Engine::Embedded(s) => Some(s),
            Engine::Postgres(_) => None,
        }
    }

    /// The PostgreSQL store, when that is the engine.
    pub fn postgres(&self) -> Option<&Arc<PgStore>> {
        match self {
            Engine::Embedded(_) => None,
            Engine::Postgres(s) => Some(s),
        }
    }
}

/// PostgreSQL could not be reached at start. The service does not start without its store:
/// it exits (with [`Unreachable::EXIT_CODE`], which a service manager restarts, unlike the
/// code of a configuration error), so that readiness, intake and delivery never run on a
/// store whose server, schema and settings were not checked.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the PostgreSQL store at {url} ({why}): check that PostgreSQL runs and accepts connections from this host, and the host, port and credentials in store-url; outbox exits with code 3 so that its service manager starts it again")]
pub struct Unreachable {
    /// The store URL, its password masked.
    pub url: String,
    pub why: PgStoreError,
}

impl Unreachable {
    /// The exit code of a start that found PostgreSQL unreachable: not 2 (a configuration
    /// error, which `ops/outbox.service` does not restart), so systemd tries again.
    pub const EXIT_CODE: u8 = 3;
}

impl From<Arc<Store>> for Engine {
    fn from(s: Arc<Store>) -> Engine {
        Engine::Embedded(s)
    }
}

impl From<Arc<PgStore>> for Engine {
    fn from(s: Arc<PgStore>) -> Engine {
        Engine::Postgres(s)
    }
}

/// Runs the same call on whichever engine runs, turning its error into [`EngineError`].
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Engine::Embedded($s) => {
                let $s: &Store = $s;
                $call.await.map_err(EngineError::from)
            }
            Engine::Postgres($s) => {
                let $s: &PgStore = $s;
                $call.await.map_err(EngineError::from)
            }
        }
    };
}

impl RecordStore for Engine {
    type Error = EngineError;

    async fn submit(&self, record: Record) -> Result<SubmitOutcome, EngineError> {
        dispatch!(self, s => RecordStore::submit(s, record))
    }

    async fn get(&self, trace_id: &str) -> Result<Option<Record>, EngineError> {
        dispatch!(self, s => RecordStore::get(s, trace_id))
    }

    async fn counts(&self) -> Result<Counts, EngineError> {
        dispatch!(self, s => RecordStore::counts(s))
    }

    async fn claim_due(&self, now_ms: i64, want: usize) -> Result<Claimed, EngineError> {
        dispatch!(self, s => RecordStore::claim_due(s, now_ms, want))
    }

    async fn next_unclaimed_due_ms(&self) -> Result<Option<i64>, EngineError> {
        dispatch!(self, s => RecordStore::next_unclaimed_due_ms(s))
    }

    async fn release(&self, ids: &[&str]) -> Result<(), EngineError> {
        dispatch!(self, s => RecordStore::release(s, ids))
    }

    async fn settle<F>(
        &self,
        ids: &[&str],
        decide: F,
    ) -> Result<Vec<Result<Updated, String>>, EngineError>
    where
        F: Fn(usize, &Record) -> Change + Send + Sync + 'static,
    {
        dispatch!(self, s => RecordStore::settle(s, ids, decide))
    }

    async fn update<F>(&self, trace_id: &str, decide: F) -> Result<Updated, EngineError>
    where
        F: Fn(&Record) -> Change + Send + Sync,
    {
        dispatch!(self, s => RecordStore::update(s, trace_id, decide))
    }

    async fn quarantine(&self, trace_id: &str, reason: &str) -> Result<(), EngineError> {
        dispatch!(self, s => RecordStore::quarantine(s, trace_id, reason))
    }

    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Record>, EngineError> {
        dispatch!(self, s => RecordStore::page(s, after, limit))
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, EngineError> {
        dispatch!(self, s => RecordStore::quarantined(s))
    }

    async fn purge_delivered_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<u64, EngineError> {
        dispatch!(self, s => RecordStore::purge_delivered_before(s, before_ms, limit))
    }

    async fn erase_address(&self, address: &str) -> Result<Vec<String>, EngineError> {
        dispatch!(self, s => RecordStore::erase_address(s, address))
    }

    async fn verify(&self) -> Result<Verified, EngineError> {
        dispatch!(self, s => RecordStore::verify(s))
    }
}
