//! The command list: every ops subcommand, and every operation the admin socket serves.
//!
//! Each command's module holds its arguments, its operations on the store and what it
//! prints; this file only lists them. How to add one: the `ops` module doc.

pub mod backup;
pub mod compact;
pub mod edit;
pub mod import_legacy;
pub mod inspect;
pub mod move_store;
pub mod purge;
pub mod replay;
pub mod restore;
pub mod top;
pub mod verify;

use crate::ops::operation::Handler;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Show counts, ages and delivery state; `--list` a table; or one record in full.
    Inspect(inspect::InspectArgs),
    /// Send records back to the delivery queue (they keep their trace ID, attempt 0).
    Replay(replay::ReplayArgs),
    /// Correct a pending record's or a dead letter's payload (opens $EDITOR).
    Edit(edit::EditArgs),
    /// Check the store's indexes and accounting; exit 1 if anything is wrong.
    Verify(verify::VerifyArgs),
    /// Write a consistent copy of the data directory to DEST (server running or not).
    Backup(backup::BackupArgs),
    /// Put a backup in place as the data directory (the server must be stopped).
    Restore(restore::RestoreArgs),
    /// Import the old proxy's pending_submissions/*.json files as pending records.
    ImportLegacy(import_legacy::ImportArgs),
    /// Drop old delivered tombstones, or erase everything about one email address.
    Purge(purge::PurgeArgs),
    /// Live view of a running server: rates, depth, oldest pending, delivery state.
    Top(top::TopArgs),
    /// Give disk space back: rewrite the store into a fresh copy and swap it in (server running or not).
    Compact(compact::CompactArgs),
    /// Move the whole outbox between the data directory and PostgreSQL (--to postgres|embedded), verified.
    ///
    /// Every record as it is (pending, dead, delivered tombstones, quarantined), the source
    /// only read, the copy compared record by record before it says done; exit 1 if it
    /// differs. Then switch the service's settings as it prints.
    MoveStore(move_store::MoveArgs),
}

/// Runs one subcommand. `Err` is a usage or environment error: `main` prints it and exits 2.
pub fn run(cmd: OpsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OpsCommand::Inspect(a) => inspect::run(a),
        OpsCommand::Replay(a) => replay::run(a),
        OpsCommand::Edit(a) => edit::run(a),
        OpsCommand::Verify(a) => verify::run(a),
        OpsCommand::Backup(a) => backup::run(a),
        OpsCommand::Restore(a) => restore::run(a),
        OpsCommand::ImportLegacy(a) => import_legacy::run(a),
        OpsCommand::Purge(a) => purge::run(a),
        OpsCommand::Top(a) => top::run(a),
        OpsCommand::Compact(a) => compact::run(a),
        OpsCommand::MoveStore(a) => move_store::run(a),
    }
}

/// Every operation the admin socket serves, found by the request's `op`.
pub const OPERATIONS: &[Handler] = &[
    Handler::of::<inspect::summary::SummaryRequest>(),
    Handler::of::<inspect::list::ListQuery>(),
    Handler::of::<inspect::record::GetRecord>(),
    Handler::of::<replay::ReplayQuery>(),
    Handler::of::<edit::EditRequest>(),
    Handler::of::<verify::VerifyRequest>(),
    Handler::of::<backup::SnapshotRequest>(),
    Handler::of::<import_legacy::records::ImportRequest>(),
    Handler::of::<purge::PurgeQuery>(),
    Handler::of::<compact::CompactRequest>(),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::operation::Operation;
    use crate::ops::socket::protocol::Request;
    use serde_json::json;

    #[test]
    fn every_operation_has_its_own_name() {
        let mut names: Vec<_> = OPERATIONS.iter().map(|h| h.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPERATIONS.len());
    }

    /// Requests read on the wire as they did when the protocol was one tagged enum, so a
    /// client and a server of neighbouring releases still understand each other.
    #[test]
    fn requests_keep_their_wire_format() {
        let wire = |r: Request| serde_json::to_value(r).unwrap();
        assert_eq!(
            wire(Request::of(&inspect::summary::SummaryRequest {})),
            json!({"op": "summary"})
        );
        let get = inspect::record::GetRecord {
            trace_id: "abc".into(),
        };
        assert_eq!(
            wire(Request::of(&get)),
            json!({"op": "get", "trace_id": "abc"})
        );
        let verify = verify::VerifyRequest { repair: true };
        assert_eq!(
            wire(Request::of(&verify)),
            json!({"op": "verify", "repair": true})
        );
        let list = inspect::list::ListQuery {
            limit: 5,
            ..Default::default()
        };
        assert_eq!(
            wire(Request::of(&list)),
            json!({"op": "list", "status": null, "form_type": null, "since_ms": null, "limit": 5})
        );
        let read_only: Vec<_> = OPERATIONS
            .iter()
            .filter(|h| h.read_only)
            .map(|h| h.name)
            .collect();
        assert_eq!(read_only, ["summary", "list", "get"]);
        assert_eq!(replay::ReplayQuery::NAME, "replay");
    }
}
