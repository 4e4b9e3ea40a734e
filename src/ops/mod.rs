//! Operations on the outbox: inspect, replay, edit, verify, back up, restore, compact, import,
//! purge and top.
//!
//! sled lets one process open a data directory, so while `outbox serve` runs, every ops
//! subcommand asks it over a Unix socket in the data directory; when no server answers, the
//! subcommand opens the directory itself. A PostgreSQL store (`--store-url`) is shared by
//! any number of instances, so a command opens it itself, always ([`shared`]). Work on the store is an [`operation::Operation`]:
//! the socket server runs it for a client, the offline path runs the same `run` on the store
//! it opened, so both behave the same.
//!
//! # Layout
//! - `commands/`: one module per subcommand, holding its arguments (clap), its operations on
//!   `&Store` and what it prints. `commands/mod.rs` is the command list.
//! - `socket/`: the admin channel: its protocol, the server, the client, and `route`, the one
//!   place that chooses between the running server and the offline directory.
//! - `operation.rs`: what an operation is (the contract between commands and socket);
//!   `target.rs`: `--data-dir`/`--config`; `output.rs`: `--json` and exit codes; `text.rs`:
//!   times, ages, sizes for people; `shared.rs`: the PostgreSQL store opened by a command; `progress.rs`: the progress bar; `access.rs`: data
//!   directory errors for people.
//!
//! Imports point one way: commands use the socket, both use the files at this level, and
//! nothing at this level or in `socket/` imports a command (the server is handed the command
//! list when it starts).
//!
//! # Adding a command
//! 1. Write `commands/<name>.rs` (or `commands/<name>/` when it grows past ~300 lines): a clap
//!    `Args` struct that flattens [`target::Target`] and a `run(args) ->
//!    anyhow::Result<ExitCode>`; for work on the store, a request type implementing
//!    [`operation::Operation`] (its `NAME` is the socket `op`) with its `run_shared` for
//!    the PostgreSQL store, sent with [`socket::route::Place::call`], which takes the
//!    PostgreSQL store, the server or the offline path and says which.
//! 2. In `commands/mod.rs`, the command list: `pub mod <name>;`, a variant of `OpsCommand`
//!    (its doc comment is the help line), its arm in `run`, and each of its operations in
//!    `OPERATIONS` (the socket server serves only those).
//! 3. In the README (section Operations): a row of the command table, and the JSON shape if
//!    it prints `--json`.

pub mod access;
pub mod commands;
pub mod operation;
pub mod output;
pub mod progress;
pub mod shared;
pub mod socket;
pub mod target;
pub mod text;
