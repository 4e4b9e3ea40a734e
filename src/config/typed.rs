//! The typed settings and their validation.

use super::reader::Reader;
use super::{boolean, duration, list, rate, size, Layers};
use crate::intake::client_ip::{ClientIpRule, ForwardedHeader, TrustedProxies};
use crate::intake::form_type::{self, Rule};
use crate::store::postgres::{PgOptions, SyncCommit};
use anyhow::{anyhow, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Largest `max-body` allowed: far below sled's blob threshold (a quarter of an 8 MiB segment).
const MAX_BODY_CEILING: u64 = 1 << 20;
const MIN_INGEST_KEY_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub source: String,
    pub max_body: usize,
    pub body_timeout: Duration,
    pub idempotency_window: Duration,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub cors_origins: Vec<String>,
    pub cors_reject: bool,
    /// Trusted proxies and the one header of theirs that names the client.
    pub client_ip: ClientIpRule,
    pub honeypot_field: Option<String>,
    pub form_rules: Vec<Rule>,
    pub limits: LimitSettings,
    /// `None` when no dashboard is configured: intake only.
    pub delivery: Option<DeliverySettings>,
    /// `None`: the embedded store in `data_dir`.
    pub store: Option<PgSettings>,
}

/// The PostgreSQL store, when `store-url` is set.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub options: PgOptions,
    /// Readiness fails while the server has no synchronous standby streaming.
    pub require_sync_standby: bool,
}

/// Rate, connection and growth limits.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub rate_limit: Option<(u32, Duration)>,
    pub rate_burst: u32,
    pub global_rate_limit: Option<(u32, Duration)>,
    pub max_connections: usize,
    pub max_pending: u64,
    pub max_outbox_bytes: u64,
    pub min_free_disk: u64,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub dashboard_url: reqwest::Url,
    pub ingest_key: String,
    /// What to edit to change the ingest key, for log lines that ask for a new one.
    pub key_source: String,
    pub signing_secret: Option<String>,
    pub site_origin: Option<String>,
    pub routes: BTreeMap<String, String>,
    pub default_route: String,
    pub concurrency: usize,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub lease: Duration,
    pub circuit_threshold: u32,
    pub circuit_cooldown: Duration,
    pub circuit_cooldown_max: Duration,
    pub auth_probe_interval: Duration,
    pub payload_retention: Duration,
    pub purge_interval: Duration,
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a whole number"))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str) -> Result<T, String> {
    let n: T = num(v)?;
    if n <= T::default() {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

fn socket(v: &str) -> Result<SocketAddr, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not an address like 127.0.0.1:8001 or [::1]:8001"))
}

fn path_route(v: &str) -> Result<String, String> {
    if !v.starts_with('/') || v.contains(char::is_whitespace) {
        return Err(format!("{v:?} must be a path starting with /"));
    }
    Ok(v.to_owned())
}

fn origin(v: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(v)
        .map_err(|e| format!("{v:?} is not an origin like https://www.example.com ({e})"))?;
    let o = url.origin().ascii_serialization();
    if o == "null" || v.trim_end_matches('/') != o {
        return Err(format!(
            "{v:?} is not an origin: write scheme://host[:port] with no path, e.g. {o}"
        ));
    }
    Ok(o)
}

