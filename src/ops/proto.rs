//! The admin channel's wire format: newline-delimited JSON over `<data-dir>/admin.sock`.
//!
//! On connect the server writes a [`Reply::Hello`] (so the client can say which process it
//! talks to); the client writes one [`Request`] line; the server answers with any number of
//! [`Reply::Progress`] lines and then exactly one [`Reply::Ok`] or [`Reply::Error`]. Results
//! travel as JSON values so the transport does not depend on each operation's types.

use crate::ops::import::LegacyFile;
use crate::ops::inspect::ListQuery;
use crate::ops::purge::PurgeQuery;
use crate::ops::replay::ReplayQuery;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// Longest request line accepted (an import of many legacy files is the biggest).
pub const MAX_REQUEST_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Summary,
    List(ListQuery),
    Get {
        trace_id: String,
    },
    Replay(ReplayQuery),
    Edit {
        trace_id: String,
        payload: Map<String, Value>,
        note: Option<String>,
    },
    Verify {
        repair: bool,
    },
    /// Snapshot into `dest`, an absolute path the server can write.
    Backup {
        dest: PathBuf,
    },
    Import {
        files: Vec<LegacyFile>,
        dry_run: bool,
    },
    Purge(PurgeQuery),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Hello { pid: u32, version: String },
    Progress { done: u64, total: Option<u64> },
    Ok(Value),
    Error(String),
}
