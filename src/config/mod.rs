//! Typed settings from four layers: defaults < TOML file (`--config`) < `OUTBOX_*`
//! environment < flags. [`spec::SPECS`] lists every setting once; [`RawSettings`] collects
//! the strings with where each came from, and [`Settings::from_layers`] parses and validates
//! them, naming the setting (and its source) in every error. [`reload`] reads them again
//! for SIGHUP.

pub mod env_check;
mod parse;
mod reader;
pub mod reload;
pub mod spec;
mod typed;

pub use parse::{boolean, duration, list, rate, size};
pub use typed::{DeliverySettings, LimitSettings, LogFormat, PgSettings, Settings};

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use spec::{env_name, file_key, Spec, SPECS};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl Source {
    pub fn describe(self, spec: &Spec) -> String {
        match self {
            Source::Default => "default".into(),
            Source::File => format!("config file key {}", file_key(spec.name)),
            Source::Env => format!("environment {}", env_name(spec.name)),
            Source::Flag => format!("flag --{}", spec.name),
        }
    }
}

/// Setting values from flags and environment (as clap parsed them) plus the config file path.
#[derive(Debug, Clone, Default)]
pub struct RawSettings {
    pub config: Option<PathBuf>,
    pub values: BTreeMap<&'static str, (String, Source)>,
}

impl FromArgMatches for RawSettings {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut raw = RawSettings {
            config: m.get_one::<PathBuf>("config").cloned(),
            ..Default::default()
        };
        raw.update_from_arg_matches(m)?;
        Ok(raw)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for spec in SPECS {
            if let Some(v) = m.get_one::<String>(spec.name) {
                let source = match m.value_source(spec.name) {
                    Some(ValueSource::EnvVariable) => Source::Env,
                    _ => Source::Flag,
                };
                self.values.insert(spec.name, (v.clone(), source));
            }
        }
        if let Some(c) = m.get_one::<PathBuf>("config") {
            self.config = Some(c.clone());
        }
        Ok(())
    }
}

impl Args for RawSettings {
    fn augment_args(mut cmd: Command) -> Command {
        cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .env("OUTBOX_CONFIG")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML file with settings (keys as the flags, with _ for -)"),
        );
        for spec in SPECS {
            let default = spec
                .default
                .filter(|d| !d.is_empty())
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            let mut arg = Arg::new(spec.name)
                .long(spec.name)
                .env(env_name(spec.name))
                .help(format!("{}{default}", spec.help))
                .hide_env_values(spec.secret)
                .action(ArgAction::Set);
            if spec.switch {
                arg = arg
                    .num_args(0..=1)
                    .default_missing_value("true")
                    .value_name("BOOL");
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The merged string values, one per setting, with their sources.
pub struct Layers {
    pub values: BTreeMap<&'static str, (String, Source)>,
    /// Structured file-only sections (e.g. `[[form_type_rules]]`).
    pub file_rules: Option<toml::Value>,
    /// `replace_builtin_form_type_rules = true` in the file: its rules replace the built-in
    /// ones instead of coming before them.
    pub replace_builtin_rules: bool,
}

/// File-only keys: structured values with no flag or variable.
pub const FILE_ONLY_KEYS: &[&str] = &["form_type_rules", "replace_builtin_form_type_rules"];

impl RawSettings {
    /// Merges defaults, the config file and the already-merged flags/env.
    pub fn layers(&self) -> anyhow::Result<Layers> {
        let mut values = BTreeMap::new();
        for spec in SPECS {
            if let Some(d) = spec.default {
                values.insert(spec.name, (d.to_owned(), Source::Default));
            }
        }
        let mut file_rules = None;
        let mut replace_builtin_rules = false;
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            for (key, value) in table {
                if key == "form_type_rules" {
                    file_rules = Some(value);
                    continue;
                }
                if key == "replace_builtin_form_type_rules" {
                    replace_builtin_rules = value.as_bool().with_context(|| {
                        format!(
                            "config file {}: replace_builtin_form_type_rules must be true or false",
                            path.display()
                        )
                    })?;
                    continue;
                }
                let Some(spec) = SPECS.iter().find(|s| file_key(s.name) == key) else {
                    let keys: Vec<String> = SPECS.iter().map(|s| file_key(s.name)).collect();
                    let near = env_check::closest(
                        &key,
                        keys.iter()
                            .map(String::as_str)
                            .chain(FILE_ONLY_KEYS.iter().copied()),
                    );
                    bail!(
                        "config file {}: unknown key {key:?}{} (keys are the flag names with _ for -, e.g. data_dir; see `outbox serve --help`)",
                        path.display(),
                        env_check::did_you_mean(near)
                    );
                };
                values.insert(spec.name, (toml_to_string(spec, &value)?, Source::File));
            }
        }
        for (name, v) in &self.values {
            values.insert(name, v.clone());
        }
        Ok(Layers {
            values,
            file_rules,
            replace_builtin_rules,
        })
    }
}

fn toml_to_string(spec: &Spec, v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| toml_to_string(spec, i))
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(","),
        toml::Value::Table(t) => t
            .iter()
            .map(|(k, v)| toml_to_string(spec, v).map(|v| format!("{k}={v}")))
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(","),
        toml::Value::Datetime(_) => bail!(
            "config file key {}: a date is not a valid value",
            file_key(spec.name)
        ),
    })
}

/// Renders the effective configuration for `outbox config check`, secrets masked.
pub fn render(layers: &Layers) -> String {
    let mut out = String::new();
    for spec in SPECS {
        let (value, source) = match layers.values.get(spec.name) {
            Some((v, s)) if spec.secret => (mask(v), *s),
            Some((v, s)) if spec.name == "store-url" => {
                (crate::store::postgres::config::masked_url(v), *s)
            }
            Some((v, s)) => (v.clone(), *s),
            None => ("(unset)".into(), Source::Default),
        };
        out.push_str(&format!(
            "{:<22} = {:<28} # {}\n",
            file_key(spec.name),
            value,
            source.describe(spec)
        ));
    }
    out
}

fn mask(secret: &str) -> String {
    if secret.is_empty() {
        "(empty)".into()
    } else {
        format!("******** ({} characters)", secret.chars().count())
    }
}
