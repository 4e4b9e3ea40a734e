//! The store boundary: what outbox needs of a store, whichever engine keeps the records.
//!
//! Two engines sit below it: the embedded sled store ([`super::Store`]) and a PostgreSQL
//! store that several instances share. Above it sit the record lifecycle ([`Record`],
//! [`Status`](super::Status), [`Change`], [`Updated`]) and the accounting ([`Counts`]) that
//! every engine keeps the same way, and one conformance suite (`store::conformance`, built
//! for tests) that each engine's tests run with their own store.
//!
//! # Why a trait with `async fn`, not `Box<dyn>` or an enum alone
//! The PostgreSQL engine is async through and through (a network round trip per call), the
//! sled engine is synchronous (a read is a page cache hit, a write waits for its group
//! commit). An async trait is the shape both fit: the sled implementation does its work
//! inline in the future, so a caller on the async runtime that may wait for the disk still
//! wraps the call in `spawn_blocking` as today. Native `async fn` in traits (Rust 1.75)
//! needs no `async-trait` crate and no boxed future per call, at the price of not being
//! object-safe; nothing needs `dyn` here: the conformance suite is generic over the trait,
//! and the running service will hold one enum over the two engines that implements the trait
//! by dispatch (a closed set of two engines, chosen by one setting), so the intake path and
//! the delivery worker are written once against the trait.
//!
//! A capability an engine lacks is an explicit [`StoreFailure::not_supported`] error naming
//! what does that job instead, never a silent no-op.

use super::{Change, Claimed, Counts, Quarantined, Record, SubmitOutcome, Updated};
use std::future::Future;

/// The error of an engine behind the boundary: what the callers above it must tell apart.
pub trait StoreFailure: std::error::Error + Send + Sync + 'static {
    /// This engine does not do `what`; the text says what does it instead.
    fn not_supported(what: &'static str) -> Self;
    /// Whether the outcome is not known or not durable and the same request may succeed
    /// later: intake answers 503 with `Retry-After`, the delivery worker waits.
    fn is_unavailable(&self) -> bool;
}

/// What a [`RecordStore::verify`] found: the records it read and each problem in words.
/// The accounting identity failing is one of the problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub problems: Vec<String>,
}

/// What outbox needs of a store. Every change to a record moves the counters with it, so
/// [`Counts::balanced`] holds after every call that returned.
pub trait RecordStore: Send + Sync {
    type Error: StoreFailure;

    /// Stores a new record durably, or reports the one under its trace ID: the original
    /// receipt for the same payload hash, a conflict for another. Resolves only once the
    /// commit that holds it is durable; concurrent calls share one commit (a group).
    fn submit(
        &self,
        record: Record,
    ) -> impl Future<Output = Result<SubmitOutcome, Self::Error>> + Send;

    /// The record under `trace_id`, shown as in flight while this instance delivers it.
    fn get(
        &self,
        trace_id: &str,
    ) -> impl Future<Output = Result<Option<Record>, Self::Error>> + Send;

    /// The accounting counters, claimed records counted in flight.
    fn counts(&self) -> impl Future<Output = Result<Counts, Self::Error>> + Send;

    /// Claims up to `want` records due at or before `now_ms` that no one has claimed,
    /// earliest due first. Entries that do not decode come back apart, for quarantine.
    fn claim_due(
        &self,
        now_ms: i64,
        want: usize,
    ) -> impl Future<Output = Result<Claimed, Self::Error>> + Send;

    /// When the earliest record that no one has claimed falls due (ms), `None` when none
    /// is pending: how long the delivery worker may sleep.
    fn next_unclaimed_due_ms(
        &self,
    ) -> impl Future<Output = Result<Option<i64>, Self::Error>> + Send;

    /// Gives claims back unsent: the records are due as they were, no attempt spent.
    fn release(&self, ids: &[&str]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Writes the outcomes of records this instance claimed and ends their claims. `decide`
    /// gets each record's index in `ids` and the stored record. A record not (or no longer)
    /// claimed by this instance is left alone as [`Updated::Busy`] or unchanged; a record
    /// that does not decode is `Err(reason)` in its slot.
    fn settle<F>(
        &self,
        ids: &[&str],
        decide: F,
    ) -> impl Future<Output = Result<Vec<Result<Updated, String>>, Self::Error>> + Send
    where
        F: Fn(usize, &Record) -> Change + Send + Sync + 'static;

    /// Reads, decides and writes one record atomically (replay, edit, erasure). A record
    /// being delivered is not changed: [`Updated::Busy`]. `decide` may run more than once.
    fn update<F>(
        &self,
        trace_id: &str,
        decide: F,
    ) -> impl Future<Output = Result<Updated, Self::Error>> + Send
    where
        F: Fn(&Record) -> Change + Send + Sync;

    /// Moves a record out of the lifecycle with the reason (it does not decode, or cannot
    /// be sent), keeping the accounting: its status counter goes down as `quarantined` goes up.
    fn quarantine(
        &self,
        trace_id: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Up to `limit` records after trace ID `after` (from the first when `None`), in trace
    /// ID order, for listing and inspection; entries that do not decode are skipped.
    fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Record>, Self::Error>> + Send;

    /// Every quarantined entry with its reason and time, in trace ID order (an engine that
    /// keeps a trace ID quarantined more than once gives each entry, oldest first), for
    /// listing. The quarantine holds what could not be read or sent, so it is small and
    /// read whole.
    fn quarantined(&self) -> impl Future<Output = Result<Vec<Quarantined>, Self::Error>> + Send;

    /// Removes up to `limit` delivered records delivered before `before_ms` (their
    /// idempotency window is over); they count as purged. Returns how many went.
    fn purge_delivered_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Removes every record whose payload or enrichment mentions `address` in any letter
    /// case (a privacy request), dead letters included; they count as purged. A record
    /// being delivered is removed once its attempt ends. Returns the trace IDs removed.
    fn erase_address(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<Vec<String>, Self::Error>> + Send;

    /// Reads every record and checks the engine's own invariants and the accounting.
    fn verify(&self) -> impl Future<Output = Result<Verified, Self::Error>> + Send;
}
