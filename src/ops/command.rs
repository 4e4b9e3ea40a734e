//! The ops subcommands' arguments (clap). Every one takes `--data-dir` (or
//! `OUTBOX_DATA_DIR`, or `data_dir` from the `--config` file; default `./data`).

use crate::config::spec::default_of;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Data directory [default: data_dir from --config, else ./data]
    #[arg(long, env = "OUTBOX_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file of the service (only its data_dir is read)
    #[arg(long, env = "OUTBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Target {
    /// Flag or environment, else the config file's `data_dir`, else `./data`.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        if let Some(path) = &self.config {
            return data_dir_from_config(path)
                .map(|d| d.unwrap_or_else(|| default_of("data-dir").into()));
        }
        Ok(PathBuf::from(default_of("data-dir")))
    }
}

impl Target {
    /// The service's idempotency window as the service would read it: `OUTBOX_IDEMPOTENCY_WINDOW`,
    /// else `idempotency_window` of the `--config` file, else the default.
    pub fn idempotency_window(&self) -> anyhow::Result<std::time::Duration> {
        let spec = crate::config::spec::find("idempotency-window").expect("a setting");
        let from_file = match &self.config {
            Some(path) => match config_table(path)?.get("idempotency_window") {
                Some(toml::Value::String(s)) => Some(s.clone()),
                Some(_) => anyhow::bail!(
                    "config file {}: idempotency_window must be a string like \"24h\"",
                    path.display()
                ),
                None => None,
            },
            None => None,
        };
        let value = std::env::var("OUTBOX_IDEMPOTENCY_WINDOW")
            .ok()
            .or(from_file)
            .unwrap_or_else(|| spec.default.expect("has a default").to_owned());
        crate::config::duration(&value)
            .map_err(|e| anyhow::anyhow!("invalid setting idempotency-window: {e}"))
    }
}

fn config_table(path: &Path) -> anyhow::Result<toml::Table> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))
}

fn data_dir_from_config(path: &Path) -> anyhow::Result<Option<PathBuf>> {
    let table = config_table(path)?;
    match table.get("data_dir") {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(PathBuf::from(s))),
        Some(_) => anyhow::bail!("config file {}: data_dir must be a string", path.display()),
    }
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Show counts, ages and delivery state; `--list` a table; or one record in full.
    Inspect(InspectArgs),
    /// Send records back to the delivery queue (they keep their trace ID, attempt 0).
    Replay(ReplayArgs),
    /// Correct a pending record's or a dead letter's payload (opens $EDITOR).
    Edit(EditArgs),
    /// Check the store's indexes and accounting; exit 1 if anything is wrong.
    Verify(VerifyArgs),
    /// Write a consistent copy of the data directory to DEST (server running or not).
    Backup(BackupArgs),
    /// Put a backup in place as the data directory (the server must be stopped).
    Restore(RestoreArgs),
    /// Import the old proxy's pending_submissions/*.json files as pending records.
    ImportLegacy(ImportArgs),
    /// Drop old delivered tombstones, or erase everything about one email address.
    Purge(PurgeArgs),
    /// Live view of a running server: rates, depth, oldest pending, delivery state.
    Top(TopArgs),
    /// Give disk space back: rewrite the stopped store into a fresh directory and swap it in.
    Compact(crate::ops::compact::CompactArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub target: Target,
    /// Show this record in full (a unique prefix of its trace ID is enough)
    pub trace_id: Option<String>,
    /// List records instead of the summary
    #[arg(long, conflicts_with = "trace_id")]
    pub list: bool,
    /// With --list: pending, in_flight, delivered, dead or quarantined
    #[arg(long, requires = "list")]
    pub status: Option<String>,
    /// With --list: only this form type
    #[arg(long, requires = "list")]
    pub form_type: Option<String>,
    /// With --list: received (by this store: imported, replayed) since a time (RFC 3339, YYYY-MM-DD) or an age (2h, 7d)
    #[arg(long, requires = "list")]
    pub since: Option<String>,
    /// With --list: at most this many rows, newest first
    #[arg(long, default_value_t = 50, requires = "list")]
    pub limit: usize,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub target: Target,
    /// Trace IDs (or unique prefixes) to replay
    pub trace_ids: Vec<String>,
    /// Replay dead letters (all of them, or those the filters select)
    #[arg(long)]
    pub dead: bool,
    /// With --dead: died at or after this time (RFC 3339, YYYY-MM-DD) or age (2h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// With --dead: died before this time or age
    #[arg(long)]
    pub until: Option<String>,
    /// With --dead: only this form type
    #[arg(long)]
    pub form_type: Option<String>,
    /// With --dead: only those the dashboard last answered with this HTTP status
    #[arg(long)]
    pub status_code: Option<u16>,
    /// List what would be replayed, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also replay delivered records
    #[arg(long)]
    pub force: bool,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    #[command(flatten)]
    pub target: Target,
    /// The record's trace ID (or a unique prefix of it)
    pub trace_id: String,
    /// Take the new payload (a JSON object) from FILE instead of opening $EDITOR
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// Why, for the audit trail
    #[arg(long)]
    pub note: Option<String>,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Rebuild the indexes and counters; quarantine records that do not decode
    #[arg(long)]
    pub repair: bool,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: Target,
    /// New or empty directory for the backup; it works as a --data-dir afterwards
    pub dest: PathBuf,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub target: Target,
    /// A directory written by `outbox backup`
    pub src: PathBuf,
    /// Replace a non-empty data directory (its contents are moved aside, not deleted)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub target: Target,
    /// The old proxy's pending_submissions directory
    pub dir: PathBuf,
    /// Report what would be imported, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Move imported files (and files already imported before) to DIR/imported/
    #[arg(long = "move")]
    pub move_files: bool,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Drop delivered tombstones delivered before this time (RFC 3339 or YYYY-MM-DD)
    #[arg(long, conflicts_with = "older_than")]
    pub before: Option<String>,
    /// Drop delivered tombstones older than this age (e.g. 30d)
    #[arg(long)]
    pub older_than: Option<String>,
    /// Erase every record, dead letters included, holding this address (any case)
    #[arg(long, value_name = "ADDRESS")]
    pub erase_email: Option<String>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// Also drop tombstones still inside the idempotency window (a late duplicate of one of
    /// those would be stored and delivered again)
    #[arg(long)]
    pub force: bool,
    /// Count what would go, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds between refreshes
    #[arg(long, default_value_t = 1)]
    pub interval: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_comes_from_the_flag_else_the_config_file_else_the_default() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("outbox.toml");
        std::fs::write(
            &file,
            "data_dir = \"/var/lib/outbox\"\nlisten = \"127.0.0.1:8001\"\n",
        )
        .unwrap();
        let t = |data_dir: Option<&str>, config: Option<&Path>| Target {
            data_dir: data_dir.map(PathBuf::from),
            config: config.map(Path::to_path_buf),
        };
        assert_eq!(
            t(Some("/d"), Some(&file)).dir().unwrap(),
            PathBuf::from("/d")
        );
        assert_eq!(
            t(None, Some(&file)).dir().unwrap(),
            PathBuf::from("/var/lib/outbox")
        );
        assert_eq!(t(None, None).dir().unwrap(), PathBuf::from("./data"));
        std::fs::write(&file, "listen = \"127.0.0.1:8001\"\n").unwrap();
        assert_eq!(t(None, Some(&file)).dir().unwrap(), PathBuf::from("./data"));
        let missing = t(None, Some(&tmp.path().join("nope.toml")))
            .dir()
            .unwrap_err();
        assert!(format!("{missing:#}").contains("cannot read config file"));
    }
}
