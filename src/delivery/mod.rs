//! Delivery: drains the store to the dashboard, at least once, and never silently.
//!
//! The worker ([`worker`]) is a loop around one step ([`step`]): settle the attempts that
//! came back, claim due records and start sending them, with all of a step's store work in
//! one store round ([`round`]); with PostgreSQL the round runs beside the sends, and
//! [`ahead`] sizes its claims. What a request contains is built in [`request`], and
//! [`client`] carries it over HTTP. [`classify`] turns each reply into a verdict, [`outcome`]
//! into the record's next state, [`backoff`] into its next attempt time. [`gate`] holds
//! sending back: the [`circuit`] while the dashboard is down, and a credentials rejection
//! pauses everything until a probe succeeds or SIGHUP ([`reload_on`]) brings new
//! credentials. [`state`] is what health reads; [`retention`] drops payloads after their
//! retention and tombstones after the idempotency window (the periodic purge).

mod ahead;
pub mod backoff;
pub mod circuit;
pub mod classify;
pub mod client;
mod gate;
mod handle;
pub mod outcome;
pub mod request;
pub mod retention;
pub mod round;
mod rounds;
mod sending;
pub mod state;
pub mod step;
mod worker;

pub use handle::{reload, reload_on, start, WorkerHandle};
pub use request::Credentials;
pub use state::{DeliveryState, DeliveryView, Mode};