impl Settings {
    pub fn from_layers(layers: &Layers) -> anyhow::Result<Settings> {
        let r = Reader(layers);
        let max_body = r.req("max-body", size)?;
        if max_body == 0 || max_body > MAX_BODY_CEILING {
            bail!("invalid setting max-body = {max_body}: must be between 1 byte and 1MiB (larger values would reach sled's unsynced blob files)");
        }
        let trusted = r
            .req("trusted-proxies", |v| {
                list(v)
                    .iter()
                    .map(|c| {
                        c.parse()
                            .map_err(|_| format!("{c:?} is not a CIDR like 10.0.0.0/8"))
                    })
                    .collect()
            })
            .or_else(|e| {
                if r.string("trusted-proxies").is_none() {
                    Ok(vec![])
                } else {
                    Err(e)
                }
            })?;
        let cors_origins: Vec<String> = r
            .opt("cors-origins", |v| {
                list(v).iter().map(|o| origin(o)).collect()
            })?
            .unwrap_or_default();
        let log_format = r.req("log-format", |v| match v {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err("must be auto, json or pretty".into()),
        })?;
        let file_rules = match &layers.file_rules {
            None => vec![],
            Some(v) => {
                let rules: Vec<Rule> = v.clone().try_into().map_err(|e| {
                    anyhow!("config file: form_type_rules must be an array of tables with type, all, any, only: {e}")
                })?;
                if let Some(bad) = rules
                    .iter()
                    .find(|r| !form_type::is_valid_name(&r.form_type))
                {
                    bail!(
                        "config file: form_type_rules: {:?} is not a valid form type name",
                        bad.form_type
                    );
                }
                rules
            }
        };
        let form_rules = form_type::effective(file_rules, layers.replace_builtin_rules);
        let delivery = Self::delivery(&r, &cors_origins, &form_rules)?;
        let limits = LimitSettings {
            rate_limit: r.req("rate-limit", rate)?,
            rate_burst: r.req("rate-burst", positive)?,
            global_rate_limit: r.req("global-rate-limit", rate)?,
            max_connections: r.req("max-connections", positive)?,
            max_pending: r.req("max-pending", positive)?,
            max_outbox_bytes: r.req("max-outbox-bytes", size)?,
            min_free_disk: r.req("min-free-disk", size)?,
        };
        Ok(Settings {
            listen: r.req("listen", socket)?,
            admin_listen: r.opt("admin-listen", socket)?,
            data_dir: PathBuf::from(r.string_or_default("data-dir")),
            source: r.string_or_default("source"),
            max_body: max_body as usize,
            body_timeout: r.req("body-timeout", duration)?,
            idempotency_window: r.req("idempotency-window", duration)?,
            shutdown_timeout: r.req("shutdown-timeout", duration)?,
            log_format,
            log_level: r.string_or_default("log-level"),
            cors_reject: r.req("cors-reject", boolean)?,
            client_ip: ClientIpRule {
                trusted: TrustedProxies(trusted),
                header: r.req("client-ip-header", ForwardedHeader::parse)?,
            },
            honeypot_field: r.string("honeypot-field"),
            form_rules,
            limits,
            delivery,
            cors_origins,
            store: Settings::store(&r)?,
        })
    }

    /// Only the store settings of `layers` (the ops commands read these and nothing else,
    /// so a setting they do not use cannot stop them), parsed as the service parses them.
    pub fn store_only(layers: &Layers) -> anyhow::Result<Option<PgSettings>> {
        Settings::store(&Reader(layers))
    }

    fn store(r: &Reader) -> anyhow::Result<Option<PgSettings>> {
        let Some(url) = r.string("store-url") else {
            for (name, _) in [("store-password", ()), ("store-password-file", ())] {
                if let Some((_, source, spec)) = r.raw(name) {
                    bail!(
                        "setting {name} (from {}) is set but store-url is not: set store-url to use PostgreSQL, or remove {name}",
                        source.describe(spec)
                    );
                }
            }
            return Ok(None);
        };
        let mut options = PgOptions::new(url);
        options.password = r.secret("store-password")?;
        options.synchronous_commit = r.req("store-synchronous-commit", |v| {
            SyncCommit::parse(v).map_err(|e| e.to_string())
        })?;
        options.pool_size = r.req("store-pool-size", positive)?;
        options.sync_per_transaction = r.req("store-sync-per-transaction", boolean)?;
        // Parsed now, so a bad URL is refused by `config check` and at start, not at the
        // first connection; the message never shows the password.
        options.check().map_err(|e| {
            let (_, source, spec) = r.raw("store-url").expect("set");
            anyhow!(
                "invalid setting store-url = {:?} (from {}): {e}",
                crate::store::postgres::config::masked_url(&options.url),
                source.describe(spec)
            )
        })?;
        Ok(Some(PgSettings {
            options,
            require_sync_standby: r.req("store-require-sync-standby", boolean)?,
        }))
    }

