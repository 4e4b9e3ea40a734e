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

use crate::log_summary::{LogSummary, Report, SUMMARY_EVERY};
use crate::store::now_ms;
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
    /// While the circuit is open or delivery is paused for credentials: when the next probe
    /// goes out (nothing is sent before it, whatever the records' own next attempt says).
    #[serde(default)]
    pub next_probe_at: Option<String>,
}

/// The log line for failed delivery attempts (each attempt's cause, rate-limited).
fn log_failures(r: &Report) {
    tracing::warn!(
        failed = r.count,
        causes = %r.by_cause,
        last_cause = %r.last_cause,
        "delivery attempts failed"
    );
}

#[derive(Debug, Default, Clone, Copy)]
struct Probes {
    circuit_ms: Option<i64>,
    auth_ms: Option<i64>,
}

/// A monotonic instant as wall-clock epoch ms.
fn wall_ms(at: std::time::Instant) -> i64 {
    let now = std::time::Instant::now();
    let delta = if at >= now {
        at.duration_since(now).as_millis() as i64
    } else {
        -(now.duration_since(at).as_millis() as i64)
    };
    now_ms() + delta
}

#[derive(Debug)]
pub struct DeliveryState {
    view: Mutex<DeliveryView>,
    /// When the open circuit and the credentials pause next probe (wall clock, ms).
    probes: Mutex<Probes>,
    /// Every failed attempt's cause, summarized in the log (see [`crate::log_summary`]).
    pub failures: LogSummary,
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
                next_probe_at: None,
            }),
            probes: Mutex::default(),
            failures: LogSummary::new(SUMMARY_EVERY, log_failures),
            credentials: Mutex::new(None),
            kick: Notify::new(),
        }
    }

    pub fn snapshot(&self) -> DeliveryView {
        let mut v = self.view.lock().unwrap().clone();
        v.next_probe_at = self.next_probe_ms(&v).map(crate::ops::rfc3339);
        v
    }

    /// When sending resumes while it is held (paused, or circuit open): the next probe, never
    /// in the past. `None` while delivery sends freely.
    pub fn next_probe_ms(&self, v: &DeliveryView) -> Option<i64> {
        let p = *self.probes.lock().unwrap();
        let at = match (v.mode.as_str(), v.circuit.as_str()) {
            (MODE_PAUSED, _) => p.auth_ms,
            (MODE_RUNNING, "open") => p.circuit_ms,
            _ => None,
        }?;
        Some(at.max(now_ms()))
    }

    pub(crate) fn set_circuit_probe(&self, at: Option<std::time::Instant>) {
        self.probes.lock().unwrap().circuit_ms = at.map(wall_ms);
    }

    pub(crate) fn set_auth_probe(&self, at: std::time::Instant) {
        self.probes.lock().unwrap().auth_ms = Some(wall_ms(at));
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
