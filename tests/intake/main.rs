//! Intake, the public API: what `POST /api/collect` answers and stores, the admission limits,
//! and the OpenAPI document against the live service. One test binary; the shared harness
//! is `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod admission;
mod client_script;
mod collect;
mod openapi;
