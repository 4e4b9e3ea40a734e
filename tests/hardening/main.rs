//! Hardening: hostile input as raw bytes, CORS, rate limits, security headers, slow clients
//! and the connection bound. One test binary; the shared harness is `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod cors;
mod hostile;
mod limits;
