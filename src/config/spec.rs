//! The table of settings. Each row is at once a flag (`--name`), an environment variable
//! (`OUTBOX_NAME`), a key of the TOML file (`name` with `_` for `-`), a line of
//! `outbox config check` and a row of the README's configuration reference.

pub struct Spec {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// Masked in `config check` and never logged.
    pub secret: bool,
    /// A switch: `--name` alone means true.
    pub switch: bool,
}

const fn s(name: &'static str, default: Option<&'static str>, help: &'static str) -> Spec {
    Spec {
        name,
        default,
        help,
        secret: false,
        switch: false,
    }
}

const fn secret(name: &'static str, help: &'static str) -> Spec {
    Spec {
        name,
        default: None,
        help,
        secret: true,
        switch: false,
    }
}

const fn switch(name: &'static str, help: &'static str) -> Spec {
    Spec {
        name,
        default: Some("false"),
        help,
        secret: false,
        switch: true,
    }
}

pub const SPECS: &[Spec] = &[
    // Service
    s(
        "listen",
        Some("127.0.0.1:8001"),
        "address the HTTP API listens on",
    ),
    s(
        "admin-listen",
        None,
        "separate address for /health* and /metrics (default: served on --listen)",
    ),
    s(
        "data-dir",
        Some("./data"),
        "data directory (created with mode 0700)",
    ),
    // The store
    s(
        "store-url",
        None,
        "PostgreSQL store shared by several instances, e.g. postgres://outbox@db1:5432,db2:5432/outbox?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=/etc/outbox/pg-ca.pem (unset: the embedded store in data-dir)",
    ),
    secret(
        "store-password",
        "password of the store-url user, when the URL holds none",
    ),
    s(
        "store-password-file",
        None,
        "file holding the store-url user's password; instead of store-password",
    ),
    s(
        "store-synchronous-commit",
        Some("on"),
        "what a 2xx waits for on PostgreSQL: on (flushed on the primary and, with a synchronous standby, on it too) or remote_apply (also visible on the standby)",
    ),
    s(
        "store-pool-size",
        Some("8"),
        "connections this instance keeps to PostgreSQL",
    ),
    switch(
        "store-require-sync-standby",
        "readiness fails while PostgreSQL has no synchronous standby streaming",
    ),
    switch(
        "store-sync-per-transaction",
        "set synchronous_commit in each group commit's transaction instead of at connect, and send its statement unnamed instead of prepared (PgBouncer before 1.20 refuses the startup option; in transaction mode, before 1.21 or with max_prepared_statements = 0, it keeps no prepared statement)",
    ),
    s(
        "source",
        Some("site-proxy"),
        "the `src` tag added to every submission",
    ),
    s(
        "max-body",
        Some("64KiB"),
        "largest request body accepted (at most 1MiB)",
    ),
    s(
        "body-timeout",
        Some("10s"),
        "time allowed to receive the request headers, and again the body (slow clients are cut off; a slow body gets 408)",
    ),
    s(
        "idempotency-window",
        Some("24h"),
        "how long a trace ID is remembered after delivery",
    ),
    s(
        "shutdown-timeout",
        Some("10s"),
        "bound on finishing in-flight requests and deliveries at shutdown",
    ),
    s(
        "log-format",
        Some("auto"),
        "auto (JSON unless stdout is a terminal), json or pretty",
    ),
    s(
        "log-level",
        Some("info"),
        "tracing filter, e.g. info or outbox=debug",
    ),
    // Clients and the open internet
    s(
        "cors-origins",
        Some(""),
        "comma-separated origins allowed to post from a browser, matched exactly",
    ),
    s(
        "cors-reject",
        Some("true"),
        "reject a POST from an origin not allowed (403); false only omits CORS headers",
    ),
    s(
        "trusted-proxies",
        Some("127.0.0.0/8,::1/128"),
        "comma-separated CIDRs whose forwarded headers are believed",
    ),
    s(
        "client-ip-header",
        Some("x-forwarded-for"),
        "the one header the trusted proxy maintains with the client address (x-forwarded-for, forwarded, x-real-ip, ...); no other is read",
    ),
    s(
        "rate-limit",
        Some("10/s"),
        "per-client request rate, e.g. 10/s or 600/m; off disables",
    ),
    s("rate-burst", Some("20"), "per-client burst above the rate"),
    s(
        "global-rate-limit",
        Some("off"),
        "rate for all clients together, e.g. 500/s; off disables",
    ),
    s(
        "max-connections",
        Some("1024"),
        "most concurrent HTTP connections",
    ),
    s(
        "honeypot-field",
        Some(""),
        "hidden form field that only bots fill; a filled one is answered but not stored",
    ),
    // Dashboard delivery
    s(
        "dashboard-url",
        None,
        "dashboard base URL; without it submissions are stored and delivery is off",
    ),
    secret(
        "ingest-key",
        "dashboard ingest key (X-INGEST-KEY and Authorization: Bearer), at least 16 characters",
    ),
    s(
        "ingest-key-file",
        None,
        "file holding the ingest key (its content without the trailing newline), re-read on SIGHUP; instead of ingest-key",
    ),
    secret(
        "signing-secret",
        "optional Standard Webhooks signing secret (whsec_... or raw)",
    ),
    s(
        "signing-secret-file",
        None,
        "file holding the signing secret, re-read on SIGHUP; instead of signing-secret",
    ),
    s(
        "site-origin",
        None,
        "Origin header sent to the dashboard (default: the first CORS origin, if any)",
    ),
    switch(
        "allow-http-dashboard",
        "allow a plain-http dashboard URL on a non-loopback host",
    ),
    s(
        "routes",
        Some(""),
        "comma-separated form_type=/path routes to the dashboard; each form type must be one a form type rule produces or one of explicit-form-types",
    ),
    s(
        "explicit-form-types",
        Some(""),
        "comma-separated form types the site's forms send themselves in a form_type field, so routes may name them without a rule",
    ),
    s(
        "default-route",
        Some("/api/ingest"),
        "dashboard path for form types without a route",
    ),
    s(
        "delivery-concurrency",
        Some("8"),
        "deliveries in flight at once",
    ),
    s(
        "delivery-timeout",
        Some("30s"),
        "timeout of one delivery attempt",
    ),
    s(
        "retry-base",
        Some("500ms"),
        "first retry delay; each later one is three times the last, with full jitter",
    ),
    s(
        "retry-cap",
        Some("15m"),
        "longest retry delay (Retry-After is honoured up to this)",
    ),
    s(
        "max-attempts",
        Some("25"),
        "attempts before a record becomes a dead letter",
    ),
    s(
        "max-age",
        Some("72h"),
        "age after which a failing record becomes a dead letter",
    ),
    s(
        "lease",
        Some("60s"),
        "no longer used (the embedded store holds claims in memory; the PostgreSQL store's lease is twice delivery-timeout plus 5s); accepted so older configurations still load",
    ),
    s(
        "circuit-threshold",
        Some("5"),
        "consecutive retryable failures that open the circuit",
    ),
    s(
        "circuit-cooldown",
        Some("30s"),
        "first open period of the circuit (doubles while probes fail)",
    ),
    s(
        "circuit-cooldown-max",
        Some("10m"),
        "longest open period of the circuit",
    ),
    s(
        "auth-probe-interval",
        Some("2m"),
        "how often delivery paused for credentials is probed",
    ),
    s(
        "payload-retention",
        Some("0s"),
        "how long a delivered payload is kept (the tombstone stays for the idempotency window)",
    ),
    s(
        "purge-interval",
        Some("1m"),
        "how often expired tombstones are purged",
    ),
    // Disk and growth
    s(
        "max-pending",
        Some("1000000"),
        "most records waiting for delivery before intake answers 503 outbox_full",
    ),
    s(
        "max-outbox-bytes",
        Some("4GiB"),
        "largest data directory before intake answers 503 outbox_full",
    ),
    s(
        "min-free-disk",
        Some("256MiB"),
        "free space kept on the data directory's filesystem (503 disk_low below it)",
    ),
];

pub fn env_name(name: &str) -> String {
    format!("OUTBOX_{}", name.to_ascii_uppercase().replace('-', "_"))
}

pub fn file_key(name: &str) -> String {
    name.replace('-', "_")
}

pub fn find(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The default of a setting that has one: code that needs a default (the ops commands'
/// data directory, say) reads it here, so each default is written once, in [`SPECS`].
pub fn default_of(name: &str) -> &'static str {
    find(name)
        .and_then(|s| s.default)
        .unwrap_or_else(|| panic!("setting {name} has no default in SPECS"))
}
