//! The store URL, the durability level, and TLS.
//!
//! The URL is libpq's (`postgres://user@host:port/db?sslmode=verify-full&sslrootcert=ca.pem`,
//! several hosts and `target_session_attrs=read-write` included). tokio-postgres understands
//! `sslmode` only up to `require`, so `sslmode` and `sslrootcert` are taken out here and turned
//! into a rustls configuration (the TLS stack reqwest already uses) with libpq's meaning:
//!
//! | `sslmode`     | encrypted | server certificate checked against | host name checked |
//! |---------------|-----------|------------------------------------|-------------------|
//! | `disable`     | no        | -                                  | -                 |
//! | `prefer`      | if offered| nothing (as libpq without a root file) | no            |
//! | `require`     | yes       | nothing, or `sslrootcert` if given (libpq does the same) | no |
//! | `verify-ca`   | yes       | `sslrootcert`                      | no                |
//! | `verify-full` | yes       | `sslrootcert`                      | yes               |
//!
//! `synchronous_commit` is sent as a startup option (`options=-c synchronous_commit=...`) on
//! every connection, never with a session `SET` (which PgBouncer in transaction mode would
//! leak to other clients), so no server, role or client default can lower it; each new
//! connection checks it took. PgBouncer before 1.20 refuses that startup parameter; behind
//! one, [`PgOptions::sync_per_transaction`] has each group commit run `SET LOCAL` in its own
//! transaction instead.

use super::tls::{load_roots, provider, CaVerifier, NoVerifier};
use super::PgStoreError;
use rustls::client::danger::ServerCertVerifier;
use std::sync::Arc;
use std::time::Duration;

/// What a COMMIT waits for before it returns. `off` and `local` are not offered: with them
/// an acknowledged submission can be lost (a crash, or a failover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncCommit {
    /// Flushed on the primary and on every synchronous standby (local flush without one).
    On,
    /// As `on`, and applied on the synchronous standbys: readable there at once.
    RemoteApply,
}

impl SyncCommit {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncCommit::On => "on",
            SyncCommit::RemoteApply => "remote_apply",
        }
    }

    pub fn parse(s: &str) -> Result<SyncCommit, PgStoreError> {
        match s {
            "on" => Ok(SyncCommit::On),
            "remote_apply" => Ok(SyncCommit::RemoteApply),
            other => Err(PgStoreError::Config(format!(
                "synchronous_commit {other:?} is not accepted: use \"on\" or \"remote_apply\" \
                 (\"off\", \"local\" and \"remote_write\" can lose acknowledged submissions)"
            ))),
        }
    }
}

/// How the store connects and how long it waits. Its `Debug` masks the passwords.
#[derive(Clone)]
pub struct PgOptions {
    pub url: String,
    /// The password for the URL's user when the URL holds none (from a file, as the other
    /// secrets are).
    pub password: Option<String>,
    pub synchronous_commit: SyncCommit,
    /// Connections in the pool, the committer's included.
    pub pool_size: usize,
    /// Longest wait for a TCP connection and the startup handshake of one server.
    pub connect_timeout: Duration,
    /// Longest wait for a free connection from the pool.
    pub pool_wait: Duration,
    /// Longest wait for one group commit. Past it the group is answered as not stored
    /// (503) and its connection closed; the COMMIT itself is never cancelled. Also the bound
    /// on each other write: the delivery worker's claims, settles and releases, an edit, a
    /// quarantine, an erasure (see [`super::claims`] for why a write cut off is safe).
    pub commit_timeout: Duration,
    /// Longest wait for one read (a record, the counters, a page of a listing). A server
    /// that froze or whose machine dropped off the network keeps the connection open and
    /// never answers, and cannot run a `statement_timeout` of its own: past this the read is
    /// [`PgStoreError::Unavailable`] and its connection
    /// closed, so health and intake answer instead of hanging.
    pub read_timeout: Duration,
    /// How long a claim holds a record before another instance may take it.
    pub lease: Duration,
    /// Sets `synchronous_commit` with `SET LOCAL` in each group commit's transaction instead
    /// of as a startup option: for PgBouncer before 1.20 (Debian 12 ships 1.18), which
    /// refuses the `options` startup parameter; the group's statement is then also sent
    /// unnamed in that transaction instead of prepared once per connection, so set it too
    /// behind a PgBouncer in transaction mode that does not keep prepared statements (before
    /// 1.21, or `max_prepared_statements = 0`). Costs two round trips per group. Claims,
    /// settles and the purge then commit at the server's level: an outcome lost in a crash
    /// means a delivery repeated, as after any crash; acknowledgements are never weakened.
    pub sync_per_transaction: bool,
}

