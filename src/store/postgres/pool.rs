//! The connection pool: deadpool's managed pool over tokio-postgres connections that watch
//! their own notices.
//!
//! deadpool-postgres drives each connection itself and drops the server's notices, but a
//! COMMIT whose wait for the synchronous standby was cancelled returns success with only a
//! WARNING notice to tell. So each [`Conn`] here is a client plus a count of the WARNINGs its
//! connection received, read before and after a commit ([`Conn::warnings`]). The count is
//! raised by the task that drives the connection, which handles a notice before it reads the
//! `ReadyForQuery` that ends the statement, so a statement's caller always sees it.
//!
//! Every wait is bounded: a new connection by the connect timeout, a free one by the pool's
//! wait timeout. A connection whose socket closed (PostgreSQL restarted, failed over) is
//! dropped when it comes back to the pool, and the next checkout opens a new one: the store
//! recovers without a restart.

use super::config::{PgOptions, SyncCommit, Target};
use super::PgStoreError;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_postgres::error::Severity;
use tokio_postgres::AsyncMessage;

/// A pooled connection.
pub struct Conn {
    pub client: tokio_postgres::Client,
    warnings: Arc<AtomicU64>,
    /// The group commit's statement, prepared on this connection at its first group (see
    /// [`super::committer`]): parsed and planned once per connection instead of once per group.
    pub insert: Option<tokio_postgres::Statement>,
}

impl Conn {
    /// WARNING notices received on this connection so far.
    pub fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::SeqCst)
    }
}

pub(super) struct Manager {
    target: Target,
    sync: SyncCommit,
    /// Whether the level is a startup option to check (not set per transaction).
    check_sync: bool,
}

pub(super) type Pool = managed::Pool<Manager>;

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = PgStoreError;

    async fn create(&self) -> Result<Conn, PgStoreError> {
        let (client, mut connection) = self.connect().await.map_err(|e| match e {
            Attempt::Late(what) => PgStoreError::Unavailable(what),
            Attempt::Failed(e) => match e.as_db_error() {
                Some(db) if db.message().contains("unsupported startup parameter") => {
                    PgStoreError::Config(format!(
                        "the server or a pooler in between refused a startup parameter ({}); \
                         behind PgBouncer before 1.20 set synchronous_commit per transaction \
                         instead (sync_per_transaction)",
                        db.message()
                    ))
                }
                _ => super::classify(e),
            },
        })?;
        let warnings = Arc::new(AtomicU64::new(0));
        let seen = warnings.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notice(n)) if is_warning(&n) => {
                        seen.fetch_add(1, Ordering::SeqCst);
                        tracing::warn!(
                            code = n.code().code(),
                            message = n.message(),
                            detail = n.detail(),
                            "PostgreSQL warning"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "PostgreSQL connection closed");
                        break;
                    }
                }
            }
        });
        if !self.check_sync {
            return Ok(Conn {
                client,
                warnings,
                insert: None,
            });
        }
        // The startup option must have taken: a pooler that drops it would leave the
        // server's default, which outbox does not trust.
        let got = client
            .simple_query("SHOW synchronous_commit")
            .await
            .map_err(super::classify)
            .map(|m| first_value(&m))?;
        if got.as_deref() != Some(self.sync.as_str()) {
            return Err(PgStoreError::Unsafe(format!(
                "synchronous_commit is {} on a new connection although outbox asked for {} in its \
                 startup options; a connection pooler in between may drop them (PgBouncer: \
                 do not list \"options\" in ignore_startup_parameters, or set it per transaction)",
                got.unwrap_or_default(),
                self.sync.as_str()
            )));
        }
        Ok(Conn {
            client,
            warnings,
            insert: None,
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<PgStoreError> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        Ok(())
    }
}

/// Why one connection attempt failed.
enum Attempt {
    Failed(tokio_postgres::Error),
    /// The server did not finish the startup within the connect timeout.
    Late(String),
}

