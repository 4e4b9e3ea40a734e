//! Metrics: what `/metrics` exports (through the in-process app) and what the alert rules and
//! the Grafana dashboard read from it (through promtool and the real binary).
//!
//! A binary of its own because the metrics recorder is process-wide: an in-process app of any
//! other test would move the counters and gauges that `endpoint` compares. So no test here but
//! those in `endpoint` (which take turns, `harness::turn`) may start an in-process app;
//! `prometheus` scrapes child processes, each with its own recorder.

#[path = "../harness/mod.rs"]
mod harness;

mod endpoint;
mod prometheus;
