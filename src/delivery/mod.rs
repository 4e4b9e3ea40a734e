//! Delivery: drains the store to the dashboard. This module holds the state that the health
//! endpoints and ops commands read; the worker fills it in.

use serde::Serialize;
use std::sync::Mutex;

/// What delivery is doing, as health and `inspect` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveryView {
    /// `off` (no dashboard configured), `running`, `paused_credentials`, `stopped`.
    pub mode: String,
    /// `closed`, `open`, `half_open`.
    pub circuit: String,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct DeliveryState {
    view: Mutex<DeliveryView>,
}

impl DeliveryState {
    pub fn new(enabled: bool) -> DeliveryState {
        DeliveryState {
            view: Mutex::new(DeliveryView {
                mode: if enabled { "running" } else { "off" }.into(),
                circuit: "closed".into(),
                last_success_at: None,
                last_failure_at: None,
                last_error: None,
            }),
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
            "paused_credentials" => {
                w.push("delivery paused: dashboard rejected credentials".to_owned())
            }
            _ => {}
        }
        if v.circuit == "open" {
            w.push("delivery circuit open: the dashboard is failing".to_owned());
        }
        w
    }
}
