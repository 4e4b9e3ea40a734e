use clap::Parser;
use outbox::cli::{Cli, Command, ConfigCommand};
use outbox::config::{self, RawSettings, Settings};
use std::process::ExitCode;

/// mimalloc: records are allocated on the HTTP threads and freed on the committer thread, a
/// pattern glibc's malloc handles poorly (intake benchmark: about 12% more acknowledged
/// submissions per second). Built with `no_thp`: with transparent huge pages each thread's
/// first segment became a 2 MiB page and the idle process held 49 MiB instead of 10 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for usage and environment errors (bad settings, data directory in use).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    outbox::alloc::return_freed_memory_at_once();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { settings } => serve(settings),
        Command::Config(ConfigCommand::Check { settings }) => config_check(settings),
        Command::Healthcheck { settings } => Ok(healthcheck(settings)),
        Command::Ops(cmd) => outbox::ops::commands::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("outbox: {}", outbox::ops::access::chain_text(&e));
            match e.downcast_ref::<outbox::store::engine::Unreachable>() {
                Some(_) => ExitCode::from(outbox::store::engine::Unreachable::EXIT_CODE),
                None => ExitCode::from(EXIT_USAGE),
            }
        }
    }
}

fn load(raw: &RawSettings) -> anyhow::Result<(config::Layers, Settings)> {
    let layers = raw.layers()?;
    let settings = Settings::from_layers(&layers)?;
    Ok((layers, settings))
}

fn config_check(raw: RawSettings) -> anyhow::Result<ExitCode> {
    let layers = raw.layers()?;
    print!("{}", config::render(&layers));
    let settings = Settings::from_layers(&layers)?;
    print!(
        "{}",
        outbox::intake::form_type::describe(&settings.form_rules)
    );
    // Last, so the verdict is not lost above the table: a mistyped variable is ignored by
    // the service, which for the dashboard URL means delivery is off.
    let unknown = config::env_check::unknown_in_env();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown
            .iter()
            .map(|u| format!("{}{}", u.name, u.hint()))
            .collect();
        anyhow::bail!(
            "unknown environment variable{} {}: the service ignores {}; remove or rename {}",
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" },
            if names.len() == 1 { "it" } else { "them" },
        );
    }
    println!("configuration ok");
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 when ready, 1 otherwise: container runtimes reserve other codes, so a bad setting
/// is reported as not healthy too.
fn healthcheck(raw: RawSettings) -> ExitCode {
    use outbox::healthcheck::{probe, target};
    let settings = match load(&raw) {
        Ok((_, s)) => s,
        Err(e) => {
            eprintln!("outbox healthcheck: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let addr = target(settings.listen, settings.admin_listen);
    match probe(addr) {
        Ok(a) if a.status == 200 => {
            println!("ready ({addr})");
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "outbox healthcheck: not ready ({addr} answered {}): {}",
                a.status, a.body
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("outbox healthcheck: no answer from http://{addr}/health/ready: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(raw: RawSettings) -> anyhow::Result<ExitCode> {
    let (_, settings) = load(&raw)?;
    outbox::telemetry::init(settings.log_format, &settings.log_level);
    for u in config::env_check::unknown_in_env() {
        tracing::warn!(
            variable = %u.name,
            closest = u.closest.as_deref().unwrap_or("(none)"),
            "unknown environment variable ignored"
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let signals = outbox::signals::install()?;
        let app = outbox::app::Application::build(settings).await?;
        // SIGHUP: new delivery credentials from the config file and secret files.
        outbox::delivery::reload_on(signals.reload, app.state().delivery.clone(), raw);
        app.run_until_stopped(signals.shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
