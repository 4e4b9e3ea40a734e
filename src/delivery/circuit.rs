//! The circuit breaker: after `threshold` consecutive retryable failures the worker stops
//! sending for a cooldown, then lets one probe through. A failed probe doubles the cooldown
//! (up to a maximum); a probe that the dashboard answers closes the circuit.
//!
//! While the circuit is open nothing is sent, so no record spends an attempt on a dashboard
//! that is known to be down. Replies to requests sent before the circuit opened do not move
//! it: only the probe decides in the half-open state. Pure: the caller passes the time.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The circuit's state as health shows it (`closed`, `open`, `half_open`) and as the
/// `outbox_circuit_state` gauge counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The `outbox_circuit_state` gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_out: bool },
}

/// What the worker may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send as much as concurrency allows.
    Send,
    /// Send exactly one record: the half-open probe.
    Probe,
    /// Send nothing until this time (`None`: until the probe's reply arrives).
    Wait(Option<Instant>),
}

#[derive(Debug, Clone)]
pub struct Circuit {
    state: State,
    failures: u32,
    threshold: u32,
    base: Duration,
    max: Duration,
    cooldown: Duration,
}

impl Circuit {
    pub fn new(threshold: u32, cooldown: Duration, cooldown_max: Duration) -> Circuit {
        Circuit {
            state: State::Closed,
            failures: 0,
            threshold: threshold.max(1),
            base: cooldown,
            max: cooldown_max.max(cooldown),
            cooldown,
        }
    }

    /// Asks whether to send. Moves an open circuit whose cooldown is over to half-open, and
    /// hands out the single probe.
    pub fn gate(&mut self, now: Instant) -> Gate {
        match self.state {
            State::Closed => Gate::Send,
            State::Open { until } if now < until => Gate::Wait(Some(until)),
            State::Open { .. } | State::HalfOpen { probe_out: false } => {
                self.state = State::HalfOpen { probe_out: true };
                Gate::Probe
            }
            State::HalfOpen { probe_out: true } => Gate::Wait(None),
        }
    }

    /// The dashboard answered (anything but a retryable failure). `probe` says whether this
    /// was the half-open probe.
    pub fn on_answer(&mut self, probe: bool) {
        match self.state {
            State::Closed => self.failures = 0,
            State::HalfOpen { .. } if probe => self.close(),
            _ => {}
        }
    }

    /// A retryable failure (transport error, 5xx, 429, ...).
    pub fn on_failure(&mut self, probe: bool, now: Instant) {
        match self.state {
            State::Closed => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    self.state = State::Open {
                        until: now + self.cooldown,
                    };
                }
            }
            State::HalfOpen { .. } if probe => {
                self.cooldown = (self.cooldown * 2).min(self.max);
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            _ => {}
        }
    }

    /// The probe could not be sent (nothing was due): let a later one try.
    pub fn probe_unused(&mut self) {
        if self.state == (State::HalfOpen { probe_out: true }) {
            self.state = State::HalfOpen { probe_out: false };
        }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
        self.cooldown = self.base;
    }

    /// When an open circuit lets its next probe out; `None` unless open.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// The state as health and metrics show it.
    pub fn state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn opens_after_threshold_consecutive_failures_and_an_answer_resets_the_count() {
        let t0 = Instant::now();
        let mut c = Circuit::new(3, S(30), S(600));
        c.on_failure(false, t0);
        c.on_failure(false, t0);
        c.on_answer(false);
        c.on_failure(false, t0);
        c.on_failure(false, t0);
        assert_eq!((c.state(), c.gate(t0)), (CircuitState::Closed, Gate::Send));
        c.on_failure(false, t0);
        assert_eq!(c.state(), CircuitState::Open);
        assert_eq!(c.gate(t0 + S(29)), Gate::Wait(Some(t0 + S(30))));
        assert_eq!(
            c.open_until(),
            Some(t0 + S(30)),
            "the next probe, for health"
        );
        assert_eq!(c.state().gauge(), 2.0);
        c.gate(t0 + S(30));
        assert_eq!(c.open_until(), None, "half-open: the probe is out");
    }

    /// The gauge's values are documented in the metric's help (and, from it, the README).
    #[test]
    fn the_gauge_values_are_the_ones_the_metric_help_names() {
        let help = crate::telemetry::metrics::METRICS
            .iter()
            .find(|m| m.0 == "outbox_circuit_state")
            .unwrap()
            .2;
        let t0 = Instant::now();
        let mut c = Circuit::new(1, S(30), S(600));
        let mut seen = vec![format!("{} {}", c.state().gauge(), c.state())];
        c.on_failure(false, t0);
        seen.push(format!("{} {}", c.state().gauge(), c.state()));
        c.gate(t0 + S(30));
        seen.push(format!("{} {}", c.state().gauge(), c.state()));
        assert_eq!(seen, ["0 closed", "2 open", "1 half_open"]);
        for state in seen {
            assert!(help.contains(&state), "help {help:?} lacks {state:?}");
        }
    }

    #[test]
    fn half_open_sends_one_probe_and_its_success_closes() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, S(30), S(600));
        c.on_failure(false, t0);
        assert_eq!(c.gate(t0 + S(30)), Gate::Probe);
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert_eq!(c.gate(t0 + S(30)), Gate::Wait(None), "only one probe");
        // A straggler sent before the circuit opened does not decide.
        c.on_answer(false);
        assert_eq!(c.state(), CircuitState::HalfOpen);
        c.on_answer(true);
        assert_eq!(
            (c.state(), c.gate(t0 + S(31))),
            (CircuitState::Closed, Gate::Send)
        );
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_maximum_and_success_resets_it() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, S(30), S(100));
        c.on_failure(false, t0);
        let mut now = t0 + S(30);
        let mut waits = vec![];
        for _ in 0..4 {
            assert_eq!(c.gate(now), Gate::Probe);
            c.on_failure(true, now);
            let Gate::Wait(Some(until)) = c.gate(now) else {
                panic!("open after a failed probe")
            };
            waits.push((until - now).as_secs());
            now = until;
        }
        assert_eq!(waits, vec![60, 100, 100, 100]);
        assert_eq!(c.gate(now), Gate::Probe);
        c.on_answer(true);
        c.on_failure(false, now);
        assert_eq!(c.gate(now), Gate::Wait(Some(now + S(30))));
    }

    #[test]
    fn failures_while_open_do_not_extend_it_and_an_unused_probe_is_handed_out_again() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, S(10), S(100));
        c.on_failure(false, t0);
        c.on_failure(false, t0 + S(5));
        assert_eq!(c.gate(t0 + S(10)), Gate::Probe);
        c.probe_unused();
        assert_eq!(c.gate(t0 + S(11)), Gate::Probe);
    }
}
