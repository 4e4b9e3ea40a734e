//! Fuzzes the store's decoders, which read whatever is on disk (including values written by
//! older releases or damaged by a crash or a bad disk). The input is split in two at its first
//! byte: an `entries` value and a `bodies` value.
//!
//! Invariants:
//! - an empty value is `Empty`, a value whose first byte is not a known format version is
//!   `UnknownVersion` with that byte, and nothing panics;
//! - a record that decodes whole re-encodes in the current format (state, plus a body unless
//!   it is a delivered record without payload) and decodes back to the same record, except
//!   that a record without body drops the client's address and user agent (and the second
//!   copy of the trace ID that format 1 kept is the record's own);
//! - re-encoding is stable: encoding the decoded copy again gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox::store::record::{
    decode_body, decode_entry, encode_body, encode_state, has_body, DecodeError, BODY_V1,
    FORMAT_TOMBSTONE, FORMAT_V1, FORMAT_V3,
};

fn check_error(e: DecodeError, data: &[u8], known: &[u8]) {
    match e {
        DecodeError::Empty => assert!(data.is_empty()),
        DecodeError::UnknownVersion(v) => {
            assert!(!data.is_empty() && data[0] == v && !known.contains(&v))
        }
        DecodeError::Postcard(_) => assert!(known.contains(&data[0])),
        DecodeError::MissingBody(_) | DecodeError::BodyRead(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |n| (*n as usize).min(data.len() - 1) + 1);
    let (entry, body) = data.split_at(split.min(data.len()));
    let entry = entry.get(1..).unwrap_or_default();
    if let Err(e) = decode_body(body) {
        check_error(e, body, &[BODY_V1]);
    }
    let decoded = match decode_entry(entry) {
        Ok(d) => d,
        Err(e) => return check_error(e, entry, &[FORMAT_V1, FORMAT_TOMBSTONE, FORMAT_V3]),
    };
    let body_bytes = decoded.body_key().map(|_| body);
    let Ok(record) = decoded.complete(body_bytes) else {
        return;
    };
    let key = has_body(&record).then_some(1);
    let state = encode_state(&record, key);
    let body = key.map(|_| encode_body(&record));
    let again = decode_entry(&state)
        .expect("an encoded state decodes")
        .complete(body.as_deref())
        .expect("an encoded record decodes whole");
    // The state keeps one trace ID; format 1 stored a second copy in the enrichment.
    let mut expected = record.clone();
    expected.enrichment.trace_id = record.trace_id.clone();
    if key.is_none() {
        expected.enrichment.client_ip = String::new();
        expected.enrichment.user_agent = None;
    }
    assert_eq!(again, expected, "encode/decode changed the record");
    assert_eq!(
        encode_state(&again, key),
        state,
        "state encoding is not stable"
    );
});
