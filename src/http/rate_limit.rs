//! Rate limits for the intake route, checked before the body is read.
//!
//! Each client gets `rate-limit` with `rate-burst` on top (governor's GCRA), keyed by the
//! address the trusted-proxy rule yields ([`ClientIpRule`]), so clients behind a proxy
//! are told apart and a client cannot pick its own key with a forged header. An optional
//! `global-rate-limit` bounds all clients together. A refusal is a 429 with `Retry-After` in
//! the usual JSON error shape. Health and metrics routes are not behind this layer.
//!
//! Memory: the per-client table drops idle addresses (`retain_recent`) every
//! [`SWEEP_INTERVAL`], and is never allowed past [`MAX_TRACKED`] addresses: when a flood
//! of distinct addresses fills it and dropping idle ones frees less than a tenth, it is
//! cleared (so every client starts with a full burst) and the reset is counted. Clearing is the price of a hard bound; it only happens under a
//! flood that exhausts the table.

use super::error::ApiError;
use crate::config::{LimitSettings, Settings};
use crate::intake::client_ip::ClientIpRule;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Most client addresses tracked at once. An entry costs well under 100 bytes, so the table
/// stays below ~10 MB; a site's real visitors in one burst window are far fewer.
pub const MAX_TRACKED: usize = 100_000;
/// The table size is checked every this many requests, so it never exceeds the cap by more.
const CHECK_EVERY: u64 = 64;
/// Idle addresses are dropped at least this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// A keyed limiter with a hard bound on the number of keys it holds.
pub struct BoundedKeyedLimiter {
    quota: Quota,
    cap: usize,
    current: RwLock<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    checks: AtomicU64,
    resets: AtomicU64,
    last_sweep: Mutex<Instant>,
}

