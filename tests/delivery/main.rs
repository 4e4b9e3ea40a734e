//! Delivery to a stub dashboard: the request contract and the outcomes of single deliveries,
//! failures of the dashboard as a whole, and delivery across kills and reloads of the real
//! binary. One test binary; the shared harness is `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod failures;
mod outcomes;
mod process;
