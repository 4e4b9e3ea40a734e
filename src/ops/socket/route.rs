//! The one place that decides how a command reaches the store: through the running server
//! when one answers on the admin socket, else by opening the stopped directory itself. It
//! says which on stderr (`outbox: via the running server, pid 1234` or `outbox: offline`);
//! stdout stays clean for `--json`.
//!
//! [`call`] runs an operation either way. A command whose offline path is not "open the
//! store" (backup copies the stopped directory's files) passes its own opener to [`route`].
//! [`Place`] puts the PostgreSQL store beside the two: with a store URL set, the command
//! opens it itself (`outbox: PostgreSQL store postgres://...`) and never asks a server.

use crate::ops::access::{chain_text, permission_hint};
use crate::ops::operation::{Operation, OpsContext};
use crate::ops::progress::with_bar;
use crate::ops::shared::Shared;
use crate::ops::socket::client::{connect, Connection};
use crate::ops::socket::protocol::SOCKET_NAME;
use crate::ops::target::Target;
use crate::store::{Store, StoreError};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long to wait for the socket of a server that holds the directory but does not answer
/// yet: a server opens the store first and binds its socket a moment later.
const STARTING_GRACE: Duration = Duration::from_secs(5);

/// Which way a command reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Server { pid: u32 },
    Offline,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Server { pid } => write!(f, "via the running server, pid {pid}"),
            Access::Offline => write!(f, "offline"),
        }
    }
}

/// The running server, or what the command's opener made of the stopped directory.
pub enum Route<T> {
    Server(Connection),
    Offline(T),
}

/// Refuses when a server answers on `dir`'s socket, with `advice` (for commands that need the
/// directory stopped).
pub fn refuse_if_served(dir: &Path, advice: &str) -> anyhow::Result<()> {
    match connect(dir)? {
        Some(conn) => bail!(
            "a server is running on {} (pid {}); {advice}",
            dir.display(),
            conn.pid
        ),
        None => Ok(()),
    }
}

/// The running server if one answers, else `open(dir)`. A server that holds the directory
/// but has no socket yet (`open` fails with [`InUse`]) is given [`STARTING_GRACE`] to bind
/// it. Prints the way taken.
pub fn route<T>(dir: &Path, open: impl Fn(&Path) -> anyhow::Result<T>) -> anyhow::Result<Route<T>> {
    let route = choose(dir, open)?;
    let access = match &route {
        Route::Server(conn) => Access::Server { pid: conn.pid },
        Route::Offline(_) => Access::Offline,
    };
    eprintln!("outbox: {access}");
    Ok(route)
}

