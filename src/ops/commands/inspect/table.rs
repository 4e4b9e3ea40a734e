//! The `inspect --list` table, as wide as the terminal: each column as wide as its longest
//! value, the last error taking what is left. Trace IDs come first, since they are what an
//! operator greps for and passes on: one is cut (marked `~`) only when the line could not
//! hold it even with the error column at its narrowest; a cut ID still finds its record,
//! since every command that takes a trace ID accepts a unique prefix. Footnotes wrap to the
//! width. `--json` bypasses all of it.

use super::list::{Listing, Row};
use crate::ops::text::age;
use crate::time::now_ms;
use std::io::IsTerminal;

/// Width when stdout is not a terminal and `COLUMNS` is not set (a pipe, a file, a test).
pub const DEFAULT_WIDTH: usize = 100;
/// The error column gives way to the trace ID down to this (the header `ERROR`); the CODE
/// column still shows the dashboard's status, and `inspect ID` the whole error.
const MIN_ERROR: usize = 5;
/// A cut trace ID keeps this much: enough for a unique prefix among UUIDv7s of one day.
const MIN_ID: usize = 20;

/// The terminal's width, else `COLUMNS`, else [`DEFAULT_WIDTH`].
pub fn width() -> usize {
    if std::io::stdout().is_terminal() {
        if let Some((_, cols)) = console::Term::stdout().size_checked() {
            return usize::from(cols).max(40);
        }
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c >= 40)
        .unwrap_or(DEFAULT_WIDTH)
}

/// Cuts `s` to `width` characters, marking the cut with `~`.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('~');
    out
}

/// `YYYY-MM-DD HH:MM` (UTC) from an RFC 3339 time.
fn day_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
        Err(_) => fit(rfc3339, 16),
    }
}

/// Relative next attempt: `now`, `in 5m`, `-` when not queued.
fn next(rfc3339: Option<&str>) -> String {
    let Some(t) = rfc3339.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "-".into();
    };
    let secs = (t.timestamp_millis() - now_ms()) / 1000;
    if secs <= 0 {
        "now".into()
    } else {
        format!("in {}", age(secs).split(' ').next().unwrap_or(""))
    }
}

const HEADERS: [&str; 8] = [
    "TRACE ID",
    "STATUS",
    "FORM TYPE",
    "RECEIVED",
    "ATT",
    "NEXT",
    "CODE",
    "ERROR",
];

fn cells(r: &Row) -> [String; 8] {
    let received = day_time(&r.received_at) + if r.imported_at.is_some() { "*" } else { "" };
    let error = r
        .last_error
        .as_deref()
        .unwrap_or("-")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    [
        r.trace_id.clone(),
        r.status.clone(),
        r.form_type.clone(),
        received,
        r.attempts.to_string(),
        next(r.next_attempt_at.as_deref()),
        r.status_code.map_or("-".into(), |c| c.to_string()),
        error,
    ]
}

/// The table for `width` columns, with a line saying when `--limit` cut the list.
pub fn table(listing: &Listing, width: usize) -> String {
    let rows: Vec<[String; 8]> = listing.rows.iter().map(cells).collect();
    let mut w: [usize; 8] = HEADERS.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    w[2] = w[2].min(16);
    let others: usize = w[1..7].iter().sum::<usize>() + 7;
    if width < others + w[0] + MIN_ERROR {
        w[0] = width
            .saturating_sub(others + MIN_ERROR)
            .clamp(MIN_ID, w[0].max(MIN_ID));
    }
    w[7] = width.saturating_sub(others + w[0]).max(MIN_ERROR);
    let line = |c: &[String; 8]| {
        let mut out = String::new();
        for i in 0..8 {
            let cell = fit(&c[i], w[i]);
            let pad = match i {
                4 => format!("{:>w$}", cell, w = w[i]),
                7 => cell,
                _ => format!("{:<w$}", cell, w = w[i]),
            };
            out.push_str(&pad);
            out.push(if i == 7 { '\n' } else { ' ' });
        }
        out
    };
    let mut out = line(&HEADERS.map(String::from));
    for r in &rows {
        out.push_str(&line(r));
    }
    if listing.rows.iter().any(|r| r.imported_at.is_some()) {
        let note = "* imported from the old proxy: RECEIVED is when the old proxy got it; the order and --since use the import time (imported_at in `outbox inspect ID`)";
        let options = textwrap::Options::new(width).subsequent_indent("  ");
        for l in textwrap::wrap(note, options) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    if listing.matched > listing.rows.len() {
        out.push_str(&format!(
            "{} of {} shown (newest first); --limit {} shows all\n",
            listing.rows.len(),
            listing.matched,
            listing.matched
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, error: &str) -> Row {
        Row {
            trace_id: id.into(),
            status: "dead".into(),
            form_type: "a_very_long_form_type_name".into(),
            received_at: "2025-01-14T09:30:12.418Z".into(),
            received_at_ms: 0,
            imported_at: None,
            attempts: 3,
            next_attempt_at: None,
            status_code: Some(422),
            last_error: Some(error.into()),
        }
    }

    #[test]
    fn rows_fit_the_width_and_show_the_code_and_the_error_start() {
        let listing = Listing {
            rows: vec![row(
                "0190a5d2-7c3e-7b1a-9f00-1234567890ab",
                &"HTTP 422: email is required ".repeat(10),
            )],
            matched: 1,
        };
        for width in [80, 100, 160] {
            let t = table(&listing, width);
            for l in t.lines() {
                assert!(l.chars().count() <= width.max(92), "{width}: {l:?}");
            }
            assert!(t.contains("422  HTTP"), "{t}");
            assert!(t.contains("2025-01-14 09:30"), "{t}");
        }
        let wide = table(&listing, 160);
        assert!(
            wide.contains("0190a5d2-7c3e-7b1a-9f00-1234567890ab"),
            "{wide}"
        );
        assert!(!table(&listing, 160).contains("of 1 shown"));
        // The whole ID and the error's start from 110 columns; the ID first from 99.
        assert!(
            table(&listing, 110).contains("1234567890ab dead"),
            "ID kept"
        );
        assert!(table(&listing, 110).contains("HTTP 422: email"));
        let narrow = table(&listing, 99);
        assert!(narrow.contains("1234567890ab"), "{narrow}");
    }

    #[test]
    fn a_cut_list_says_how_many_matched() {
        let listing = Listing {
            rows: vec![row("short-id-1", "x")],
            matched: 312,
        };
        assert!(table(&listing, 100).contains("1 of 312 shown"));
    }
}
