//! The CLI side of the admin channel: talk to the running server when one answers on the
//! socket, otherwise open the data directory directly, and say which path was taken.

use crate::ops::handler::{dispatch, OpsContext};
use crate::ops::progress::Bar;
use crate::ops::proto::{Reply, Request, SOCKET_NAME};
use crate::store::{Store, StoreError};
use anyhow::{bail, Context};
use serde_json::Value;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An open connection to a running server.
pub struct Connection {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    pub pid: u32,
}

/// Connects to `<data-dir>/admin.sock`. `Ok(None)` means no server listens there (no socket,
/// or a stale file left by a server that was killed).
pub fn connect(data_dir: &Path) -> anyhow::Result<Option<Connection>> {
    let path = data_dir.join(SOCKET_NAME);
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => bail!(
            "cannot connect to {}: permission denied; run this command as the user outbox runs as",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot connect to {}", path.display())),
    };
    let mut reader = BufReader::new(stream.try_clone()?);
    match read_reply(&mut reader)? {
        Reply::Hello { pid, .. } => Ok(Some(Connection {
            stream,
            reader,
            pid,
        })),
        other => bail!("the admin socket answered {other:?} instead of a greeting"),
    }
}

fn read_reply(reader: &mut BufReader<UnixStream>) -> anyhow::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("the server closed the admin connection without an answer; see its log");
    }
    serde_json::from_str(&line)
        .context("the server's answer is not understood (different outbox versions?)")
}

impl Connection {
    /// Sends one request and waits for its answer, reporting progress as it comes.
    pub fn call(mut self, req: &Request, bar: &Bar) -> anyhow::Result<Value> {
        let mut line = serde_json::to_vec(req).expect("requests serialize");
        line.push(b'\n');
        self.stream
            .write_all(&line)
            .context("sending the request to the server")?;
        loop {
            match read_reply(&mut self.reader)? {
                Reply::Progress { done, total } => bar.update(done, total),
                Reply::Ok(v) => return Ok(v),
                Reply::Error(e) => bail!("{e}"),
                Reply::Hello { .. } => bail!("unexpected second greeting from the server"),
            }
        }
    }
}

/// Which way a command reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
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

/// How long to wait for the socket of a server that holds the directory but does not answer
/// yet: a server opens the store first and binds its socket a moment later.
const STARTING_GRACE: Duration = Duration::from_secs(5);

pub enum Either {
    Server(Connection),
    Offline(Store),
}

/// The running server if one answers, else the directory opened here. A server that holds
/// the directory but has no socket yet is given [`STARTING_GRACE`] to bind it.
pub fn connect_or_open(dir: &Path) -> anyhow::Result<Either> {
    if let Some(conn) = connect(dir)? {
        return Ok(Either::Server(conn));
    }
    let deadline = Instant::now() + STARTING_GRACE;
    loop {
        match open_offline(dir) {
            Ok(store) => return Ok(Either::Offline(store)),
            Err(e) if e.is::<InUse>() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
                if let Some(conn) = connect(dir)? {
                    return Ok(Either::Server(conn));
                }
            }
            Err(e) => return Err(e),
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

/// Checks that `dir` is an existing data directory (ops commands never create one).
pub fn require_data_dir(dir: &Path) -> anyhow::Result<()> {
    if let Err(e) = std::fs::metadata(dir.join("db")) {
        let e = anyhow::Error::new(e).context(format!("cannot read {}", dir.display()));
        if let Some(hint) = crate::ops::access::permission_hint(dir, &e) {
            bail!("{}; {hint}", crate::ops::access::chain_text(&e));
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
        StoreError::InUse(_) => anyhow::Error::new(InUse {
            dir: dir.display().to_string(),
            socket: dir.join(SOCKET_NAME).display().to_string(),
        }),
        other => crate::ops::access::explain(
            dir,
            anyhow::Error::new(other).context(format!("cannot open {}", dir.display())),
        ),
    })
}

/// Runs `req` through the running server, or offline on the stopped directory. Prints the
/// path taken to stderr (stdout stays clean for `--json`).
pub fn run(dir: &Path, req: Request, label: &str) -> anyhow::Result<(Access, Value)> {
    let store = match connect_or_open(dir)? {
        Either::Server(conn) => {
            let access = Access::Server { pid: conn.pid };
            eprintln!("outbox: {access}");
            let bar = Bar::new(label);
            let out = conn.call(&req, &bar);
            bar.finish();
            return Ok((access, out?));
        }
        Either::Offline(store) => Arc::new(store),
    };
    eprintln!("outbox: {}", Access::Offline);
    let ctx = OpsContext {
        store: store.clone(),
        delivery: None,
        wake: None,
    };
    let bar = Bar::new(label);
    let out = dispatch(&ctx, req, &|done, total| bar.update(done, total));
    bar.finish();
    store.sync().context("syncing the data directory")?;
    Ok((Access::Offline, out?))
}
