//! Rate-limited summaries of repeated events for the log: failed delivery attempts and
//! refused posts. Every event must be visible at the default level, but one line per event
//! would let a dashboard outage (hundreds of retries a second) or a flood of refused posts
//! fill the disk with logs. So the first event after a quiet period is logged at once, and
//! the rest are counted by cause and logged as one line per [`SUMMARY_EVERY`] at most: how
//! many, how many of each cause, and the last cause. The periodic sampler calls
//! [`LogSummary::flush_due`] so the counts of a burst that stopped are still logged.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one summary line per this period and kind: a minute keeps a week-long outage
/// to about 10,000 lines while an operator reading the journal sees a cause within a minute.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Causes kept apart in one summary; rarer ones beyond this are counted as `other`.
const MAX_CAUSES: usize = 16;

/// One summary line's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub count: u64,
    /// `HTTP 503 x12, cannot connect to the dashboard x3`, most frequent first.
    pub by_cause: String,
    pub last_cause: String,
}

#[derive(Debug)]
struct Inner {
    counts: BTreeMap<String, u64>,
    last_cause: Option<String>,
    last_line: Option<Instant>,
}

/// Counts events by cause and hands a [`Report`] to `emit` at most once per period.
#[derive(Debug)]
pub struct LogSummary {
    every: Duration,
    emit: fn(&Report),
    inner: Mutex<Inner>,
}

impl LogSummary {
    pub const fn new(every: Duration, emit: fn(&Report)) -> LogSummary {
        LogSummary {
            every,
            emit,
            inner: Mutex::new(Inner {
                counts: BTreeMap::new(),
                last_cause: None,
                last_line: None,
            }),
        }
    }

    /// Counts one event; logs at once when no line was written for a period.
    pub fn record(&self, cause: &str) {
        self.record_at(cause, Instant::now());
    }

    /// Logs the counts gathered since the last line, if a period has passed.
    pub fn flush_due(&self) {
        self.flush_at(Instant::now());
    }

    fn record_at(&self, cause: &str, now: Instant) {
        let report = {
            let mut i = self.inner.lock().unwrap();
            let key = if i.counts.len() >= MAX_CAUSES && !i.counts.contains_key(cause) {
                "other"
            } else {
                cause
            };
            *i.counts.entry(key.to_owned()).or_default() += 1;
            i.last_cause = Some(cause.to_owned());
            self.take_if_due(&mut i, now)
        };
        if let Some(r) = report {
            (self.emit)(&r);
        }
    }

    fn flush_at(&self, now: Instant) {
        let report = self.take_if_due(&mut self.inner.lock().unwrap(), now);
        if let Some(r) = report {
            (self.emit)(&r);
        }
    }

    fn take_if_due(&self, i: &mut Inner, now: Instant) -> Option<Report> {
        let due = i
            .last_line
            .is_none_or(|t| now.duration_since(t) >= self.every);
        if !due || i.counts.is_empty() {
            return None;
        }
        i.last_line = Some(now);
        let mut causes: Vec<(String, u64)> = std::mem::take(&mut i.counts).into_iter().collect();
        causes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Some(Report {
            count: causes.iter().map(|(_, n)| n).sum(),
            by_cause: causes
                .iter()
                .map(|(c, n)| format!("{c} x{n}"))
                .collect::<Vec<_>>()
                .join(", "),
            last_cause: i.last_cause.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    static SEEN: StdMutex<Vec<Report>> = StdMutex::new(Vec::new());

    fn keep(r: &Report) {
        SEEN.lock().unwrap().push(r.clone());
    }

    #[test]
    fn the_first_event_is_logged_at_once_and_the_rest_once_per_period() {
        let s = LogSummary::new(Duration::from_secs(60), keep);
        let t0 = Instant::now();
        s.record_at("HTTP 503", t0);
        for k in 1..=10 {
            let cause = if k % 5 == 0 {
                "cannot connect"
            } else {
                "HTTP 503"
            };
            s.record_at(cause, t0 + Duration::from_secs(k));
        }
        s.flush_at(t0 + Duration::from_secs(30));
        assert_eq!(SEEN.lock().unwrap().len(), 1, "one line within the period");
        s.flush_at(t0 + Duration::from_secs(61));
        s.flush_at(t0 + Duration::from_secs(200));
        let seen = SEEN.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                Report {
                    count: 1,
                    by_cause: "HTTP 503 x1".into(),
                    last_cause: "HTTP 503".into()
                },
                Report {
                    count: 10,
                    by_cause: "HTTP 503 x8, cannot connect x2".into(),
                    last_cause: "cannot connect".into()
                },
            ],
            "nothing new, no line"
        );
    }
}
