//! SIGHUP: re-read the command line, environment, config file and secret files exactly as at
//! start, and hand the new ingest key and signing secret to the worker. A pause for rejected
//! credentials ends at once. An invalid configuration is logged and the old credentials stay:
//! a typo in the file must not stop delivery. Other settings need a restart.
//!
//! A process's environment never changes after it started, so a key given as
//! `OUTBOX_INGEST_KEY` (or a flag) cannot change on reload: only `ingest-key-file`,
//! `signing-secret-file` and the `--config` file can. A reload that finds the same
//! credentials says so at WARN, naming where the key comes from and what to edit instead.

use super::{Credentials, DeliveryState};
use crate::cli::{Cli, Command};
use crate::config::{Layers, Settings, Source};
use anyhow::Context;
use clap::Parser;
use std::ffi::OsString;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The delivery credentials that `outbox <args>` would start with now, and where the ingest
/// key comes from (for the operator: what to edit so that a reload changes it).
pub fn credentials_from_args(
    args: impl IntoIterator<Item = OsString>,
) -> anyhow::Result<(Credentials, String)> {
    let cli = Cli::try_parse_from(args).context("command line")?;
    let Command::Serve { settings } = cli.command else {
        anyhow::bail!("not a serve command line");
    };
    let layers = settings.layers()?;
    let origin = key_origin(&layers);
    let settings = Settings::from_layers(&layers)?;
    let d = settings
        .delivery
        .context("dashboard-url is no longer set; delivery settings other than credentials change only on restart")?;
    let creds = Credentials {
        ingest_key: d.ingest_key,
        signing_secret: d.signing_secret,
    };
    Ok((creds, origin))
}

/// What to edit to change the ingest key, given where it comes from.
fn key_origin(layers: &Layers) -> String {
    let find = |name: &str| {
        layers
            .values
            .get(name)
            .filter(|(v, _)| !v.trim().is_empty())
    };
    match (find("ingest-key-file"), find("ingest-key")) {
        (Some((path, _)), _) => format!("the file {path} (ingest-key-file): write the new key there, then reload"),
        (None, Some((_, Source::File))) => "the config file (ingest_key): change it there, then reload".into(),
        (None, Some((_, Source::Env))) => "the environment variable OUTBOX_INGEST_KEY, which cannot change in a running process: put the key in a file named by OUTBOX_INGEST_KEY_FILE and restart once; later rotations are a file edit and a reload".into(),
        _ => "the command line, which cannot change in a running process: pass --ingest-key-file and restart once; later rotations are a file edit and a reload".into(),
    }
}

/// Applies one reload from `args`; returns whether new credentials were taken.
pub fn reload(state: &DeliveryState, args: impl IntoIterator<Item = OsString>) -> bool {
    if state.mode() == super::Mode::Off {
        tracing::info!("reload: delivery is off (no dashboard-url at start); nothing to reload");
        return false;
    }
    match credentials_from_args(args) {
        Ok((creds, origin)) => {
            let changed = state.credentials().as_deref() != Some(&creds);
            let resumed = state.reload_credentials(creds);
            if changed {
                tracing::info!(resumed, "reload: delivery credentials reloaded");
            } else {
                tracing::warn!(
                    resumed,
                    key_source = %origin,
                    "reload: the delivery credentials did not change"
                );
            }
            changed
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reload: the configuration is invalid; keeping the current credentials"
            );
            false
        }
    }
}

/// Reloads credentials on every event from `events` (the SIGHUP channel) until it closes.
pub fn spawn(
    mut events: mpsc::UnboundedReceiver<()>,
    state: Arc<DeliveryState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while events.recv().await.is_some() {
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&st, std::env::args_os())).await;
        }
    })
}
