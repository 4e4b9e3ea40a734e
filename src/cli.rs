//! Command-line interface. Settings flags come from [`crate::config::spec::SPECS`].

use crate::config::RawSettings;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "outbox",
    version,
    about = "Durable intake service for website forms"
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
    /// Operations on the outbox (inspect, replay, edit, verify, backup, restore, import, purge, top).
    #[command(flatten)]
    Ops(crate::ops::command::OpsCommand),
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
