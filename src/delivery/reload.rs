//! SIGHUP: re-read the command line, environment and config file exactly as at start, and
//! hand the new ingest key and signing secret to the worker. A pause for rejected
//! credentials ends at once. An invalid configuration is logged and the old credentials stay:
//! a typo in the file must not stop delivery. Other settings need a restart.

use super::{Credentials, DeliveryState};
use crate::cli::{Cli, Command};
use crate::config::Settings;
use anyhow::Context;
use clap::Parser;
use std::ffi::OsString;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The delivery credentials that `outbox <args>` would start with now.
pub fn credentials_from_args(
    args: impl IntoIterator<Item = OsString>,
) -> anyhow::Result<Credentials> {
    let cli = Cli::try_parse_from(args).context("command line")?;
    let Command::Serve { settings } = cli.command else {
        anyhow::bail!("not a serve command line");
    };
    let settings = Settings::from_layers(&settings.layers()?)?;
    let d = settings
        .delivery
        .context("dashboard-url is no longer set; delivery settings other than credentials change only on restart")?;
    Ok(Credentials {
        ingest_key: d.ingest_key,
        signing_secret: d.signing_secret,
    })
}

/// Applies one reload from `args`; returns whether new credentials were taken.
pub fn reload(state: &DeliveryState, args: impl IntoIterator<Item = OsString>) -> bool {
    if state.snapshot().mode == "off" {
        tracing::info!("reload: delivery is off (no dashboard-url at start); nothing to reload");
        return false;
    }
    match credentials_from_args(args) {
        Ok(creds) => {
            let changed = state.credentials().as_deref() != Some(&creds);
            let resumed = state.reload_credentials(creds);
            tracing::info!(changed, resumed, "reload: delivery credentials reloaded");
            true
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
