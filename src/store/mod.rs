//! The store: one boundary, the record lifecycle every engine shares, and the engines.
//!
//! - [`boundary`]: what outbox needs of a store ([`RecordStore`]), the errors callers tell
//!   apart ([`StoreFailure`]); `conformance` (built for tests) is the behaviour every engine
//!   must show, as plain functions each engine's tests call with its own store.
//! - the shared lifecycle: [`record`] (a record and its statuses), [`lifecycle`] (what a
//!   submission found, what a change decides and did, what a claim took, what an erasure
//!   removes), [`counters`] (the accounting identity).
//! - [`engine`]: the engine the service runs on, one of the two below, chosen by one setting.
//! - [`postgres`]: the PostgreSQL engine that several instances share.
//! - [`embedded`]: the sled engine in the data directory, the default. Its modules are
//!   re-exported here under their long-standing paths (`store::maintenance`, ...).

pub mod boundary;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod counters;
pub mod embedded;
pub mod engine;
pub mod lifecycle;
pub mod postgres;
pub mod record;

pub use boundary::{RecordStore, StoreFailure, Verified};
pub use counters::Counts;
pub use engine::{Engine, EngineError};
pub use lifecycle::{Change, Claimed, SubmitOutcome, Updated};
pub use record::{Receipt, Record, Status};

pub(crate) use embedded::when_released;
pub use embedded::{check, claims, compaction, done, format, keys, maintenance, read, space};
pub use embedded::{
    Entry, QuarantineEntry, Quarantined, Store, StoreError, SyncHealth, Undecodable,
};

use sha2::{Digest, Sha256};

/// The SHA-256 of a payload in normal form: serde_json writes object keys sorted and without
/// whitespace, so the same fields in any order or spacing hash the same.
pub fn payload_hash(fields: &serde_json::Map<String, serde_json::Value>) -> [u8; 32] {
    normal_payload(fields).1
}

/// The payload in normal form (the JSON text a record stores) and its [`payload_hash`],
/// from one serialization.
pub fn normal_payload(fields: &serde_json::Map<String, serde_json::Value>) -> (String, [u8; 32]) {
    let normal = serde_json::to_string(fields).expect("a JSON map serializes");
    let hash = Sha256::digest(normal.as_bytes()).into();
    (normal, hash)
}
