//! outbox: a durable intake service for website forms.
//!
//! A post to `/api/collect` is parsed ([`intake`]), enriched, and committed to an embedded
//! sled store ([`store`]) by a group committer that fsyncs before any 2xx is sent. A
//! background worker ([`delivery`]) drains the store to the dashboard with backoff, a circuit
//! breaker and a dead-letter lane. Operators inspect and repair the store with subcommands
//! ([`ops`]) that talk to a running server over a Unix socket, or open a stopped directory.
//! [`app`] wires the HTTP server ([`http`]), the store and the worker together and owns the
//! shutdown order; [`config`] turns flags, `OUTBOX_*` variables and a TOML file into
//! [`config::Settings`]. [`telemetry`] holds logging and the table of metrics, [`time`] the
//! clock and the one time format.

pub mod alloc;
pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod healthcheck;
pub mod http;
pub mod intake;
pub mod log_summary;
pub mod ops;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod time;
