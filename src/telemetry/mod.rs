//! What the service tells its operators: logs ([`init`]: JSON lines when stdout is not a
//! terminal, as for journald and files; readable text on one) and metrics ([`metrics`]: the
//! table of every exported name and the process-wide recorder; [`known_series`]: the
//! series that exist from the start, at 0).

pub mod known_series;
pub mod metrics;

use crate::config::spec::default_of;
use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat, level: &str) {
    let filter =
        EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new(default_of("log-level")));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