type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
        tokio_postgres::Socket,
    >>::Stream,
>;

impl Manager {
    /// Connects to the first host that completes the startup within the connect timeout and
    /// suits `target_session_attrs`, trying a multi-host URL's hosts in order. tokio-postgres
    /// tries them in turn too, but bounds only each TCP connect: a host that accepts the
    /// connection and then never answers (frozen, or its network cut after the handshake)
    /// would hold every new connection until the pool gives up, so the standby promoted after
    /// it would never be reached. libpq bounds the whole attempt per host; so does this.
    async fn connect(&self) -> Result<(tokio_postgres::Client, Connection), Attempt> {
        let Some((last, first)) = self.target.hosts.split_last() else {
            return self.attempt(&self.target.config).await;
        };
        for config in first {
            match self.attempt(config).await {
                Ok(c) => return Ok(c),
                Err(e) => tracing::debug!(host = ?config.get_hosts(), error = %e, "host skipped"),
            }
        }
        self.attempt(last).await
    }

    async fn attempt(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(tokio_postgres::Client, Connection), Attempt> {
        let limit = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_LIMIT);
        match tokio::time::timeout(limit, config.connect(self.target.tls.clone())).await {
            Ok(r) => r.map_err(Attempt::Failed),
            Err(_) => Err(Attempt::Late(format!(
                "{:?} did not complete the connection startup within {limit:?}",
                config.get_hosts()
            ))),
        }
    }
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Failed(e) => e.fmt(f),
            Attempt::Late(what) => f.write_str(what),
        }
    }
}

/// The bound on one host's connection startup when the configuration names none (the store's
/// options always set one).
const DEFAULT_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether a notice is a WARNING (by its untranslated severity when the server sends it).
fn is_warning(n: &tokio_postgres::error::DbError) -> bool {
    match n.parsed_severity() {
        Some(s) => s == Severity::Warning,
        None => n.severity() == "WARNING",
    }
}

/// The first column of the first row of a simple query.
pub(super) fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}

pub(super) fn build(o: &PgOptions) -> Result<Pool, PgStoreError> {
    let manager = Manager {
        target: super::config::target(o)?,
        sync: o.synchronous_commit,
        check_sync: !o.sync_per_transaction,
    };
    managed::Pool::builder(manager)
        .max_size(o.pool_size.max(2))
        .wait_timeout(Some(o.pool_wait))
        // Several hosts are tried in turn, each within the connect timeout.
        .create_timeout(Some(o.connect_timeout * 3))
        .recycle_timeout(Some(o.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| PgStoreError::Config(e.to_string()))
}

/// A connection from the pool, every failure to get one named as PostgreSQL being unavailable.
pub(super) async fn get(pool: &Pool) -> Result<managed::Object<Manager>, PgStoreError> {
    pool.get().await.map_err(|e| match e {
        managed::PoolError::Backend(e) => e,
        managed::PoolError::Timeout(t) => {
            PgStoreError::Unavailable(format!("no PostgreSQL connection in time ({t:?})"))
        }
        other => PgStoreError::Unavailable(other.to_string()),
    })
}

/// The result of work on `conn` that was given `limit` (`Err(_)`: it did not finish): the
/// value, or the error, the connection closed rather than reused when the server is not
/// answering or unreachable (a late answer to abandoned work would be read by its next user).
pub(super) fn bounded<T, E: Into<PgStoreError>>(
    conn: managed::Object<Manager>,
    done: Result<Result<T, E>, tokio::time::error::Elapsed>,
    limit: std::time::Duration,
    what: &str,
) -> Result<T, PgStoreError> {
    let e = match done {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => e.into(),
        Err(_) => PgStoreError::Unavailable(format!("{what} got no answer within {limit:?}")),
    };
    if e.is_unavailable() {
        drop(managed::Object::take(conn));
    }
    Err(e)
}