impl PgOptions {
    /// Defaults for `url`: every wait bounded well inside a client's patience.
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            password: None,
            synchronous_commit: SyncCommit::On,
            // Two committers and room for the delivery worker, the purge and ops reads; a
            // PostgreSQL server's default max_connections (100) holds several instances.
            pool_size: 8,
            // A server that is down refuses at once; this bounds a host that does not answer.
            connect_timeout: Duration::from_secs(3),
            pool_wait: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(10),
            // A read is one index lookup or one page: milliseconds on a live server.
            read_timeout: Duration::from_secs(5),
            // Far above a delivery's own timeout, so a live instance keeps what it sends.
            lease: Duration::from_secs(120),
            sync_per_transaction: false,
        }
    }
}

impl PgOptions {
    /// Parses the URL (hosts, `sslmode`, the CA file) without connecting.
    pub fn check(&self) -> Result<(), PgStoreError> {
        target(self).map(|_| ())
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &masked_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("synchronous_commit", &self.synchronous_commit)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_wait", &self.pool_wait)
            .field("commit_timeout", &self.commit_timeout)
            .field("lease", &self.lease)
            .field("sync_per_transaction", &self.sync_per_transaction)
            .finish()
    }
}

/// `url` with the password of its user info (`user:password@`) and of a `password=`
/// parameter replaced by `********`, for `config check`, logs and errors.
pub fn masked_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((user, hosts)) => match user.split_once(':') {
                    Some((name, _)) => format!("{name}:********@{hosts}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let shown: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=********"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&shown.join("&"));
    }
    out
}

/// A parsed URL: the tokio-postgres configuration, the same for each of its hosts alone, and
/// the TLS connector they need.
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    /// One configuration per host of a multi-host URL, in order (empty for one host): the
    /// pool tries them itself, each within the connect timeout ([`super::pool`] says why).
    pub hosts: Vec<tokio_postgres::Config>,
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

/// What libpq's `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

pub(super) fn target(o: &PgOptions) -> Result<Target, PgStoreError> {
    let bad = |what: String| PgStoreError::Config(what);
    // Not through a URL parser: libpq's URLs may name several hosts (`h1:5432,h2:5432`).
    let (base, query) = o.url.split_once('?').unwrap_or((&o.url, ""));
    let scheme = base.split_once("://").map_or("", |(s, _)| s);
    if !matches!(scheme, "postgres" | "postgresql") {
        return Err(bad(format!(
            "the URL must start with postgres:// (found {scheme:?})"
        )));
    }
    let (mut mode, mut root) = (SslMode::Prefer, None);
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "sslmode" => {
                mode = match &*v {
                    "disable" => SslMode::Disable,
                    "prefer" | "allow" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(bad(format!("sslmode={other} is not known"))),
                }
            }
            "sslrootcert" => root = Some(v.into_owned()),
            _ => {
                kept.append_pair(&k, &v);
            }
        }
    }
    let kept = kept.finish();
    let url = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{kept}"),
    };
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| bad(format!("{e}")))?;
    let mut hosts = Vec::new();
    if config.get_hosts().len() > 1 {
        for one in single_host_urls(base) {
            let one = match kept.is_empty() {
                true => one,
                false => format!("{one}?{kept}"),
            };
            hosts.push(one.parse().map_err(|e| bad(format!("{e}")))?);
        }
        // Hosts named otherwise (a `host=` parameter): tokio-postgres tries them in turn.
        let single = |h: &tokio_postgres::Config| h.get_hosts().len() == 1;
        if hosts.len() != config.get_hosts().len() || !hosts.iter().all(single) {
            hosts.clear();
        }
    }
    for c in std::iter::once(&mut config).chain(hosts.iter_mut()) {
        settle(c, o, mode);
    }
    let roots = match (&root, mode) {
        (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(bad(
                "sslmode=verify-ca and verify-full need sslrootcert=<CA file (PEM)>".into(),
            ))
        }
        (Some(path), _) => Some(load_roots(path)?),
        (None, _) => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (roots, mode) {
        (Some(roots), m) => Arc::new(CaVerifier {
            inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| bad(format!("sslrootcert: {e}")))?,
            check_name: m == SslMode::VerifyFull,
        }),
        (None, _) => Arc::new(NoVerifier(provider())),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Target {
        config,
        hosts,
        tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
    })
}