    fn delivery(
        r: &Reader,
        cors_origins: &[String],
        rules: &[Rule],
    ) -> anyhow::Result<Option<DeliverySettings>> {
        let Some(url) = r.opt("dashboard-url", |v| {
            reqwest::Url::parse(v).map_err(|e| format!("not a URL: {e}"))
        })?
        else {
            return Ok(None);
        };
        let allow_http = r.req("allow-http-dashboard", boolean)?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http || is_loopback_host(&url) => {}
            "http" => bail!(
                "invalid setting dashboard-url = {:?}: plain http to a non-loopback host sends the ingest key in clear; use https, or set --allow-http-dashboard",
                url.as_str()
            ),
            other => bail!("invalid setting dashboard-url = {:?}: scheme {other} is not http or https", url.as_str()),
        }
        let key = r.secret("ingest-key")?.ok_or_else(|| {
            anyhow!("setting ingest-key is required when dashboard-url is set (OUTBOX_INGEST_KEY_FILE or --ingest-key-file naming a file that holds it, or OUTBOX_INGEST_KEY)")
        })?;
        if key.chars().count() < MIN_INGEST_KEY_LEN {
            bail!("invalid setting ingest-key: it is {} characters; at least {MIN_INGEST_KEY_LEN} are required", key.chars().count());
        }
        let routes = r
            .opt("routes", |v| {
                list(v)
                    .iter()
                    .map(|pair| {
                        let (t, p) = pair
                            .split_once('=')
                            .ok_or_else(|| format!("{pair:?} is not form_type=/path"))?;
                        Ok((t.trim().to_owned(), path_route(p.trim())?))
                    })
                    .collect::<Result<BTreeMap<_, _>, String>>()
            })?
            .unwrap_or_default();
        check_routes(r, &routes, rules)?;
        let site_origin = r
            .opt("site-origin", origin)?
            .or_else(|| cors_origins.first().cloned());
        Ok(Some(DeliverySettings {
            dashboard_url: url,
            ingest_key: key,
            key_source: super::reload::key_origin(r.0),
            signing_secret: r.secret("signing-secret")?,
            site_origin,
            routes,
            default_route: r.req("default-route", path_route)?,
            concurrency: r.req("delivery-concurrency", positive)?,
            timeout: r.req("delivery-timeout", duration)?,
            retry_base: r.req("retry-base", duration)?,
            retry_cap: r.req("retry-cap", duration)?,
            max_attempts: r.req("max-attempts", positive)?,
            max_age: r.req("max-age", duration)?,
            lease: r.req("lease", duration)?,
            circuit_threshold: r.req("circuit-threshold", positive)?,
            circuit_cooldown: r.req("circuit-cooldown", duration)?,
            circuit_cooldown_max: r.req("circuit-cooldown-max", duration)?,
            auth_probe_interval: r.req("auth-probe-interval", duration)?,
            payload_retention: r.req("payload-retention", duration)?,
            purge_interval: r.req("purge-interval", duration)?,
        }))
    }
}

/// Refuses a route no submission can take: its form type is produced by no rule and is not
/// one the forms send themselves (`explicit-form-types`).
fn check_routes(
    r: &Reader,
    routes: &BTreeMap<String, String>,
    rules: &[Rule],
) -> anyhow::Result<()> {
    let explicit = r
        .opt("explicit-form-types", |v| Ok(list(v)))?
        .unwrap_or_default();
    let reachable = |t: &str| {
        t == form_type::GENERIC
            || rules.iter().any(|rule| rule.form_type == t)
            || explicit.iter().any(|e| e == t)
    };
    if let Some((t, path)) = routes.iter().find(|(t, _)| !reachable(t)) {
        let (_, source, spec) = r.raw("routes").expect("routes are set");
        let produced: Vec<&str> = rules.iter().map(|r| r.form_type.as_str()).collect();
        bail!(
            "invalid setting routes (from {}): route {t}={path} can never be used: no form type rule produces {t:?} (the rules produce {}); add a [[form_type_rules]] entry with type = {t:?} to the config file, or, if the forms send form_type={t} themselves, list it in explicit-form-types",
            source.describe(spec),
            produced.join(", ")
        );
    }
    Ok(())
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
