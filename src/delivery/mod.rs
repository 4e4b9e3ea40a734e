//! Delivery: drains the store to the dashboard, at least once, and never silently.
//!
//! [`worker`] claims due records under a persisted lease and sends them over one pooled
//! client ([`client`], body and signature in [`request`]); [`classify`] turns each reply into
//! a verdict, [`outcome`] into the record's next state, [`backoff`] into its next attempt
//! time. [`circuit`] stops sending while the dashboard is down; a credentials rejection
//! pauses everything until a probe succeeds or SIGHUP ([`reload`]) brings new credentials.
//! [`purge`] removes tombstones after the idempotency window. This module holds the state
//! that the health endpoints read and the worker fills in.

pub mod backoff;
pub mod circuit;
pub mod classify;
pub mod client;
mod deliver;
mod handle;
pub mod outcome;
pub mod purge;
pub mod reload;
pub mod request;
pub mod worker;

pub use handle::{start, WorkerHandle};
pub use request::Credentials;

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub const MODE_RUNNING: &str = "running";
pub const MODE_PAUSED: &str = "paused_credentials";

/// What delivery is doing, as health and `inspect` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryView {
    /// `off` (no dashboard configured), `running`, `paused_credentials`, `stopped`.
    pub mode: String,
    /// `closed`, `open`, `half_open`.
    pub circuit: String,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    /// The last failure in a few words (a status code or a transport error; never a body).
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct DeliveryState {
    view: Mutex<DeliveryView>,
    credentials: Mutex<Option<Arc<Credentials>>>,
    /// Wakes the worker when something outside it changed (new credentials).
    kick: Notify,
}

impl DeliveryState {
    pub fn new(enabled: bool) -> DeliveryState {
        DeliveryState {
            view: Mutex::new(DeliveryView {
                mode: if enabled { MODE_RUNNING } else { "off" }.into(),
                circuit: "closed".into(),
                last_success_at: None,
                last_failure_at: None,
                last_error: None,
            }),
            credentials: Mutex::new(None),
            kick: Notify::new(),
        }
    }

    pub fn snapshot(&self) -> DeliveryView {
        self.view.lock().unwrap().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut DeliveryView)) {
        f(&mut self.view.lock().unwrap());
    }

    /// Delivery problems worth a line in readiness (they do not stop intake).
    pub fn warnings(&self) -> Vec<String> {
        let v = self.view.lock().unwrap();
        let mut w = Vec::new();
        match v.mode.as_str() {
            "off" => w.push(
                "delivery off: no dashboard-url configured; submissions are stored only".to_owned(),
            ),
            MODE_PAUSED => w.push("delivery paused: dashboard rejected credentials".to_owned()),
            _ => {}
        }
        if v.circuit == "open" {
            w.push("delivery circuit open: the dashboard is failing".to_owned());
        }
        w
    }

    /// The credentials the next attempt uses.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credentials.lock().unwrap().clone()
    }

    pub(crate) fn set_credentials(&self, c: Credentials) {
        *self.credentials.lock().unwrap() = Some(Arc::new(c));
    }

    /// New credentials (SIGHUP): used from the next attempt on; delivery paused for
    /// credentials resumes at once. Returns whether it was paused.
    pub fn reload_credentials(&self, c: Credentials) -> bool {
        self.set_credentials(c);
        let resumed = self.resume();
        self.kick.notify_one();
        resumed
    }

    pub fn is_paused(&self) -> bool {
        self.view.lock().unwrap().mode == MODE_PAUSED
    }

    /// Pauses for credentials; true when this call paused it (so it is logged once).
    pub(crate) fn pause(&self) -> bool {
        let mut v = self.view.lock().unwrap();
        if v.mode != MODE_RUNNING {
            return false;
        }
        v.mode = MODE_PAUSED.into();
        metrics::gauge!("outbox_delivery_paused").set(1.0);
        true
    }

    /// Ends a pause for credentials; true when it was paused.
    pub(crate) fn resume(&self) -> bool {
        let mut v = self.view.lock().unwrap();
        if v.mode != MODE_PAUSED {
            return false;
        }
        v.mode = MODE_RUNNING.into();
        metrics::gauge!("outbox_delivery_paused").set(0.0);
        true
    }

    pub(crate) fn kicked(&self) -> tokio::sync::futures::Notified<'_> {
        self.kick.notified()
    }
}
