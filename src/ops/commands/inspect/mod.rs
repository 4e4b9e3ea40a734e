//! `outbox inspect`: the summary, a filtered listing, or one whole record.
//!
//! - `summary`: counts, ages and the delivery state (operation `summary`);
//! - `list`: the records, newest first, filtered (operation `list`), shown by `table`;
//! - `record`: one record in full (operation `get`), and the trace ID look-up by prefix.
//!
//! JSON shapes are documented in the README ("Operations"); fields are only ever added.

pub mod list;
pub mod record;
pub mod summary;
pub mod table;

use crate::ops::output::print_json;
use crate::ops::socket::route::Place;
use crate::ops::target::Target;
use crate::ops::text::{age, parse_when, size};
use crate::time::now_ms;
use clap::Args;
use list::ListQuery;
use record::GetRecord;
use std::process::ExitCode;
use summary::{Summary, SummaryRequest};

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub target: Target,
    /// Show this record in full (a unique prefix of its trace ID is enough)
    pub trace_id: Option<String>,
    /// List records instead of the summary
    #[arg(long, conflicts_with = "trace_id")]
    pub list: bool,
    /// With --list: pending, in_flight, delivered, dead or quarantined
    #[arg(long, requires = "list")]
    pub status: Option<String>,
    /// With --list: only this form type
    #[arg(long, requires = "list")]
    pub form_type: Option<String>,
    /// With --list: received (by this store: imported, replayed) since a time (RFC 3339, YYYY-MM-DD) or an age (2h, 7d)
    #[arg(long, requires = "list")]
    pub since: Option<String>,
    /// With --list: at most this many rows, newest first
    #[arg(long, default_value_t = 50, requires = "list")]
    pub limit: usize,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let place = Place::of(&a.target)?;
    if let Some(trace_id) = a.trace_id {
        let r = place.call(GetRecord { trace_id }, "reading")?;
        if a.json {
            print_json(&r);
        } else {
            let mut shown = serde_json::to_value(&r)?;
            shown.as_object_mut().expect("object").remove("payload");
            println!("{}", serde_json::to_string_pretty(&shown)?);
            match &r.dropped {
                Some(d) => println!("{}", d.text()),
                None => println!("payload:\n{}", serde_json::to_string_pretty(&r.payload)?),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.list {
        let q = ListQuery {
            status: a.status,
            form_type: a.form_type,
            since_ms: a.since.as_deref().map(parse_when).transpose()?,
            limit: a.limit,
        };
        let listing = place.call(q, "listing")?;
        if a.json {
            print_json(&listing.rows);
            if listing.matched > listing.rows.len() {
                eprintln!(
                    "outbox: {} of {} shown; --limit {} shows all",
                    listing.rows.len(),
                    listing.matched,
                    listing.matched
                );
            }
        } else {
            print!("{}", table::table(&listing, table::width()));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let s = place.call(SummaryRequest {}, "summary")?;
    if a.json {
        print_json(&s);
    } else {
        print!("{}", summary_text(&s));
    }
    Ok(ExitCode::SUCCESS)
}

/// The summary for people.
fn summary_text(s: &Summary) -> String {
    let c = &s.counts;
    let label = if s.shared { "store" } else { "data directory" };
    let mut out = format!("{label:<16}{}\n", s.data_dir);
    let oldest = match (&s.oldest_pending_at, s.oldest_pending_age_secs) {
        (Some(t), Some(a)) => format!("   oldest {} ago ({t})", age(a)),
        _ => String::new(),
    };
    out.push_str(&format!("pending         {:>10}{oldest}\n", c.pending));
    out.push_str(&format!("in flight       {:>10}\n", c.in_flight));
    out.push_str(&format!("delivered       {:>10}\n", c.delivered));
    out.push_str(&format!("dead            {:>10}\n", c.dead));
    out.push_str(&format!("quarantined     {:>10}\n", c.quarantined));
    out.push_str(&format!(
        "accepted        {:>10}   purged {}; accounting {}\n",
        c.accepted,
        c.purged,
        if s.balanced {
            "balanced"
        } else {
            "NOT balanced (run outbox verify)"
        }
    ));
    out.push_str(&format!(
        "next attempt    {}\n",
        s.next_attempt_at
            .as_deref()
            .map(|t| format!("{t}{}", relative(t)))
            .unwrap_or_else(|| "-".into())
    ));
    match &s.delivery {
        None if s.shared => out.push_str(
            "delivery        by the instances that share the store (each one's /health/detailed)\n",
        ),
        None => out.push_str("delivery        not running (offline)\n"),
        Some(d) => {
            let f = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
            out.push_str(&format!(
                "delivery        {}, circuit {}\n",
                f("mode"),
                f("circuit")
            ));
            if let Some(t) = d["next_probe_at"].as_str() {
                let why = match f("mode").as_str() {
                    "paused_credentials" => "credentials probe",
                    _ => "circuit probe",
                };
                out.push_str(&format!(
                    "next probe      {t}{} ({why}; nothing is sent before it)\n",
                    relative(t)
                ));
            }
            out.push_str(&format!("last success    {}\n", f("last_success_at")));
            let err = d["last_error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            out.push_str(&format!("last failure    {}{err}\n", f("last_failure_at")));
        }
    }
    if s.shared {
        out.push_str("disk use        PostgreSQL's (pg_total_relation_size('outbox_records'))\n");
    } else {
        out.push_str(&format!("disk use        {}\n", size(s.disk_bytes)));
    }
    out
}

/// ` (in 3m 20s)` for a future RFC 3339 time, else nothing.
fn relative(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) if t.timestamp_millis() > now_ms() + 999 => {
            format!(" (in {})", age((t.timestamp_millis() - now_ms()) / 1000))
        }
        _ => String::new(),
    }
}
