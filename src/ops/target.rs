//! Which store an ops command works on: every command flattens [`Target`] into its
//! arguments, so each takes `--data-dir` (or `OUTBOX_DATA_DIR`, or `data_dir` from the
//! `--config` file; default `./data`) and `--store-url` (or `OUTBOX_STORE_URL`, or
//! `store_url` from the `--config` file). A store URL, wherever it comes from, means the
//! PostgreSQL store, read with the service's own rules (password file included), and the
//! data directory is not used.

use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Data directory [default: data_dir from --config, else ./data]
    #[arg(long, env = "OUTBOX_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file of the service (only its data_dir, idempotency_window and store_* keys are read)
    #[arg(long, env = "OUTBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PostgreSQL store shared by several instances, as for `outbox serve` (or OUTBOX_STORE_URL, or store_url from --config) [default: the embedded store in the data directory]
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
    /// File holding the store-url user's password (or OUTBOX_STORE_PASSWORD_FILE, or store_password_file from --config)
    #[arg(long, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
}

impl Target {
    /// Flag or environment, else the config file's `data_dir`, else `./data`.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        if let Some(path) = &self.config {
            return data_dir_from_config(path).map(|d| d.unwrap_or_else(|| "./data".into()));
        }
        Ok(PathBuf::from("./data"))
    }
}

impl Target {
    /// The PostgreSQL store's settings when a store URL is set (flag, `OUTBOX_STORE_*`
    /// environment or the `--config` file's `store_*` keys, in the service's order of
    /// precedence), else `None`: the embedded store in [`Target::dir`]. Only the store
    /// settings of the file are read, as only its `data_dir` is for the embedded store.
    pub fn store(&self) -> anyhow::Result<Option<crate::config::PgSettings>> {
        use crate::config::spec::{env_name, file_key, SPECS};
        use crate::config::{Layers, Settings, Source};
        let specs = || SPECS.iter().filter(|s| s.name.starts_with("store-"));
        let mut values = std::collections::BTreeMap::new();
        for spec in specs() {
            if let Some(d) = spec.default {
                values.insert(spec.name, (d.to_owned(), Source::Default));
            }
        }
        if let Some(path) = &self.config {
            let table = config_table(path)?;
            for spec in specs() {
                let value = match table.get(&file_key(spec.name)) {
                    None => continue,
                    Some(toml::Value::String(v)) => v.clone(),
                    Some(toml::Value::Integer(v)) => v.to_string(),
                    Some(toml::Value::Boolean(v)) => v.to_string(),
                    Some(_) => anyhow::bail!(
                        "config file {}: {} must be a string, a number or true/false",
                        path.display(),
                        file_key(spec.name)
                    ),
                };
                values.insert(spec.name, (value, Source::File));
            }
        }
        for spec in specs() {
            if let Ok(v) = std::env::var(env_name(spec.name)) {
                values.insert(spec.name, (v, Source::Env));
            }
        }
        if let Some(url) = &self.store_url {
            values.insert("store-url", (url.clone(), Source::Flag));
        }
        if let Some(file) = &self.store_password_file {
            let file = file.display().to_string();
            values.insert("store-password-file", (file, Source::Flag));
        }
        Settings::store_only(&Layers {
            values,
            file_rules: None,
            replace_builtin_rules: false,
        })
    }

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
            store_url: None,
            store_password_file: None,
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

    /// The flag outranks the config file, the password file is read as the service reads
    /// it, and the file's other keys are not the command's business. (The environment's
    /// place between flag and file is tested through the binary.)
    #[test]
    fn the_store_url_comes_from_the_flag_else_the_config_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (file, secret) = (tmp.path().join("outbox.toml"), tmp.path().join("pw"));
        std::fs::write(&secret, "s3cret\n").unwrap();
        let toml = format!(
            "store_url = \"postgres://outbox@db1/outbox\"\nstore_password_file = {:?}\na_newer_release_key = 1\n",
            secret.display().to_string()
        );
        std::fs::write(&file, toml).unwrap();
        let t = |url: Option<&str>, config: Option<&Path>| Target {
            data_dir: None,
            config: config.map(Path::to_path_buf),
            store_url: url.map(String::from),
            store_password_file: None,
        };
        if std::env::vars().any(|(k, _)| k.starts_with("OUTBOX_STORE_")) {
            eprintln!("SKIP: OUTBOX_STORE_* is set in this environment");
            return;
        }
        let from_file = t(None, Some(&file)).store().unwrap().expect("a store");
        assert_eq!(from_file.options.url, "postgres://outbox@db1/outbox");
        assert_eq!(from_file.options.password.as_deref(), Some("s3cret"));
        let flag = t(Some("postgres://ops@db2/outbox"), Some(&file));
        assert_eq!(
            flag.store().unwrap().unwrap().options.url,
            "postgres://ops@db2/outbox"
        );
        assert!(
            t(None, None).store().unwrap().is_none(),
            "the embedded store"
        );
    }
}
