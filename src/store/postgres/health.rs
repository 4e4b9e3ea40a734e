//! What the service samples from PostgreSQL once a second: whether the store can be reached,
//! the backlog for `max-pending` and health, and the replication state that decides whether an
//! acknowledged submission lives on one server or on two.
//!
//! The service reads PostgreSQL on the sampler's cadence, never per request: a probe is one
//! statement bounded by [`PROBE_BOUND`], and the result is kept in [`Watch`], which readiness,
//! `/health/detailed`, the metrics and admission read. The replication state is read again on
//! every probe, so it follows a failover (the multi-host URL reconnects to the new primary) or
//! a standby going away.
//!
//! The backlog is the expensive part: its count and oldest time scan every pending row. Both
//! come from one scan, without parallel workers (a background sample must not take both cores
//! at once, which intake's tail latency feels): about 50 ms of one core at 200,000 pending
//! rows, where two scans with two parallel workers took 75 to 85 ms on three processes. Read
//! every second that would still take a twentieth of a core from intake and grow with the
//! backlog, so the next read waits [`super::pace::PAUSE`] times as long as the last one took
//! (every second while that is under 50 ms, see [`super::pace`]); between reads a probe
//! reports the last figures, and admission keeps counting what it admitted since.
//!
//! The backlog read runs as a task of its own, bounded by [`BACKLOG_BOUND`], not inside the
//! probe's bound: a backlog of many millions (a dashboard down for a day) takes seconds to
//! count, and inside the probe that would fail the probe and take the instance out of
//! readiness, though PostgreSQL answers. A probe waits for a read it started within what is
//! left of its own bound, so a small backlog is as fresh as before; a longer read reports
//! to a later probe.
//!
//! `pg_stat_replication` shows `sync_state` only to roles with the privileges of
//! `pg_read_all_stats` (`pg_monitor` includes it); for any other role its columns are NULL.
//! Such rows are counted apart ([`Probe::hidden_standbys`]) so health can say what to grant
//! rather than claim that no standby streams.

use super::pace::Pace;
use super::{pool, PgStore, PgStoreError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for one probe: well inside the sampler's second, so a PostgreSQL that does not
/// answer turns readiness false within a few seconds, and a probe never piles up behind
/// another.
pub const PROBE_BOUND: Duration = Duration::from_secs(2);

/// Longest a backlog read may run before it is given up (its connection closed; the last
/// figures serve on, and the next read waits twenty times this). A minute counts a backlog far
/// larger than any outage of a dashboard should leave, and holds no connection for long.
pub const BACKLOG_BOUND: Duration = Duration::from_secs(60);

/// The last backlog read, and when the next is due ([`super::pace`]).
#[derive(Debug, Default)]
pub(super) struct Backlog {
    pace: Pace,
    queued: u64,
    oldest_queued_ms: Option<i64>,
    /// A read is running.
    running: bool,
    /// A read finished since a probe last reported one.
    fresh: bool,
}

/// The backlog as the probes and its reads share it.
pub(super) type SharedBacklog = Arc<Mutex<Backlog>>;

fn lock(backlog: &SharedBacklog) -> std::sync::MutexGuard<'_, Backlog> {
    backlog.lock().unwrap_or_else(|e| e.into_inner())
}

/// One probe's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Records waiting for delivery (pending, claimed ones included).
    pub queued: u64,
    /// When the oldest of them was received (ms).
    pub oldest_queued_ms: Option<i64>,
    /// Whether a backlog read finished since the last probe; `false`: `queued` and
    /// `oldest_queued_ms` are an earlier read's (see the module doc).
    pub backlog_read: bool,
    /// The server's `synchronous_standby_names` now (empty: no synchronous standby).
    pub synchronous_standby_names: String,
    /// `synchronous_commit` on this instance's connections, as the server reports it.
    pub synchronous_commit: String,
    /// Standbys streaming with `sync_state` 'sync' or 'quorum'.
    pub sync_standbys: u64,
    /// Standbys whose `sync_state` this role may not read (see the module doc).
    pub hidden_standbys: u64,
}

impl Probe {
    /// Whether an acknowledged submission may live on one server only.
    pub fn on_one_server(&self) -> bool {
        self.synchronous_standby_names.trim().is_empty()
    }
}

