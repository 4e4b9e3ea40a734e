//! Key layout of the index trees. Times are milliseconds since the Unix epoch, big-endian so
//! that byte order is time order; negative times (never produced) clamp to zero.

use super::record::Status;

/// `due` key: `next_attempt_at_ms (u64 BE) ++ trace_id`.
pub fn time_key(ms: i64, trace_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + trace_id.len());
    k.extend_from_slice(&(ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(trace_id.as_bytes());
    k
}

/// Splits a time-prefixed key back into its parts.
pub fn split_time_key(key: &[u8]) -> Option<(i64, &str)> {
    if key.len() < 8 {
        return None;
    }
    let (t, id) = key.split_at(8);
    let ms = u64::from_be_bytes(t.try_into().ok()?);
    Some((
        ms.min(i64::MAX as u64) as i64,
        std::str::from_utf8(id).ok()?,
    ))
}

/// The `due` value records the status the entry had when indexed, so a record that later
/// fails to decode can still be taken off the right counter.
pub fn status_byte(status: Status) -> u8 {
    match status {
        Status::Pending => b'p',
        Status::InFlight => b'i',
        Status::Delivered => b'd',
        Status::Dead => b'x',
    }
}

pub fn status_from_byte(b: u8) -> Option<Status> {
    Status::ALL.into_iter().find(|s| status_byte(*s) == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_by_time_then_id_and_round_trip() {
        let a = time_key(1_000, "zzzzzzzz");
        let b = time_key(2_000, "aaaaaaaa");
        assert!(a < b);
        assert_eq!(split_time_key(&b), Some((2_000, "aaaaaaaa")));
        assert_eq!(split_time_key(&time_key(-5, "x")), Some((0, "x")));
        assert_eq!(split_time_key(b"short"), None);
    }
}
