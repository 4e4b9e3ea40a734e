//! Operations on the outbox: inspect, replay, edit, verify, back up, restore, import and purge.
//!
//! sled lets one process open a data directory, so while `outbox serve` runs, every ops
//! subcommand asks it over a Unix socket in the data directory; when no server answers, the
//! subcommand opens the directory itself. Each operation is one function taking `&Store`,
//! called by the socket server and by the offline path alike, so both behave the same.

pub mod legacy;
