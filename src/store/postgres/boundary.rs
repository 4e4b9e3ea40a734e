//! The PostgreSQL store behind the store boundary ([`RecordStore`]): each method delegates
//! to the store's own (async, one round trip or one transaction each).

use super::{PgStore, PgStoreError};
use crate::store::boundary::{RecordStore, StoreFailure, Verified};
use crate::store::{Change, Claimed, Counts, Quarantined, Record, SubmitOutcome, Updated};

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

    async fn update<F>(&self, trace_id: &str, decide: F) -> Result<Updated, PgStoreError>
    where
        F: Fn(&Record) -> Change + Send + Sync,
    {
        PgStore::update(self, trace_id, decide).await
    }

    async fn quarantine(&self, trace_id: &str, reason: &str) -> Result<(), PgStoreError> {
        PgStore::quarantine(self, trace_id, reason).await
    }

    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Record>, PgStoreError> {
        PgStore::page(self, after, limit).await
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, PgStoreError> {
        PgStore::copy_quarantined(self).await
    }

    async fn purge_delivered_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<u64, PgStoreError> {
        PgStore::purge_delivered_before(self, before_ms, limit).await
    }

    async fn erase_address(&self, address: &str) -> Result<Vec<String>, PgStoreError> {
        PgStore::erase_address(self, address).await
    }

    async fn verify(&self) -> Result<Verified, PgStoreError> {
        PgStore::verify(self).await
    }
}