/// The settings every connection gets whatever the URL says: the TLS mode, the durability
/// level, timeouts, keepalives and a default application name.
fn settle(config: &mut tokio_postgres::Config, o: &PgOptions, mode: SslMode) {
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if !o.sync_per_transaction {
        config.options(format!(
            "-c synchronous_commit={}",
            o.synchronous_commit.as_str()
        ));
    }
    config
        .connect_timeout(o.connect_timeout)
        .keepalives(true)
        // A peer that vanished (its machine gone) is noticed in about 20 s, not 2 hours.
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(2);
    if let (Some(p), None) = (&o.password, config.get_password()) {
        config.password(p.as_bytes());
    }
    if config.get_application_name().is_none() {
        config.application_name("outbox");
    }
}

/// `scheme://[userinfo@]h1:p1,h2:p2[/db]` as one URL per host, in order.
fn single_host_urls(base: &str) -> Vec<String> {
    let Some((scheme, rest)) = base.split_once("://") else {
        return Vec::new();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (user, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    hosts
        .split(',')
        .map(|h| format!("{scheme}://{user}{h}{path}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, PgStoreError> {
        target(&PgOptions::new(url))
    }

    #[test]
    fn libpq_ssl_modes_are_understood_and_verification_needs_a_ca_file() {
        let t = parse("postgres://outbox@db1:5432,db2:5432/outbox?sslmode=require&target_session_attrs=read-write").unwrap();
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(t.config.get_hosts().len(), 2);
        // Each host alone too, with the same settings, for the pool to try in turn.
        assert_eq!(t.hosts.len(), 2);
        for (h, name) in t.hosts.iter().zip(["db1", "db2"]) {
            assert_eq!(
                h.get_hosts(),
                [tokio_postgres::config::Host::Tcp(name.into())]
            );
            assert_eq!(h.get_ports(), [5432]);
            assert_eq!(h.get_user(), Some("outbox"));
            assert_eq!(h.get_dbname(), Some("outbox"));
            assert_eq!(h.get_options(), Some("-c synchronous_commit=on"));
            assert_eq!(
                h.get_target_session_attrs(),
                tokio_postgres::config::TargetSessionAttrs::ReadWrite
            );
        }
        assert!(parse("postgres://h/db").unwrap().hosts.is_empty());
        assert_eq!(
            t.config.get_options(),
            Some("-c synchronous_commit=on"),
            "durability is a startup option, not a session SET"
        );
        let e = parse("postgres://h/db?sslmode=verify-full").err().unwrap();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let e = parse("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let e = parse("postgres://h/db?sslmode=sometimes").err().unwrap();
        assert!(e.to_string().contains("sslmode=sometimes"), "{e}");
        assert!(parse("mysql://h/db").is_err());
        assert_eq!(
            parse("postgres://h/db?sslmode=disable")
                .unwrap()
                .config
                .get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn passwords_are_masked_wherever_the_url_holds_them() {
        for (url, shown) in [
            (
                "postgres://outbox:s3cr%40t@h1:5432,h2:5432/db?sslmode=require",
                "postgres://outbox:********@h1:5432,h2:5432/db?sslmode=require",
            ),
            (
                "postgres://outbox@h/db?password=hunter2&application_name=a",
                "postgres://outbox@h/db?password=********&application_name=a",
            ),
            ("postgres://h/db", "postgres://h/db"),
        ] {
            assert_eq!(masked_url(url), shown);
        }
        let mut o = PgOptions::new("postgres://outbox:hunter2@h/db");
        o.password = Some("swordfish".into());
        let debug = format!("{o:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("swordfish"),
            "{debug}"
        );
    }

    #[test]
    fn only_durable_commit_levels_are_accepted() {
        assert_eq!(SyncCommit::parse("on").unwrap(), SyncCommit::On);
        assert_eq!(
            SyncCommit::parse("remote_apply").unwrap(),
            SyncCommit::RemoteApply
        );
        for weak in ["off", "local", "remote_write"] {
            assert!(SyncCommit::parse(weak).is_err(), "{weak}");
        }
    }
}
