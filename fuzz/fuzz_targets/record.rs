//! Fuzzes the store's record decoder, which reads whatever is on disk (including values written
//! by older releases or damaged by a crash or a bad disk).
//!
//! Invariants:
//! - an empty value is `Empty`, a value whose first byte is not a known format version is
//!   `UnknownVersion` with that byte;
//! - a value that decodes re-encodes to a value that starts with the current version byte and
//!   decodes to the same record (what the store rewrites on every update);
//! - re-encoding is stable: encoding the decoded copy again gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox::store::record::{decode, encode, DecodeError, FORMAT_V1};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(record) => {
            let bytes = encode(&record);
            assert_eq!(bytes[0], FORMAT_V1);
            let again = decode(&bytes).expect("an encoded record decodes");
            assert_eq!(again, record, "encode/decode changed the record");
            assert_eq!(encode(&again), bytes, "encoding is not stable");
        }
        Err(DecodeError::Empty) => assert!(data.is_empty()),
        Err(DecodeError::UnknownVersion(v)) => {
            assert!(!data.is_empty() && data[0] == v && v != FORMAT_V1)
        }
        Err(DecodeError::Postcard(_)) => assert_eq!(data[0], FORMAT_V1),
    }
});
