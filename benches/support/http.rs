//! HTTP intake measured with wrk, shared by the intake benches: an outbox server built in
//! this process from `outbox serve` arguments, the wrk script posting the ~300-byte form,
//! and one wrk run's figures.

use clap::Parser;
use outbox::app::Application;
use outbox::cli::{Cli, Command};
use outbox::config::Settings;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as Proc;

pub const BODY: &str = r#"{"name":"Maria Lopez","email":"maria.lopez@example.com","company":"Northwind Health","phone":"+1 555 0100","message":"We would like a demo for our support team of about forty agents, ideally next week. Please send a few time slots.","consent":true,"page":"/pricing"}"#;

/// wrk's connections: the issue's load.
pub const CONNECTIONS: usize = 64;

pub struct Figures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Exits with a clear message when wrk is missing.
pub fn require_wrk() {
    if Proc::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: apt-get install wrk");
        std::process::exit(1);
    }
}

/// Each run's length: `OUTBOX_BENCH_SECS`, default 10.
pub fn run_secs() -> u64 {
    std::env::var("OUTBOX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// Builds an outbox server on 127.0.0.1, port chosen by the system, rate limit off, from
/// `outbox serve` arguments (`--data-dir ...` or `--store-url ...`, delivery settings...).
pub async fn build(extra: &[&str]) -> Application {
    let args = [
        "outbox",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--rate-limit",
        "off",
        "--log-level",
        "warn",
    ];
    let args = args.iter().chain(extra.iter());
    let Command::Serve { settings } = Cli::parse_from(args).command else {
        unreachable!()
    };
    let settings = Settings::from_layers(&settings.layers().unwrap()).unwrap();
    outbox::telemetry::init(settings.log_format, &settings.log_level);
    Application::build(settings).await.unwrap()
}

/// Writes the wrk script posting [`BODY`] into `dir`.
pub fn script(dir: &Path) -> PathBuf {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{BODY}]]\n"
        ),
    )
    .unwrap();
    script
}

/// One wrk run of `secs` against `addr`'s `/api/collect`.
pub fn run_wrk(addr: SocketAddr, script: &Path, secs: u64) -> Figures {
    let out = Proc::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://{addr}/api/collect"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        eprintln!("warning: non-2xx responses:\n{text}");
    }
    let find = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in wrk output:\n{text}"));
        parse_value(
            line.trim_start()[prefix.len()..]
                .split_whitespace()
                .next()
                .unwrap(),
        )
    };
    Figures {
        rps: find("Requests/sec:"),
        p50_ms: find("50%"),
        p99_ms: find("99%"),
    }
}

/// wrk prints `1.23ms`, `850.00us`, `1.02s`, or a bare number.
fn parse_value(s: &str) -> f64 {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * mult
}
