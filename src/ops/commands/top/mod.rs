//! `outbox top`: a live view of a running server through the admin channel (or of the
//! PostgreSQL store, read by the command itself), refreshed every second: intake and delivery rates, depth by status, oldest pending age, circuit and pause
//! state, and the last delivery errors. `q` or Ctrl-C quits and gives the terminal back as it
//! was; when stdout is not a terminal it prints one plain snapshot (for scripts and mails).

mod screen;

use crate::ops::commands::inspect::summary::{Summary, SummaryRequest};
use crate::ops::operation::Operation;
use crate::ops::socket::client::connect;
use crate::ops::socket::protocol::SOCKET_NAME;
use crate::ops::socket::route::Place;
use crate::ops::target::Target;
use crate::ops::text::age;
use clap::Args;
use screen::{wait_for_quit, Screen};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds between refreshes
    #[arg(long, default_value_t = 1)]
    pub interval: u64,
}

/// Delivery errors kept on screen.
const ERRORS_SHOWN: usize = 5;
const WIDTH: usize = 80;

struct Sample {
    at: Instant,
    /// The server asked; `None` for the PostgreSQL store, which the command reads itself.
    pid: Option<u32>,
    summary: Summary,
}

fn sample(place: &Place) -> anyhow::Result<Sample> {
    let dir = match place {
        Place::Directory(dir) => dir,
        Place::Shared(store) => {
            let summary = SummaryRequest {}.run_shared(store, &|_, _| {})?;
            return Ok(Sample {
                at: Instant::now(),
                pid: None,
                summary,
            });
        }
    };
    let Some(conn) = connect(dir)? else {
        anyhow::bail!(
            "no server answers on {}; outbox top needs a running server (use outbox inspect for a stopped directory)",
            dir.join(SOCKET_NAME).display()
        );
    };
    let pid = conn.pid;
    let summary = conn.call(&SummaryRequest {}, &|_, _| {})?;
    Ok(Sample {
        at: Instant::now(),
        pid: Some(pid),
        summary,
    })
}

fn rate(prev: Option<&Sample>, cur: &Sample, f: fn(&Summary) -> u64) -> String {
    let Some(p) = prev else {
        return "-".into();
    };
    let secs = cur.at.duration_since(p.at).as_secs_f64();
    if secs <= 0.0 {
        return "-".into();
    }
    let delta = f(&cur.summary).saturating_sub(f(&p.summary));
    format!("{:.1}/s", delta as f64 / secs)
}

/// `   next probe in 4m 10s` while sending is held (circuit open, paused), else nothing.
fn next_probe(at: Option<&str>) -> String {
    let Some(t) = at.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return String::new();
    };
    let secs = (t.timestamp_millis() - crate::time::now_ms()).max(0) / 1000;
    format!("   next probe in {}", age(secs))
}

/// One screen. Pure, so it is tested; every line is cut to 80 columns.
fn frame(prev: Option<&Sample>, cur: &Sample, errors: &[String]) -> String {
    let s = &cur.summary;
    let c = &s.counts;
    let d = s.delivery.clone().unwrap_or_default();
    let field = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
    // The store URL is long: what the screen shows comes first.
    let title = match cur.pid {
        Some(pid) => format!("outbox top - {} - server pid {pid}", s.data_dir),
        None => format!("outbox top - PostgreSQL store {}", s.data_dir),
    };
    let delivery = match s.delivery {
        None if s.shared => "by the instances that share the store".into(),
        _ => format!(
            "{}   circuit {}{}",
            field("mode"),
            field("circuit"),
            next_probe(d["next_probe_at"].as_str())
        ),
    };
    let disk = match s.shared {
        true => "PostgreSQL's".into(),
        false => crate::ops::text::size(s.disk_bytes),
    };
    let mut lines = vec![
        title,
        String::new(),
        format!(
            "rates      intake {:>9}   delivered {:>9}   dead letters {:>9}",
            rate(prev, cur, |s| s.counts.accepted),
            rate(prev, cur, |s| s.counts.delivered + s.counts.purged),
            rate(prev, cur, |s| s.counts.dead),
        ),
        format!(
            "depth      pending {}   in flight {}   dead {}   quarantined {}",
            c.pending, c.in_flight, c.dead, c.quarantined
        ),
        format!(
            "totals     accepted {}   delivered {}   purged {}   {}",
            c.accepted,
            c.delivered,
            c.purged,
            if s.balanced {
                "balanced"
            } else {
                "NOT BALANCED"
            }
        ),
        format!(
            "oldest     {}",
            s.oldest_pending_age_secs
                .map_or("nothing pending".into(), |a| format!(
                    "pending for {}",
                    age(a)
                ))
        ),
        format!("delivery   {delivery}"),
        format!("last ok    {}", field("last_success_at")),
        format!("disk       {disk}"),
        String::new(),
        "last errors".into(),
    ];
    if errors.is_empty() {
        lines.push("  none".into());
    }
    lines.extend(errors.iter().map(|e| format!("  {e}")));
    let mut out = String::new();
    for l in lines {
        out.extend(l.chars().take(WIDTH));
        out.push('\n');
    }
    out
}

