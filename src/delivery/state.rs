//! What delivery is doing, shared between the worker (which fills it in) and the readers:
//! health, `inspect`, the metrics, and SIGHUP (which brings new credentials). The mode and
//! the circuit state are enums, serialized as the strings health has always shown.

use super::circuit::CircuitState;
use super::request::Credentials;
use crate::log_summary::{LogSummary, Report, SUMMARY_EVERY};
use crate::time::now_ms;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Whether delivery runs, as health shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No dashboard configured: submissions are stored only.
    Off,
    Running,
    /// The dashboard rejected the credentials: nothing is sent but a probe now and then.
    PausedCredentials,
    /// Shut down.
    Stopped,
}

/// What delivery is doing, as health and `inspect` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryView {
    pub mode: Mode,
    pub circuit: CircuitState,
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

/// When the open circuit and the credentials pause next probe (wall clock, ms).
#[derive(Debug, Default, Clone, Copy)]
struct Probes {
    circuit_ms: Option<i64>,
    auth_ms: Option<i64>,
}

#[derive(Debug)]
pub struct DeliveryState {
    view: Mutex<DeliveryView>,
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
                mode: if enabled { Mode::Running } else { Mode::Off },
                circuit: CircuitState::Closed,
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
        v.next_probe_at = self.next_probe_ms(&v).map(crate::time::rfc3339);
        v
    }

    /// When sending resumes while it is held (paused, or circuit open): the next probe, never
    /// in the past. `None` while delivery sends freely.
    pub fn next_probe_ms(&self, v: &DeliveryView) -> Option<i64> {
        let p = *self.probes.lock().unwrap();
        let at = match (v.mode, v.circuit) {
            (Mode::PausedCredentials, _) => p.auth_ms,
            (Mode::Running, CircuitState::Open) => p.circuit_ms,
            _ => None,
        }?;
        Some(at.max(now_ms()))
    }

    /// Publishes the circuit's state (health, the gauge, a log line when it changed) and,
    /// while it is open, when it lets its next probe out (wall clock, ms).
    pub(crate) fn set_circuit(&self, state: CircuitState, probe_at_ms: Option<i64>) {
        metrics::gauge!("outbox_circuit_state").set(state.gauge());
        self.probes.lock().unwrap().circuit_ms = probe_at_ms;
        self.update(|v| {
            if v.circuit != state {
                tracing::info!(from = %v.circuit, to = %state, "delivery circuit changed");
                v.circuit = state;
            }
        });
    }

    /// When the next credentials probe goes while paused (wall clock, ms).
    pub(crate) fn set_auth_probe(&self, at_ms: i64) {
        self.probes.lock().unwrap().auth_ms = Some(at_ms);
    }

    pub fn update(&self, f: impl FnOnce(&mut DeliveryView)) {
        f(&mut self.view.lock().unwrap());
    }

    /// Delivery problems worth a line in readiness (they do not stop intake).
    pub fn warnings(&self) -> Vec<String> {
        let v = self.view.lock().unwrap();
        let mut w = Vec::new();
        match v.mode {
            Mode::Off => w.push(
                "delivery off: no dashboard-url configured; submissions are stored only".to_owned(),
            ),
            Mode::PausedCredentials => {
                w.push("delivery paused: dashboard rejected credentials".to_owned())
            }
            Mode::Running | Mode::Stopped => {}
        }
        if v.circuit == CircuitState::Open {
            w.push("delivery circuit open: the dashboard is failing".to_owned());
        }
        w
    }

    pub fn mode(&self) -> Mode {
        self.view.lock().unwrap().mode
    }

    /// The credentials the next attempt uses.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credentials.lock().unwrap().clone()
    }

    /// Sets the credentials later attempts use (the worker reads them at each send).
    pub fn set_credentials(&self, c: Credentials) {
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
        self.mode() == Mode::PausedCredentials
    }

    /// Pauses for credentials; true when this call paused it (so it is logged once).
    pub(crate) fn pause(&self) -> bool {
        let mut v = self.view.lock().unwrap();
        if v.mode != Mode::Running {
            return false;
        }
        v.mode = Mode::PausedCredentials;
        metrics::gauge!("outbox_delivery_paused").set(1.0);
        true
    }

    /// Ends a pause for credentials; true when it was paused.
    pub(crate) fn resume(&self) -> bool {
        let mut v = self.view.lock().unwrap();
        if v.mode != Mode::PausedCredentials {
            return false;
        }
        v.mode = Mode::Running;
        metrics::gauge!("outbox_delivery_paused").set(0.0);
        true
    }

    pub(crate) fn kicked(&self) -> tokio::sync::futures::Notified<'_> {
        self.kick.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Health JSON, `inspect` and `top` show these strings; the enums must not change them.
    #[test]
    fn mode_and_circuit_serialize_as_the_strings_health_shows() {
        let modes = [
            (Mode::Off, "off"),
            (Mode::Running, "running"),
            (Mode::PausedCredentials, "paused_credentials"),
            (Mode::Stopped, "stopped"),
        ];
        for (mode, want) in modes {
            assert_eq!(serde_json::to_value(mode).unwrap(), want);
        }
        for state in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        let view = DeliveryState::new(false).snapshot();
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            (json["mode"].as_str(), json["circuit"].as_str()),
            (Some("off"), Some("closed"))
        );
    }
}
