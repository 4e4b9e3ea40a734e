//! The store format: which layout of trees and values a data directory holds.
//!
//! The `meta` tree's `format` key says which release layout wrote the directory (see the
//! table in [`super::record`] for the values). A release reads every older format and
//! rewrites a record in the current one when it next changes it, so an upgrade needs no
//! migration step. A directory marked with a newer format than this release knows is refused
//! at open ([`StoreError::NewerFormat`]), before anything is read or written: an older binary
//! never quarantines records it cannot read, one by one.
//!
//! | format | written by                                  | `entries` values      |
//! |--------|---------------------------------------------|-----------------------|
//! | (none) | releases before the mark; read as format 2  | 1, 2                  |
//! | 2      | never written; the unmarked layout          | 1, 2                  |
//! | 3      | this release: state and body apart          | 1, 2 (old), 3; bodies |

use super::StoreError;
use std::path::Path;

/// The format this release writes, and the newest it reads.
pub const STORE_FORMAT: u64 = 3;
const KEY: &[u8] = b"format";

/// The format a data directory is marked with (unmarked: 2), without changing it.
pub fn stored_format(db: &sled::Db) -> Result<u64, StoreError> {
    let meta = db.open_tree("meta")?;
    Ok(match meta.get(KEY)? {
        Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 8])),
        None => 2,
    })
}

/// Refuses a directory written by a newer release; marks an older or new one with
/// [`STORE_FORMAT`] (durable with the first sync).
pub(super) fn check_and_mark(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    let found = stored_format(db)?;
    if found > STORE_FORMAT {
        return Err(StoreError::NewerFormat {
            path: dir.to_path_buf(),
            found,
            known: STORE_FORMAT,
        });
    }
    if found < STORE_FORMAT {
        db.open_tree("meta")?
            .insert(KEY, &STORE_FORMAT.to_be_bytes())?;
    }
    Ok(())
}

/// One past the last `bodies` key (1 for an empty tree).
pub(super) fn next_body_key(bodies: &sled::Tree) -> Result<u64, StoreError> {
    Ok(match bodies.last()? {
        Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1,
        None => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_store_from_a_newer_release_is_refused_at_open_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        drop(Store::open(&path).unwrap());
        {
            let db =
                crate::store::when_released(|| crate::store::maintenance::open_raw(&path)).unwrap();
            assert_eq!(stored_format(&db).unwrap(), STORE_FORMAT);
            db.open_tree("meta")
                .unwrap()
                .insert(KEY, &(STORE_FORMAT + 1).to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = crate::store::when_released(|| Store::open(&path))
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(matches!(err, StoreError::NewerFormat { found, .. } if found == STORE_FORMAT + 1));
        assert!(
            text.contains("newer outbox") && text.contains("restore a backup"),
            "{text}"
        );
        let db =
            crate::store::when_released(|| crate::store::maintenance::open_raw(&path)).unwrap();
        assert_eq!(
            stored_format(&db).unwrap(),
            STORE_FORMAT + 1,
            "left unmarked"
        );
    }
}
