//! Command-line interface. Settings flags come from [`crate::config::spec::SPECS`].

use crate::config::RawSettings;
use clap::{Parser, Subcommand};

/// The description `outbox --help` (and the man page) opens with.
const LONG_ABOUT: &str = "\
Durable intake service for website forms.

`outbox serve` answers POST /api/collect: each submission is committed to an embedded store in \
the data directory and fsynced before the answer (202 with a trace ID), then delivered to the \
dashboard (--dashboard-url) in the background, at least once, with retries, a circuit breaker \
and a dead-letter lane. The other subcommands inspect and repair the store: they talk to the \
running server over DATA_DIR/admin.sock, or open the directory when no server runs.

Every setting is a flag, an OUTBOX_* environment variable, or a key of the TOML file given \
with --config; precedence is flag > environment > file > default. `outbox serve --help` lists \
them all, `outbox config check` prints the effective values.";

/// FILES, EXIT STATUS and SEE ALSO, after the list of subcommands.
const AFTER_HELP: &str = "\
Files (as installed by the Debian package):
  /usr/bin/outbox                   this program
  /etc/outbox/outbox.env            settings (OUTBOX_*=value lines), read by the systemd unit
  /usr/lib/systemd/system/outbox.service  the systemd unit: user outbox, data in /var/lib/outbox
  /var/lib/outbox                   data directory: the store, admin.sock (mode 0600)
  /usr/share/doc/outbox/RUNBOOK.md  what to do when an alert fires

Exit status:
  0  ok
  1  problems found (verify found damage, import skipped files, replay refused records),
     or, for healthcheck, the server is not ready or does not answer
  2  usage or environment error, with a message saying what to fix (systemd does not
     restart the service for it)

Examples:
  outbox serve --dashboard-url https://admin.example.com --ingest-key \"$KEY\"
  sudo -u outbox outbox inspect --data-dir /var/lib/outbox
  sudo -u outbox outbox replay --dead --since 2h --data-dir /var/lib/outbox
  outbox healthcheck            # exit 0 when GET /health/ready answers 200

See also: README.md (API, delivery contract, configuration reference), RUNBOOK.md.";

#[derive(Debug, Parser)]
#[command(
    name = "outbox",
    version,
    about = "Durable intake service for website forms",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: intake on --listen, delivery to --dashboard-url.
    Serve {
        #[command(flatten)]
        settings: RawSettings,
    },
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 if the server answers GET /health/ready with 200, else 1 (for container healthchecks).
    ///
    /// The address is the one the server reads from the same settings: --admin-listen when
    /// set, else --listen (a wildcard address is reached on loopback).
    Healthcheck {
        #[command(flatten)]
        settings: RawSettings,
    },
    /// Operations on the outbox (inspect, replay, edit, verify, backup, restore, import, purge, top).
    #[command(flatten)]
    Ops(crate::ops::commands::OpsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets masked) and check it; exit 2 if it is invalid.
    Check {
        #[command(flatten)]
        settings: RawSettings,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
