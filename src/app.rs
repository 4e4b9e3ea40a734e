//! Builds the service (binding first, so port 0 works in tests) and runs it until stopped.
//!
//! Shutdown order, each step logged: signal -> readiness fails and the listener stops
//! accepting -> in-flight requests finish (bounded by `shutdown-timeout`) -> the delivery
//! worker stops -> final flush + fdatasync (embedded store) -> return.
//!
//! The engine is the one the settings choose ([`open_store`]). What belongs to a data
//! directory runs only with the embedded store: disk sampling and its limits
//! (`min-free-disk`, `max-outbox-bytes`), the ops admin socket, the final fdatasync. With
//! PostgreSQL no data directory is opened or created; the sampler probes the server instead
//! (reachability, backlog for `max-pending`, replication state: see
//! [`crate::store::postgres::health`]). A PostgreSQL that cannot be reached at start stops the
//! start with [`crate::store::engine::Unreachable`] (exit code 3, which a service manager
//! restarts); once running, outbox rides out an outage: intake answers 503, readiness is
//! false, delivery waits, and all resume when the server answers again.

use crate::config::Settings;
use crate::delivery::DeliveryState;
use crate::http::admission::Admission;
use crate::http::{self, AppState};
use crate::intake::Limits;
use crate::store::engine::Unreachable;
use crate::store::postgres::health::Watch;
use crate::store::postgres::PgStore;
use crate::store::{Engine, Store};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How often the store is sampled for admission control and health: disk use with the
/// embedded store, a probe of the server with PostgreSQL.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples the store once: on a blocking thread for the embedded store (it walks the data
/// directory), one bounded probe for PostgreSQL.
async fn sample_store(store: &Engine, admission: &Arc<Admission>, watch: &Watch) {
    match store {
        Engine::Embedded(s) => {
            let (s, a) = (s.clone(), admission.clone());
            let _ = tokio::task::spawn_blocking(move || a.refresh(&s)).await;
        }
        Engine::Postgres(s) => {
            let probe = s.probe().await;
            // A backlog not read again is left to admission's own count since the last read.
            match &probe {
                Ok(p) if p.backlog_read => admission.set_queued(p.queued),
                _ => {}
            }
            watch.record(probe);
        }
    }
}

pub struct Application {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    state: AppState,
}

