//! The admin channel's wire format: newline-delimited JSON over `<data-dir>/admin.sock`.
//!
//! On connect the server writes a [`Reply::Hello`] (so the client can say which process it
//! talks to); the client writes one [`Request`] line; the server answers with any number of
//! [`Reply::Progress`] lines and then exactly one [`Reply::Ok`] or [`Reply::Error`]. A request
//! is `{"op": "<name>", ...}`, the operation's own fields beside `op`; results travel as JSON
//! values, so the transport does not depend on any operation's types.

use crate::ops::operation::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// Longest request line accepted (an import of many legacy files is the biggest).
pub const MAX_REQUEST_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The operation's name ([`Operation::NAME`]).
    pub op: String,
    /// The operation's fields.
    #[serde(flatten)]
    pub args: Map<String, Value>,
}

impl Request {
    pub fn of<Q: Operation>(q: &Q) -> Request {
        match serde_json::to_value(q).expect("requests are plain data") {
            Value::Object(args) => Request {
                op: Q::NAME.to_owned(),
                args,
            },
            other => panic!("operation {} is not a JSON object: {other}", Q::NAME),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Hello { pid: u32, version: String },
    Progress { done: u64, total: Option<u64> },
    Ok(Value),
    Error(String),
}
