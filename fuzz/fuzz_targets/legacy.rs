//! Fuzzes the reader of the old proxy's `pending_submissions` files, which an operator imports
//! in bulk from whatever the old proxy (or a crash, or a hand edit) left on disk.
//!
//! Input layout: the first line is the file name, the rest is the file's bytes.
//!
//! Invariants:
//! - an accepted file yields a valid trace ID (`[A-Za-z0-9._:-]{8,128}`): the file's own when it
//!   has one, else one derived from its bytes (`legacy-` + hex);
//! - an accepted file yields a non-empty payload object with no enrichment key left in it
//!   (enrichment is kept beside the payload, never inside);
//! - the same bytes always give the same trace ID and the same verdict, whatever the file is
//!   called (the name only supplies a time), so a second import finds the first one's records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox::intake::trace_id::is_valid;
use outbox::ops::commands::import_legacy::parse::{parse_legacy_file, ENRICHMENT_KEYS};

fuzz_target!(|data: &[u8]| {
    let (name, bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let name = String::from_utf8_lossy(name);
    let result = parse_legacy_file(&name, bytes);
    let renamed = parse_legacy_file("renamed.json", bytes);
    match (&result, &renamed) {
        (Ok(a), Ok(b)) => {
            assert!(is_valid(&a.trace_id), "invalid trace ID {:?}", a.trace_id);
            assert_eq!(a.trace_id, b.trace_id, "the name changed the trace ID");
            assert_eq!(a.fields, b.fields, "the name changed the payload");
            if a.trace_id_derived {
                assert!(a.trace_id.starts_with("legacy-"), "{:?}", a.trace_id);
            }
            assert!(
                !a.fields.is_empty(),
                "accepted a file with an empty payload"
            );
            for key in ENRICHMENT_KEYS {
                assert!(!a.fields.contains_key(key), "{key} left in the payload");
            }
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "the name changed the error");
            let _ = a.to_string();
        }
        _ => panic!("the file name changed the verdict: {result:?} vs {renamed:?}"),
    }
});
