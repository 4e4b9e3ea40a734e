//! How much may be sent now, and how each reply moves that: the credentials pause (while
//! the dashboard rejects the credentials, only a probe every `auth-probe-interval`) and the
//! circuit breaker ([`super::circuit`]), both published to health ([`super::state`]) as
//! they change. Takes the time as an argument, like the step that owns it.

use super::circuit::{Circuit, Gate};
use super::classify::{Reply, Transport, Verdict};
use super::client::Attempt;
use super::round::attempt_status;
use super::state::DeliveryState;
use crate::config::DeliverySettings;
use crate::time::Now;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which probe (if any) a send is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    None,
    /// The half-open circuit's single request.
    Circuit,
    /// The periodic check while paused for credentials.
    Credentials,
}

/// How much may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing until this time (`None`: until the circuit's probe comes back).
    Hold(Option<Instant>),
    Send {
        want: usize,
        probe: Probe,
    },
}

pub struct SendGate {
    circuit: Circuit,
    /// While paused: when the next credentials probe may go.
    next_auth_probe: Instant,
    auth_probe_interval: Duration,
    /// Where the ingest key comes from, so the pause says what to edit.
    key_source: String,
    state: Arc<DeliveryState>,
}

impl SendGate {
    pub fn new(s: &DeliverySettings, state: Arc<DeliveryState>) -> SendGate {
        SendGate {
            circuit: Circuit::new(
                s.circuit_threshold,
                s.circuit_cooldown,
                s.circuit_cooldown_max,
            ),
            next_auth_probe: Instant::now(),
            auth_probe_interval: s.auth_probe_interval,
            key_source: s.key_source.clone(),
            state,
        }
    }

    pub fn state(&self) -> &Arc<DeliveryState> {
        &self.state
    }

    /// How much may be sent now, with `free` send slots. A probe is handed out here.
    pub fn plan(&mut self, now: Now, free: usize) -> Plan {
        let none = |want| Plan::Send {
            want,
            probe: Probe::None,
        };
        if self.state.is_paused() {
            if free == 0 {
                return none(0);
            }
            if now.at < self.next_auth_probe {
                return Plan::Hold(Some(self.next_auth_probe));
            }
            self.next_auth_probe = now.at + self.auth_probe_interval;
            self.state.set_auth_probe(now.wall_of(self.next_auth_probe));
            return Plan::Send {
                want: 1,
                probe: Probe::Credentials,
            };
        }
        match self.circuit.gate(now.at) {
            Gate::Send => none(free),
            Gate::Probe if free > 0 => {
                self.publish_circuit(now);
                Plan::Send {
                    want: 1,
                    probe: Probe::Circuit,
                }
            }
            Gate::Probe => {
                self.circuit.probe_unused();
                none(0)
            }
            Gate::Wait(until) => Plan::Hold(until),
        }
    }

    /// The probe handed out found nothing to send: let the next due record be one.
    pub fn probe_unused(&mut self, probe: Probe, now: Now) {
        match probe {
            Probe::Circuit => self.circuit.probe_unused(),
            Probe::Credentials => self.next_auth_probe = now.at,
            Probe::None => {}
        }
    }

    /// Moves the circuit breaker, the credentials pause and the health view for one reply.
    pub fn on_reply(&mut self, attempt: &Attempt, verdict: Verdict, probe: Probe, now: Now) {
        let is_probe = probe == Probe::Circuit;
        match verdict {
            Verdict::Retry => self.circuit.on_failure(is_probe, now.at),
            _ => self.circuit.on_answer(is_probe),
        }
        self.publish_circuit(now);
        match verdict {
            Verdict::Pause => {
                self.next_auth_probe = now.at + self.auth_probe_interval;
                self.state.set_auth_probe(now.wall_of(self.next_auth_probe));
                if self.state.pause() {
                    tracing::error!(
                        status = attempt_status(attempt),
                        probe_every_s = self.auth_probe_interval.as_secs_f64(),
                        key_source = %self.key_source,
                        "delivery paused: the dashboard rejected the credentials (the ingest key comes from key_source; delivery also resumes by itself when a probe succeeds)"
                    );
                }
            }
            _ if (probe == Probe::Credentials || verdict == Verdict::Delivered)
                && self.state.resume() =>
            {
                tracing::info!("delivery resumed: the dashboard accepted the credentials");
            }
            _ => {}
        }
        let at = crate::time::rfc3339(now.wall_ms);
        self.state.update(|v| match verdict {
            Verdict::Delivered => v.last_success_at = Some(at),
            _ => {
                v.last_failure_at = Some(at);
                v.last_error = Some(short_error(attempt));
            }
        });
        if verdict != Verdict::Delivered {
            self.state.failures.record(&short_error(attempt));
        }
    }

    fn publish_circuit(&self, now: Now) {
        let probe_at = self.circuit.open_until().map(|at| now.wall_of(at));
        self.state.set_circuit(self.circuit.state(), probe_at);
    }
}

/// A failure in a few words for health: the status code, or the transport error kind.
fn short_error(a: &Attempt) -> String {
    match a.reply {
        Reply::Status(code) => format!("HTTP {code}"),
        Reply::Transport(Transport::Connect) => "cannot connect to the dashboard".into(),
        Reply::Transport(Transport::Timeout) => "the dashboard did not answer in time".into(),
        Reply::Transport(Transport::Other) => a.detail.clone(),
    }
}
