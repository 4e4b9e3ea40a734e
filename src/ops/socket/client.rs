//! The CLI side of the admin channel: connect to `<data-dir>/admin.sock`, send one request,
//! follow its progress, return its answer. Whether to use it is [`super::route`]'s choice.

use crate::ops::operation::{Operation, Progress};
use crate::ops::socket::protocol::{Reply, Request, SOCKET_NAME};
use anyhow::{bail, Context};
use serde_json::Value;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

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
    /// Runs `q` on the server and waits for its answer, reporting progress as it comes.
    pub fn call<Q: Operation>(self, q: &Q, progress: Progress) -> anyhow::Result<Q::Output> {
        let out = self.send(&Request::of(q), progress)?;
        serde_json::from_value(out)
            .context("the server's answer has an unexpected shape (different outbox versions?)")
    }

    fn send(mut self, req: &Request, progress: Progress) -> anyhow::Result<Value> {
        let mut line = serde_json::to_vec(req).expect("requests serialize");
        line.push(b'\n');
        self.stream
            .write_all(&line)
            .context("sending the request to the server")?;
        loop {
            match read_reply(&mut self.reader)? {
                Reply::Progress { done, total } => progress(done, total),
                Reply::Ok(v) => return Ok(v),
                Reply::Error(e) => bail!("{e}"),
                Reply::Hello { .. } => bail!("unexpected second greeting from the server"),
            }
        }
    }
}
