//! Intake: everything between the HTTP body and a [`crate::store::Record`], as pure functions.
//!
//! - [`mod@parse`]: content type + bytes -> [`Submission`] (no I/O, fuzzed).
//! - [`trace_id`]: where a trace ID comes from and what it may look like.
//! - [`form_type`]: explicit field, then configured presence rules, then `generic`.
//! - [`client_ip`]: the client address, trusting forwarded headers only from configured proxies.
//! - [`enrich`]: builds the enrichment kept beside (never inside) the form's own fields.

pub mod client_ip;
pub mod enrich;
pub mod form_type;
pub mod parse;
pub mod trace_id;

pub use parse::{check_shape, parse, Limits, ParseError, Submission};
