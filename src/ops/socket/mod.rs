//! The admin channel: a Unix socket in the data directory, through which ops commands reach
//! a running server.
//!
//! - `protocol`: the wire format (newline-delimited JSON);
//! - `server`: serves the socket inside `outbox serve`, running the operations of the command
//!   list it is given;
//! - `client`: connects and sends one request;
//! - `route`: the one place that chooses, for every command, between the running server and
//!   the stopped directory opened offline, and says which on stderr.

pub mod client;
pub mod protocol;
pub mod route;
pub mod server;