fn choose<T>(dir: &Path, open: impl Fn(&Path) -> anyhow::Result<T>) -> anyhow::Result<Route<T>> {
    if let Some(conn) = connect(dir)? {
        return Ok(Route::Server(conn));
    }
    let deadline = Instant::now() + STARTING_GRACE;
    loop {
        match open(dir) {
            Ok(t) => return Ok(Route::Offline(t)),
            Err(e) if e.is::<InUse>() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
                if let Some(conn) = connect(dir)? {
                    return Ok(Route::Server(conn));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `q` through the running server, or offline on the stopped directory, with a
/// progress bar labelled `label`.
pub fn call<Q: Operation>(dir: &Path, q: Q, label: &str) -> anyhow::Result<Q::Output> {
    match route(dir, open_offline)? {
        Route::Server(conn) => with_bar(label, |progress| conn.call(&q, progress)),
        Route::Offline(store) => {
            let ctx = OpsContext::offline(Arc::new(store));
            let out = with_bar(label, |progress| q.run(&ctx, progress));
            ctx.store.sync().context("syncing the data directory")?;
            out
        }
    }
}

/// The store a command works on, as its [`Target`] names it.
pub enum Place {
    /// The embedded store's data directory: through its running server, else offline.
    Directory(PathBuf),
    /// The PostgreSQL store, opened by the command (it is shared: no server is asked).
    Shared(Shared),
}

impl Place {
    /// The PostgreSQL store when a store URL is set (opened now, and said on stderr), else
    /// the data directory.
    pub fn of(target: &Target) -> anyhow::Result<Place> {
        match target.store()? {
            Some(pg) => {
                let shared = Shared::open(&pg)?;
                eprintln!("outbox: PostgreSQL store {}", shared.location);
                Ok(Place::Shared(shared))
            }
            None => Ok(Place::Directory(target.dir()?)),
        }
    }

    /// Refuses the PostgreSQL store for a command that only the embedded store needs:
    /// `what` says which of PostgreSQL's own tools do that job. Exit 2, as every usage
    /// error. Decided from the settings alone, before any connection.
    pub fn require_directory(target: &Target, what: &str) -> anyhow::Result<PathBuf> {
        if let Some(pg) = target.store()? {
            bail!(
                "the store is PostgreSQL ({}): {what}",
                crate::store::postgres::config::masked_url(&pg.options.url)
            );
        }
        target.dir()
    }

    /// Runs `q` on this store (see [`call`] for the data directory), with a progress bar
    /// labelled `label`.
    pub fn call<Q: Operation>(&self, q: Q, label: &str) -> anyhow::Result<Q::Output> {
        match self {
            Place::Directory(dir) => call(dir, q, label),
            Place::Shared(shared) => with_bar(label, |progress| q.run_shared(shared, progress)),
        }
    }

    /// The data directory, for the embedded store.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Place::Directory(d) => Some(d),
            Place::Shared(_) => None,
        }
    }
}

/// The directory is locked by a server that does not answer on its socket.
#[derive(Debug, thiserror::Error)]
#[error("a server is running on {dir} but its admin socket {socket} does not answer; wait until it has started, or check that it runs this outbox version")]
pub struct InUse {
    dir: String,
    socket: String,
}

impl InUse {
    pub fn at(dir: &Path) -> InUse {
        InUse {
            dir: dir.display().to_string(),
            socket: dir.join(SOCKET_NAME).display().to_string(),
        }
    }
}

/// Checks that `dir` is an existing data directory (ops commands never create one).
pub fn require_data_dir(dir: &Path) -> anyhow::Result<()> {
    if let Err(e) = std::fs::metadata(dir.join("db")) {
        let e = anyhow::Error::new(e).context(format!("cannot read {}", dir.display()));
        if let Some(hint) = permission_hint(dir, &e) {
            bail!("{}; {hint}", chain_text(&e));
        }
    }
    if !dir.join("db").is_file() {
        bail!(
            "no outbox data directory at {} (no db file in it): if that is the wrong place, pass the right --data-dir, OUTBOX_DATA_DIR or --config; a new one is made by `outbox serve --data-dir {0}` or `outbox import-legacy DIR --data-dir {0}`",
            dir.display()
        );
    }
    Ok(())
}

/// Opens a stopped data directory, with a clear error when a server holds it but did not
/// answer on its socket.
pub fn open_offline(dir: &Path) -> anyhow::Result<Store> {
    require_data_dir(dir)?;
    Store::open(dir).map_err(|e| match e {
        StoreError::InUse(_) => anyhow::Error::new(InUse::at(dir)),
        other => explain(
            dir,
            anyhow::Error::new(other).context(format!("cannot open {}", dir.display())),
        ),
    })
}

/// An error from opening the store in `dir`, with the ownership hint, or the pid of the
/// server holding the directory, after its message.
pub fn explain(dir: &Path, e: anyhow::Error) -> anyhow::Error {
    if let Some(hint) = permission_hint(dir, &e) {
        return anyhow::anyhow!("{}; {hint}", chain_text(&e));
    }
    let in_use = matches!(e.downcast_ref::<StoreError>(), Some(StoreError::InUse(_)));
    if in_use {
        if let Ok(Some(conn)) = connect(dir) {
            return anyhow::anyhow!(
                "{}; it is held by outbox pid {} (its admin socket answers)",
                chain_text(&e),
                conn.pid
            );
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_directory_held_by_a_server_without_its_socket_yet_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let tries = Cell::new(0);
        let open = |d: &Path| {
            tries.set(tries.get() + 1);
            match tries.get() {
                1 | 2 => Err(InUse::at(d).into()),
                _ => Ok("opened"),
            }
        };
        assert!(matches!(
            choose(dir.path(), open).unwrap(),
            Route::Offline("opened")
        ));
        assert_eq!(tries.get(), 3);
        let other = choose(dir.path(), |_| -> anyhow::Result<()> { bail!("no db") });
        assert!(other.is_err(), "other errors are not retried");
    }
}
