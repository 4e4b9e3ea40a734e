//! Operations on the outbox: inspect, replay, edit, verify, back up, restore, import and purge.
//!
//! sled lets one process open a data directory, so while `outbox serve` runs, every ops
//! subcommand asks it over a Unix socket in the data directory; when no server answers, the
//! subcommand opens the directory itself. Each operation is one function taking `&Store`,
//! called by the socket server and by the offline path alike, so both behave the same.

pub mod access;
pub mod backup;
pub mod client;
pub mod command;
pub mod compact;
pub mod edit;
pub mod edit_cli;
pub mod handler;
pub mod import;
pub mod import_cli;
pub mod inspect;
pub mod legacy;
pub mod progress;
pub mod proto;
pub mod purge;
pub mod purge_cli;
pub mod replay;
pub mod restore;
pub mod run;
pub mod server;
pub mod table;
pub mod text;
pub mod top;
pub mod verify;