/// Remembers each new delivery failure (time and error) the server reports.
fn note_error(errors: &mut Vec<String>, s: &Summary) {
    let Some(d) = &s.delivery else { return };
    let (Some(at), Some(e)) = (d["last_failure_at"].as_str(), d["last_error"].as_str()) else {
        return;
    };
    let line = format!("{at}  {e}");
    if errors.first() != Some(&line) {
        errors.insert(0, line);
        errors.truncate(ERRORS_SHOWN);
    }
}

pub fn run(a: TopArgs) -> anyhow::Result<ExitCode> {
    let place = Place::of(&a.target)?;
    let interval = Duration::from_secs(a.interval.max(1));
    let first = sample(&place)?;
    if !std::io::stdout().is_terminal() {
        let mut errors = Vec::new();
        note_error(&mut errors, &first.summary);
        print!("{}", frame(None, &first, &errors));
        return Ok(ExitCode::SUCCESS);
    }
    let quit = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, quit.clone())?;
    }
    let _screen = Screen::enter()?;
    let mut errors = Vec::new();
    let mut prev: Option<Sample> = None;
    let mut cur = Ok(first);
    loop {
        let screen = match &cur {
            Ok(s) => {
                note_error(&mut errors, &s.summary);
                frame(prev.as_ref(), s, &errors)
            }
            Err(e) => format!("outbox top - {}\n\n{e:#}\n(retrying)\n", where_(&place)),
        };
        // The live view's first line says how to leave; a plain snapshot has no keys to press.
        let screen = screen.replacen('\n', " - q quits\n", 1);
        print!("\x1b[H\x1b[2J{screen}");
        std::io::stdout().flush()?;
        if wait_for_quit(interval, &quit) {
            return Ok(ExitCode::SUCCESS);
        }
        if let Ok(s) = cur {
            prev = Some(s);
        }
        cur = sample(&place);
    }
}

/// The data directory or the store URL, for the screen's first line.
fn where_(place: &Place) -> String {
    match place {
        Place::Directory(dir) => dir.display().to_string(),
        Place::Shared(store) => store.location.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Counts;

    fn at(t: Instant, accepted: u64, delivered: u64) -> Sample {
        Sample {
            at: t,
            pid: Some(42),
            summary: Summary {
                data_dir: "/var/lib/outbox/a/very/long/path/that/goes/on/and/on/forever/data"
                    .into(),
                counts: Counts {
                    accepted,
                    delivered,
                    pending: accepted - delivered,
                    ..Counts::default()
                },
                balanced: true,
                oldest_pending_at: None,
                oldest_pending_age_secs: Some(200),
                next_attempt_at: None,
                delivery: Some(
                    serde_json::json!({"mode": "paused_credentials", "circuit": "open",
                    "last_failure_at": "2026-01-01T00:00:00.000Z", "last_error": "x".repeat(200),
                    "next_probe_at": crate::time::rfc3339(crate::time::now_ms() + 130_500)}),
                ),
                disk_bytes: 4096,
                shared: false,
            },
        }
    }

    #[test]
    fn a_frame_shows_rates_depth_state_and_errors_in_80_columns() {
        let t0 = Instant::now();
        let (a, b) = (at(t0, 100, 50), at(t0 + Duration::from_secs(2), 120, 60));
        let mut errors = Vec::new();
        note_error(&mut errors, &b.summary);
        note_error(&mut errors, &b.summary);
        assert_eq!(errors.len(), 1, "the same failure is noted once");
        let f = frame(Some(&a), &b, &errors);
        assert!(f.contains("intake    10.0/s"), "{f}");
        assert!(f.contains("delivered     5.0/s"), "{f}");
        assert!(f.contains("pending 60"), "{f}");
        assert!(
            f.contains("paused_credentials   circuit open   next probe in 2m "),
            "{f}"
        );
        assert!(f.contains("pending for 3m 20s"), "{f}");
        assert!(f.lines().all(|l| l.chars().count() <= 80), "{f}");
        assert!(frame(None, &b, &[]).contains("intake         -"));
    }
}
