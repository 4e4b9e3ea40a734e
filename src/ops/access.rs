//! Data directory errors for people: a refused open says who owns the directory, its mode
//! and which user outbox runs as (the usual cause: a command run as root or as the wrong
//! user), and an error's causes are printed once each. (A directory held by a running server
//! names that server's pid: [`crate::ops::socket::route::explain`].)

use crate::store::StoreError;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether `e` (or a cause of it) is a permission error.
fn is_permission(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = c
            .downcast_ref::<std::io::Error>()
            .or(match c.downcast_ref::<StoreError>() {
                Some(StoreError::Prepare { source, .. }) => Some(source),
                Some(StoreError::Sled(sled::Error::Io(io))) => Some(io),
                _ => None,
            });
        io.is_some_and(|io| {
            io.kind() == std::io::ErrorKind::PermissionDenied || io.raw_os_error() == Some(1)
        })
    })
}

/// `dir is owned by uid 998 (mode 0700) and outbox runs as uid 1000: ...`, about `dir` or
/// its nearest existing parent; `None` unless `e` is a permission error.
pub fn permission_hint(dir: &Path, e: &anyhow::Error) -> Option<String> {
    if !is_permission(e) {
        return None;
    }
    // The owner of /proc/self is the process's effective uid.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    let existing = dir.ancestors().find(|p| p.symlink_metadata().is_ok())?;
    let m = existing.metadata().ok()?;
    Some(format!(
        "{} is owned by uid {} (mode {:04o}) and outbox runs as uid {me}: run the command as the user that owns it (e.g. sudo -u outbox), or fix the ownership",
        existing.display(),
        m.uid(),
        m.mode() & 0o7777,
    ))
}

/// An error's message and its causes joined by `: `, each cause once: a cause whose text
/// the message before it already holds is not repeated.
pub fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let text = c.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(1);
        let e = anyhow::Error::new(StoreError::Prepare {
            path: "/srv/data".into(),
            source: io,
        });
        let text = chain_text(&e);
        assert_eq!(text.matches("Operation not permitted").count(), 1, "{text}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain_text(&e), "outer: inner");
    }
}