/// Opens the engine the settings choose: PostgreSQL when `store-url` is set (connects,
/// checks the server, applies the schema), else the embedded store in `data-dir`. Errors
/// name what to fix; PostgreSQL out of reach is [`Unreachable`] (exit code 3).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Engine> {
    match &settings.store {
        Some(pg) => {
            let url = crate::store::postgres::config::masked_url(&pg.options.url);
            let store = PgStore::open(&pg.options).await.map_err(|e| match e {
                e if e.is_unavailable() => anyhow::Error::new(Unreachable { url, why: e }),
                e => anyhow::anyhow!("cannot open the PostgreSQL store at {url}: {e}"),
            })?;
            Ok(Engine::Postgres(store))
        }
        None => {
            let store = Store::open(&settings.data_dir)
                .map_err(|e| crate::ops::socket::route::explain(&settings.data_dir, e.into()))?;
            Ok(Engine::Embedded(Arc::new(store)))
        }
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        crate::telemetry::metrics::install();
        let store = open_store(&settings).await?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {} (setting listen)", settings.listen))?;
        let admin_listener = match settings.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (setting admin-listen)"))?,
            ),
            None => None,
        };
        let data_dir = match &store {
            Engine::Embedded(s) => Some(s.path().to_path_buf()),
            Engine::Postgres(_) => None,
        };
        let admission = Arc::new(Admission::new(settings.limits.clone(), data_dir));
        let store_watch = Arc::new(Watch::default());
        sample_store(&store, &admission, &store_watch).await;
        let state = AppState {
            limits: Limits {
                max_body: settings.max_body,
                ..Limits::default()
            },
            delivery: Arc::new(DeliveryState::new(settings.delivery.is_some())),
            settings: Arc::new(settings),
            store,
            store_watch,
            admission,
            wake: Arc::new(Notify::new()),
            started: Instant::now(),
            shutting_down: Arc::new(AtomicBool::new(false)),
        };
        Ok(Application {
            listener,
            admin_listener,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            admin_listener,
            state,
        } = self;
        let timeout = state.settings.shutdown_timeout;
        let stop = Arc::new(Notify::new());
        let store_at = match &state.settings.store {
            Some(pg) => crate::store::postgres::config::masked_url(&pg.options.url),
            None => state.settings.data_dir.display().to_string(),
        };
        tracing::info!(
            listen = %listener.local_addr()?,
            store = state.store.name(),
            store_at = %store_at,
            delivery = state.settings.delivery.is_some(),
            version = env!("CARGO_PKG_VERSION"),
            "outbox serving"
        );
        if let Some(why) = state.admission.disk_warning() {
            tracing::warn!(why = %why, "min-free-disk cannot be met");
        }

        let sampler = {
            let (store, admission) = (state.store.clone(), state.admission.clone());
            let (delivery, watch) = (state.delivery.clone(), state.store_watch.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SAMPLE_EVERY).await;
                    crate::telemetry::metrics::upkeep();
                    http::REFUSALS.flush_due();
                    delivery.failures.flush_due();
                    sample_store(&store, &admission, &watch).await;
                }
            })
        };

        let delivery = match state.settings.delivery {
            Some(_) => Some(crate::delivery::start(
                state.store.clone(),
                &state.settings,
                state.delivery.clone(),
                state.wake.clone(),
            )?),
            None => None,
        };

        // The admin socket lives in the data directory: embedded store only. With PostgreSQL
        // ops commands open the shared store themselves.
        let ops = state.store.embedded().and_then(|store| {
            crate::ops::socket::server::start_or_warn(
                &state.settings.data_dir,
                crate::ops::operation::OpsContext {
                    store: store.clone(),
                    delivery: Some(state.delivery.clone()),
                    wake: Some(state.wake.clone()),
                },
                crate::ops::commands::OPERATIONS,
            )
        });

        let conn = ConnLimits {
            max: state.settings.limits.max_connections,
            header_timeout: state.settings.body_timeout,
        };
        let main = serve(listener, http::router(state.clone()), stop.clone(), conn);
        let admin = admin_listener.map(|l| {
            let app = http::common_layers(http::health_router(state.clone()));
            serve(l, app, stop.clone(), conn)
        });

        shutdown.await;
        tracing::info!("shutdown: stopped accepting connections, finishing in-flight requests");
        state.shutting_down.store(true, Ordering::Relaxed);
        stop.notify_waiters();
        if let Some(ops) = ops {
            ops.stop().await;
        }
        let drained = tokio::time::timeout(timeout, async {
            let _ = main.await;
            if let Some(a) = admin {
                let _ = a.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "shutdown: requests still running at the bound were cut off"
            );
        }
        sampler.abort();
        // Awaited so that its handle on the store is gone when this returns.
        let _ = sampler.await;
        if let Some(worker) = delivery {
            tracing::info!("shutdown: stopping the delivery worker");
            worker.stop(timeout).await;
        }
        if let Some(store) = state.store.embedded() {
            tracing::info!("shutdown: final flush and fdatasync");
            store.sync().context("final sync at shutdown")?;
        }
        tracing::info!("shutdown: complete");
        Ok(())
    }
}

/// Largest request head (request line and headers) accepted; larger gets 431. Browsers send
/// a few KiB, cookies included; without a bound hyper would buffer ~400 KiB per connection.
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Per-listener connection limits.
#[derive(Clone, Copy)]
struct ConnLimits {
    /// Most open connections; further clients wait in the kernel's accept queue.
    max: usize,
    /// A connection whose request headers take longer than this is closed (slow-loris).
    header_timeout: Duration,
}

/// Serves `app` (HTTP/1.1) on `listener` until `stop`, then closes the listener and lets open
/// connections finish their current request. Each connection holds a permit of a semaphore
/// of `max` while it is open, and accepting waits for a permit.
fn serve(
    listener: TcpListener,
    app: axum::Router,
    stop: Arc<Notify>,
    limits: ConnLimits,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    // Registered now, so a stop signalled before the task first runs is not missed.
    let stopped = stop.notified_owned();
    tokio::spawn(async move {
        let mut stopped = std::pin::pin!(stopped);
        let permits = Arc::new(tokio::sync::Semaphore::new(limits.max));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(MAX_HEADER_BYTES);
        loop {
            let permit = tokio::select! {
                _ = &mut stopped => break,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Per-connection failures (reset before accept) and resource limits
                        // (EMFILE) must not end the server; back off briefly on the latter.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _ = conn.await;
                drop(permit);
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    })
}
