//! The embedded sled store behind the store boundary ([`RecordStore`]): each method
//! delegates to the store's own, so behaviour is exactly the one the rest of the crate has
//! always had. The sled calls are synchronous and run inline in the returned future; a
//! caller on the async runtime that may wait for the disk runs it in `spawn_blocking`.

use super::lifecycle::{record_mentions, ERASE_PATIENCE};
use super::{
    Change, Claimed, Counts, Quarantined, Record, Status, Store, StoreError, SubmitOutcome, Updated,
};
use crate::store::boundary::{RecordStore, StoreFailure, Verified};

impl Store {
    /// Removes those of `ids` whose record mentions `needle_lower` (checked again in the
    /// transaction), counted as purged, waiting for a delivery of one to end. Returns the
    /// trace IDs removed; [`StoreError::StillDelivering`] if a delivery outlasts
    /// [`ERASE_PATIENCE`].
    pub fn erase_mentioning(
        &self,
        ids: Vec<String>,
        needle_lower: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut erased = Vec::new();
        for id in ids {
            let decide = |r: &Record| match record_mentions(r, needle_lower) {
                true => Change::Purge,
                false => Change::Keep,
            };
            match self.update_when_settled(&id, decide, ERASE_PATIENCE)? {
                Updated::Purged => erased.push(id),
                Updated::Busy(_) => {
                    return Err(StoreError::StillDelivering {
                        trace_id: id,
                        waited: ERASE_PATIENCE,
                    })
                }
                _ => {}
            }
        }
        Ok(erased)
    }
}

impl Store {
    /// The earliest due time among records that are not claimed.
    pub fn next_unclaimed_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let busy = self.claimed();
        Ok(self
            .due_until(i64::MAX, busy.len() + 1)?
            .into_iter()
            .find(|(_, id)| !busy.contains(id))
            .map(|(t, _)| t))
    }
}

impl StoreFailure for StoreError {
    fn not_supported(what: &'static str) -> Self {
        StoreError::NotSupported(what)
    }

    fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Sync(_) | StoreError::Commit(_) | StoreError::Closed
        )
    }
}

impl RecordStore for Store {
    type Error = StoreError;

    async fn submit(&self, record: Record) -> Result<SubmitOutcome, StoreError> {
        Store::submit(self, record).await
    }

    async fn get(&self, trace_id: &str) -> Result<Option<Record>, StoreError> {
        Store::get(self, trace_id)
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        Store::counts(self)
    }

    async fn claim_due(&self, now_ms: i64, want: usize) -> Result<Claimed, StoreError> {
        Store::claim_due(self, now_ms, want)
    }

    async fn next_unclaimed_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Store::next_unclaimed_due_ms(self)
    }

    async fn release(&self, ids: &[&str]) -> Result<(), StoreError> {
        Store::release(self, ids.iter().copied());
        Ok(())
    }

    async fn settle<F>(
        &self,
        ids: &[&str],
        decide: F,
    ) -> Result<Vec<Result<Updated, String>>, StoreError>
    where
        F: Fn(usize, &Record) -> Change + Send + Sync + 'static,
    {
        // Only this instance's claims are settled: a record it does not hold is left alone,
        // as the leases of a shared store leave a record another instance took over.
        let held: Vec<bool> = ids.iter().map(|id| self.is_claimed(id)).collect();
        Store::settle(self, ids, move |i, r| match held[i] {
            true => decide(i, r),
            false => Change::Keep,
        })
    }

    async fn update<F>(&self, trace_id: &str, decide: F) -> Result<Updated, StoreError>
    where
        F: Fn(&Record) -> Change + Send + Sync,
    {
        Store::update(self, trace_id, decide)
    }

    async fn quarantine(&self, trace_id: &str, reason: &str) -> Result<(), StoreError> {
        Store::quarantine(self, trace_id, reason)
    }

    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Record>, StoreError> {
        let claimed = self.claimed();
        let g = self.gen();
        let range = match after {
            Some(a) => g.trees.entries.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => g.trees.entries.iter(),
        };
        let mut out = Vec::new();
        for item in range {
            if out.len() == limit {
                break;
            }
            let (_, v) = item?;
            // Entries that do not decode are for verify and quarantine, not for a listing.
            let Ok(mut r) = g.trees.decode(&v) else {
                continue;
            };
            if r.status == Status::Pending && claimed.contains(&r.trace_id) {
                r.status = Status::InFlight;
            }
            out.push(r);
        }
        Ok(out)
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        Store::quarantined(self).collect()
    }

    async fn purge_delivered_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<u64, StoreError> {
        Ok(self.purge_expired(before_ms, limit)?.0 as u64)
    }

    async fn erase_address(&self, address: &str) -> Result<Vec<String>, StoreError> {
        let needle = address.to_lowercase();
        let mut ids = Vec::new();
        for r in self.records() {
            let r = r?;
            if record_mentions(&r, &needle) {
                ids.push(r.trace_id);
            }
        }
        self.erase_mentioning(ids, &needle)
    }

    async fn verify(&self) -> Result<Verified, StoreError> {
        // The check recounts the records against the counters and the identity too.
        let check = self.check(&|_, _| {})?;
        Ok(Verified {
            records: check.records,
            problems: check.problems,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The conformance suite against the sled store, each check on a fresh store.
    use crate::store::{Store, StoreError, StoreFailure};

    #[test]
    fn only_a_store_that_cannot_commit_now_is_unavailable() {
        // Intake answers these 503 with Retry-After; the others are 500 (see http::collect).
        for e in [
            StoreError::Sync("fdatasync: EIO".into()),
            StoreError::Commit("gone".into()),
            StoreError::Closed,
        ] {
            assert!(e.is_unavailable(), "{e}");
        }
        for e in [
            StoreError::NoRoom("full".into()),
            StoreError::not_supported("backups of this engine: use its own tools"),
            StoreError::Undecodable {
                trace_id: "t".into(),
                reason: "r".into(),
            },
        ] {
            assert!(!e.is_unavailable(), "{e}");
        }
        let e = StoreError::not_supported("compaction: VACUUM does it");
        assert_eq!(e.to_string(), "compaction: VACUUM does it");
    }

    /// A new store in a temporary directory (the guard).
    async fn fresh(_check: &str) -> Option<(tempfile::TempDir, Box<Store>)> {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data")).unwrap();
        Some((dir, Box::new(s)))
    }

    crate::conformance_tests!(fresh);
}
