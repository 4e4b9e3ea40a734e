//! The PostgreSQL store behind the store boundary ([`RecordStore`]): each method delegates
//! to the store's own (async, one round trip or one transaction each).

use super::{PgStore, PgStoreError};
use crate::store::boundary::{RecordStore, StoreFailure, Verified};
use crate::store::{Change, Claimed, Counts, Record, SubmitOutcome, Updated};

impl StoreFailure for PgStoreError {
    fn not_supported(what: &'static str) -> Self {
        PgStoreError::NotSupported(what)
    }

    fn is_unavailable(&self) -> bool {
        PgStoreError::is_unavailable(self)
    }
}

impl RecordStore for PgStore {
    type Error = PgStoreError;

    async fn submit(&self, record: Record) -> Result<SubmitOutcome, PgStoreError> {
        PgStore::submit(self, record).await
    }

    async fn get(&self, trace_id: &str) -> Result<Option<Record>, PgStoreError> {
        PgStore::get(self, trace_id).await
    }

    async fn counts(&self) -> Result<Counts, PgStoreError> {
        PgStore::counts(self).await
    }

    async fn claim_due(&self, now_ms: i64, want: usize) -> Result<Claimed, PgStoreError> {
        PgStore::claim_due(self, now_ms, want).await
    }

    async fn next_unclaimed_due_ms(&self) -> Result<Option<i64>, PgStoreError> {
        PgStore::next_unclaimed_due_ms(self).await
    }

    async fn release(&self, ids: &[&str]) -> Result<(), PgStoreError> {
        PgStore::release(self, ids).await
    }

    async fn settle<F>(
        &self,
        ids: &[&str],
        decide: F,
    ) -> Result<Vec<Result<Updated, String>>, PgStoreError>
    where
        F: Fn(usize, &Record) -> Change + Send + Sync + 'static,
    {
        PgStore::settle(self, ids, decide).await
    }

    // Not yet written for this engine: each says so as an error, never a silent no-op.

    async fn update<F>(&self, _trace_id: &str, _decide: F) -> Result<Updated, PgStoreError>
    where
        F: Fn(&Record) -> Change + Send + Sync,
    {
        Err(PgStoreError::not_supported(
            "changing one record is not yet available with the PostgreSQL store",
        ))
    }

    async fn quarantine(&self, _trace_id: &str, _reason: &str) -> Result<(), PgStoreError> {
        Err(PgStoreError::not_supported(
            "quarantine is not yet available with the PostgreSQL store",
        ))
    }

    async fn page(&self, _after: Option<&str>, _limit: usize) -> Result<Vec<Record>, PgStoreError> {
        Err(PgStoreError::not_supported(
            "listing records is not yet available with the PostgreSQL store",
        ))
    }

    async fn purge_delivered_before(
        &self,
        before_ms: i64,
        _limit: usize,
    ) -> Result<u64, PgStoreError> {
        PgStore::purge_delivered_before(self, before_ms).await
    }

    async fn erase_address(&self, _address: &str) -> Result<Vec<String>, PgStoreError> {
        Err(PgStoreError::not_supported(
            "erasure by address is not yet available with the PostgreSQL store",
        ))
    }

    async fn verify(&self) -> Result<Verified, PgStoreError> {
        Err(PgStoreError::not_supported(
            "verify is not yet available with the PostgreSQL store",
        ))
    }
}