impl BoundedKeyedLimiter {
    pub fn new(quota: Quota, cap: usize) -> Self {
        BoundedKeyedLimiter {
            quota,
            cap,
            current: RwLock::new(Arc::new(RateLimiter::keyed(quota))),
            checks: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// `Ok` if `ip` may proceed, else how long it should wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(CHECK_EVERY)
        {
            self.housekeep();
        }
        let limiter = self.current.read().expect("limiter lock").clone();
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.current.read().expect("limiter lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How often the table was cleared for reaching the cap.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    /// The most addresses the table can hold between two size checks.
    pub fn bound(&self) -> usize {
        self.cap + CHECK_EVERY as usize
    }

    fn housekeep(&self) {
        let limiter = self.current.read().expect("limiter lock").clone();
        let due = {
            let mut last = self.last_sweep.lock().expect("sweep lock");
            let due = last.elapsed() >= SWEEP_INTERVAL;
            if due {
                *last = Instant::now();
            }
            due
        };
        if !due && limiter.len() < self.cap {
            return;
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
        // Sweeping must leave real headroom, or a table kept just at the cap would be swept
        // (a pass over every entry) every few requests.
        if limiter.len() >= self.cap / 10 * 9 {
            *self.current.write().expect("limiter lock") = Arc::new(RateLimiter::keyed(self.quota));
            self.resets.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("outbox_rate_limiter_resets_total").increment(1);
            tracing::warn!(
                cap = self.cap,
                "rate limiter tracked too many client addresses and was cleared"
            );
        }
    }
}

/// The limits the intake route enforces; `None` parts are off.
pub struct RateLimits {
    per_client: Option<BoundedKeyedLimiter>,
    global: Option<DefaultDirectRateLimiter>,
    client_ip: ClientIpRule,
}

impl RateLimits {
    /// `None` when both limits are off.
    pub fn from_settings(limits: &LimitSettings, client_ip: &ClientIpRule) -> Option<RateLimits> {
        let burst = NonZeroU32::new(limits.rate_burst).unwrap_or(NonZeroU32::MIN);
        let per_client = limits
            .rate_limit
            .map(|r| BoundedKeyedLimiter::new(quota(r).allow_burst(burst), MAX_TRACKED));
        let global = limits
            .global_rate_limit
            .map(|r| RateLimiter::direct(quota(r)));
        (per_client.is_some() || global.is_some()).then(|| RateLimits {
            per_client,
            global,
            client_ip: client_ip.clone(),
        })
    }

    /// Checks one request from `client`.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        if let Some(l) = &self.per_client {
            l.check(client).map_err(|wait| refused("client", wait))?;
        }
        if let Some(g) = &self.global {
            g.check()
                .map_err(|nu| refused("global", nu.wait_time_from(g.clock().now())))?;
        }
        Ok(())
    }
}

/// `n` per `per`, with a burst of `n` (the global limit's burst; clients get `rate-burst`).
fn quota((n, per): (u32, Duration)) -> Quota {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(per / n.get())
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(n)
}

fn refused(scope: &'static str, wait: Duration) -> ApiError {
    metrics::counter!("outbox_rate_limited_total", "scope" => scope).increment(1);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(
        429,
        "rate_limited",
        format!("too many submissions; retry after {} s", secs.max(1)),
    )
    .retry_after(secs.max(1))
}

/// Puts the configured limits in front of the intake routes (nothing when both are off).
pub fn apply(api: Router, settings: &Settings) -> Router {
    match RateLimits::from_settings(&settings.limits, &settings.client_ip) {
        Some(l) => api.layer(middleware::from_fn_with_state(Arc::new(l), enforce)),
        None => api,
    }
}

/// Middleware: refuses over-limit requests before the handler reads the body.
pub async fn enforce(
    axum::extract::State(limits): axum::extract::State<Arc<RateLimits>>,
    req: Request,
    next: Next,
) -> Response {
    let client = client_of(&req, &limits.client_ip);
    match limits.check(client) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The client address by the same trusted-proxy rule as the submission's `client_ip`.
fn client_of(req: &Request, rule: &ClientIpRule) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    rule.client(peer, req.headers())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> ClientIpRule {
        ClientIpRule {
            trusted: crate::intake::client_ip::TrustedProxies::loopback(),
            header: Default::default(),
        }
    }

    fn addr(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn a_client_gets_its_burst_then_is_refused_with_a_wait() {
        let l = BoundedKeyedLimiter::new(
            Quota::per_minute(NonZeroU32::new(1).unwrap()).allow_burst(NonZeroU32::new(3).unwrap()),
            100,
        );
        for _ in 0..3 {
            assert_eq!(l.check(addr(1)), Ok(()));
        }
        let wait = l
            .check(addr(1))
            .expect_err("fourth request is over the burst");
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(60));
        assert_eq!(
            l.check(addr(2)),
            Ok(()),
            "another client has its own budget"
        );
    }

    #[test]
    fn a_flood_of_distinct_addresses_cannot_grow_the_table_past_its_bound() {
        let quota = Quota::per_hour(NonZeroU32::new(1).unwrap());
        let l = BoundedKeyedLimiter::new(quota, 1_000);
        let mut most = 0;
        for i in 0..200_000 {
            let _ = l.check(addr(i));
            if i % 97 == 0 {
                most = most.max(l.len());
            }
        }
        most = most.max(l.len());
        assert!(
            most <= l.bound(),
            "table reached {most} entries, bound {}",
            l.bound()
        );
        assert!(
            l.resets() >= 150,
            "the flood was counted: {} resets",
            l.resets()
        );
    }

    #[test]
    fn rates_become_quotas_with_the_configured_burst() {
        let limits = LimitSettings {
            rate_limit: Some((10, Duration::from_secs(3600))),
            rate_burst: 20,
            global_rate_limit: None,
            max_connections: 1,
            max_pending: 1,
            max_outbox_bytes: 1,
            min_free_disk: 0,
        };
        let r = RateLimits::from_settings(&limits, &loopback()).unwrap();
        let ip = addr(7);
        let passed = (0..25).filter(|_| r.check(ip).is_ok()).count();
        assert_eq!(
            passed, 20,
            "the burst passes, then the rate (one per 6 minutes) applies"
        );
        let e = r.check(ip).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "rate_limited"));
        let wait = e.retry_after_secs.unwrap();
        assert!((1..=360).contains(&wait), "Retry-After {wait} s");
        let off = LimitSettings {
            rate_limit: None,
            ..limits
        };
        assert!(RateLimits::from_settings(&off, &loopback()).is_none());
    }
}
