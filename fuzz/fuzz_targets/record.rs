//! Fuzzes the store's record decoder, which reads whatever is on disk (including values written
//! by older releases or damaged by a crash or a bad disk).
//!
//! Invariants:
//! - an empty value is `Empty`, a value whose first byte is not a known format version is
//!   `UnknownVersion` with that byte;
//! - a value that decodes re-encodes in the current format for its state: a delivered record
//!   without payload as a tombstone, which keeps what idempotency and look-ups need (trace
//!   ID, receipt, payload hash, attempts, delivery time, audit); any other record whole, which
//!   decodes to the same record (what the store rewrites on every update);
//! - re-encoding is stable: encoding the decoded copy again gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox::store::record::{
    decode, encode, is_tombstone, DecodeError, FORMAT_TOMBSTONE, FORMAT_V1,
};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(record) => {
            let bytes = encode(&record);
            let again = decode(&bytes).expect("an encoded record decodes");
            if is_tombstone(&record) {
                assert_eq!(bytes[0], FORMAT_TOMBSTONE);
                assert_eq!(again.receipt(), record.receipt());
                assert_eq!(
                    (
                        again.status,
                        again.payload_hash,
                        again.attempts,
                        again.delivered_at_ms
                    ),
                    (
                        record.status,
                        record.payload_hash,
                        record.attempts,
                        record.delivered_at_ms
                    )
                );
                assert_eq!(again.audit, record.audit);
            } else {
                assert_eq!(bytes[0], FORMAT_V1);
                assert_eq!(again, record, "encode/decode changed the record");
            }
            assert_eq!(encode(&again), bytes, "encoding is not stable");
        }
        Err(DecodeError::Empty) => assert!(data.is_empty()),
        Err(DecodeError::UnknownVersion(v)) => {
            assert!(!data.is_empty() && data[0] == v && v != FORMAT_V1 && v != FORMAT_TOMBSTONE)
        }
        Err(DecodeError::Postcard(_)) => {
            assert!(data[0] == FORMAT_V1 || data[0] == FORMAT_TOMBSTONE)
        }
    }
});