impl PgStore {
    /// Reads the replication state within [`PROBE_BOUND`], and starts a backlog read when
    /// one is due (waiting for it within what is left of that bound).
    pub async fn probe(&self) -> Result<Probe, PgStoreError> {
        let started = Instant::now();
        let conn = tokio::time::timeout(PROBE_BOUND, pool::get(&self.pool))
            .await
            .map_err(|_| {
                PgStoreError::Unavailable(format!("no connection within {PROBE_BOUND:?}"))
            })??;
        let query = conn.client.query_one(
            "SELECT current_setting('synchronous_standby_names'), \
               current_setting('synchronous_commit'), \
               (SELECT count(*) FROM pg_stat_replication \
                  WHERE sync_state IN ('sync', 'quorum')), \
               (SELECT count(*) FROM pg_stat_replication WHERE sync_state IS NULL)",
            &[],
        );
        let left = PROBE_BOUND.saturating_sub(started.elapsed());
        let done = tokio::time::timeout(left, query).await;
        // A probe that got no answer closes its connection rather than handing it back.
        let row = pool::bounded(conn, done, PROBE_BOUND, "the probe")?;
        if let Some(read) = self.start_backlog_read() {
            // Past the bound the read goes on by itself and reports to a later probe.
            let left = PROBE_BOUND.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left, read).await;
        }
        let mut backlog = lock(&self.backlog);
        Ok(Probe {
            queued: backlog.queued,
            oldest_queued_ms: backlog.oldest_queued_ms,
            backlog_read: std::mem::take(&mut backlog.fresh),
            synchronous_standby_names: row.try_get(0)?,
            synchronous_commit: row.try_get(1)?,
            sync_standbys: row.try_get::<_, i64>(2)?.max(0) as u64,
            hidden_standbys: row.try_get::<_, i64>(3)?.max(0) as u64,
        })
    }

    /// Starts a backlog read when one is due and none runs.
    fn start_backlog_read(&self) -> Option<tokio::task::JoinHandle<()>> {
        {
            let mut b = lock(&self.backlog);
            if b.running || !b.pace.due(Instant::now()) {
                return None;
            }
            b.running = true;
        }
        let (pool, backlog) = (self.pool.clone(), self.backlog.clone());
        Some(tokio::spawn(read_backlog(pool, backlog)))
    }
}

/// Counts the backlog within [`BACKLOG_BOUND`] and keeps the figures (on failure, the last
/// ones stay); the next read is paced by this one's time either way.
async fn read_backlog(pool: pool::Pool, backlog: SharedBacklog) {
    let started = Instant::now();
    let read = async {
        let mut conn = pool::get(&pool).await?;
        let done = tokio::time::timeout(BACKLOG_BOUND, async {
            let tx = conn.client.transaction().await?;
            tx.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
                .await?;
            let b = tx
                .query_one(
                    "SELECT count(*), min(received_at_ms) FROM outbox_records \
                     WHERE status = 'pending'",
                    &[],
                )
                .await?;
            tx.commit().await?;
            Ok::<_, PgStoreError>((b.try_get::<_, i64>(0)?.max(0) as u64, b.try_get(1)?))
        })
        .await;
        pool::bounded(conn, done, BACKLOG_BOUND, "the backlog count")
    };
    let result = read.await;
    let mut b = lock(&backlog);
    b.running = false;
    b.pace.took(started, started.elapsed());
    match result {
        Ok((queued, oldest)) => {
            (b.queued, b.oldest_queued_ms, b.fresh) = (queued, oldest, true);
        }
        Err(e) => tracing::debug!(error = %e, "the backlog count failed; the last figures serve"),
    }
}

/// The last probe, as readiness and health read it.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// The last successful probe.
    pub last: Option<Probe>,
    /// Why the last probe failed; `None` when it succeeded.
    pub error: Option<String>,
}

impl Watched {
    pub fn reachable(&self) -> bool {
        self.last.is_some() && self.error.is_none()
    }
}

/// The probes' results, shared by the sampler (which writes) and health (which reads). Logs
/// one line when PostgreSQL becomes unreachable and one when it is back, never one per probe.
#[derive(Debug, Default)]
pub struct Watch {
    state: Mutex<Watched>,
}

impl Watch {
    /// Records a probe's result.
    pub fn record(&self, result: Result<Probe, PgStoreError>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(p) => {
                if s.error.take().is_some() {
                    tracing::info!("the PostgreSQL store is reachable again");
                }
                if let Some(old) = &s.last {
                    if old.on_one_server() != p.on_one_server() {
                        tracing::warn!(
                            synchronous_standby_names = %p.synchronous_standby_names,
                            "PostgreSQL's synchronous_standby_names changed"
                        );
                    }
                }
                s.last = Some(p);
            }
            Err(e) => {
                let text = e.to_string();
                if s.error.is_none() {
                    tracing::error!(error = %text, "the PostgreSQL store cannot be reached; intake answers 503 and delivery waits until it is back");
                }
                s.error = Some(text);
            }
        }
    }

    pub fn get(&self) -> Watched {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The hosts (and ports) of a store URL, for health: never the user or the password.
pub fn url_hosts(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or("");
    rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_without_the_user_or_password() {
        assert_eq!(
            url_hosts("postgres://outbox:s3cr%40t@db1:5432,db2:5432/outbox?sslmode=require"),
            "db1:5432,db2:5432"
        );
        assert_eq!(url_hosts("postgresql://db/x"), "db");
        assert_eq!(url_hosts("postgres://u@h?sslmode=disable"), "h");
    }

    #[test]
    fn unreachable_then_back_is_told_by_the_last_probe() {
        let w = Watch::default();
        assert!(!w.get().reachable(), "nothing known before the first probe");
        let p = Probe {
            queued: 3,
            oldest_queued_ms: Some(1),
            backlog_read: true,
            synchronous_standby_names: String::new(),
            synchronous_commit: "on".into(),
            sync_standbys: 0,
            hidden_standbys: 0,
        };
        w.record(Ok(p.clone()));
        assert!(w.get().reachable());
        w.record(Err(PgStoreError::Unavailable("down".into())));
        let got = w.get();
        assert!(!got.reachable());
        assert_eq!(got.last, Some(p.clone()), "the last figures are kept");
        w.record(Ok(p));
        assert!(w.get().reachable());
    }
}
