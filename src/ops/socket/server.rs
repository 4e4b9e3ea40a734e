//! The admin socket server: `<data-dir>/admin.sock`, mode 0600.
//!
//! File permissions are the authentication: the data directory is 0700 and the socket 0600,
//! so only the service's own user can connect. Each connection carries one request and is
//! handled on a blocking thread, because every operation is a synchronous function over the
//! store (some scan it all). The server runs the operations it is given at start (the
//! command list's `OPERATIONS`), found by the request's `op`.

use crate::ops::operation::{Handler, NotUnderstood, OpsContext};
use crate::ops::socket::protocol::{Reply, Request, MAX_REQUEST_BYTES, SOCKET_NAME};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;

/// Longest wait for a client's request line, and for a client to take an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Least time between two progress lines, so a scan of a million records sends a few dozen.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The operations a server runs.
pub type Operations = &'static [Handler];

pub struct AdminServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `<data-dir>/admin.sock` (replacing a stale one: the store's lock proves no other
    /// server holds this directory) and serves it until [`AdminServer::stop`].
    pub fn start(
        data_dir: &Path,
        ctx: OpsContext,
        operations: Operations,
    ) -> std::io::Result<AdminServer> {
        let path = data_dir.join(SOCKET_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("removed a stale admin socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let ctx = ctx.clone();
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = handle(&ctx, operations, stream) {
                        tracing::warn!(error = %e, "admin connection failed");
                    }
                });
            }
        });
        Ok(AdminServer { path, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket file. Requests already running finish. Waits
    /// until the accept loop is gone, so it no longer holds the store open.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(error = %e, "could not remove the admin socket");
        }
    }
}

fn handle(
    ctx: &OpsContext,
    operations: Operations,
    stream: std::os::unix::net::UnixStream,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    // A client that connects and sends nothing must not hold a thread (or shutdown) forever.
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let writer = Mutex::new(stream.try_clone()?);
    let send = |reply: &Reply| -> std::io::Result<()> {
        let mut line = serde_json::to_vec(reply).expect("replies serialize");
        line.push(b'\n');
        writer.lock().unwrap().write_all(&line)
    };
    send(&Reply::Hello {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
    })?;
    let mut line = String::new();
    BufReader::new(stream.take(MAX_REQUEST_BYTES)).read_line(&mut line)?;
    let Request { op, args } = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send(&not_understood(e)),
    };
    let Some(handler) = operations.iter().find(|h| h.name == op) else {
        return send(&not_understood(format!("unknown operation {op:?}")));
    };
    let op = op.as_str();
    // Read-only requests (`outbox top` sends one a second) are logged at debug; changes at info.
    if handler.read_only {
        tracing::debug!(op, "admin request");
    } else {
        tracing::info!(op, "admin request");
    }
    let last = Mutex::new(Instant::now());
    let progress = |done: u64, total: Option<u64>| {
        let mut last = last.lock().unwrap();
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            // A client that went away only loses its progress; the operation completes.
            let _ = send(&Reply::Progress { done, total });
        }
    };
    let reply = match (handler.run)(ctx, args, &progress) {
        Ok(v) => Reply::Ok(v),
        Err(e) => match e.downcast_ref::<NotUnderstood>() {
            Some(e) => not_understood(e),
            None => {
                tracing::warn!(op, error = %format!("{e:#}"), "admin request failed");
                Reply::Error(format!("{e:#}"))
            }
        },
    };
    send(&reply)
}

/// The answer to a request this server cannot read: most likely from another version.
fn not_understood(e: impl std::fmt::Display) -> Reply {
    Reply::Error(format!(
        "the server did not understand the request ({e}); are the outbox binary and the running server the same version?"
    ))
}

/// Starts the admin socket for a serving application. A failure (for instance a data
/// directory path too long for a Unix socket) is logged, not fatal: intake matters more, and
/// ops commands then say that the server does not answer.
pub fn start_or_warn(
    data_dir: &Path,
    ctx: OpsContext,
    operations: Operations,
) -> Option<AdminServer> {
    match AdminServer::start(data_dir, ctx, operations) {
        Ok(s) => {
            tracing::info!(socket = %s.path().display(), "admin socket listening");
            Some(s)
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin socket unavailable: ops commands cannot reach this server");
            None
        }
    }
}
