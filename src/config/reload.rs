//! Reloading the configuration (SIGHUP): the settings `outbox serve` would start with now.
//!
//! A process's flags and environment never change after it started, so the values parsed
//! from them at start are kept, and what can change is read again exactly as at start: the
//! `--config` file and the secret files (`ingest-key-file`, `signing-secret-file`). Only the
//! delivery credentials are taken from a reload (see `crate::delivery::reload`); other
//! settings need a restart.
//!
//! So a key given as `OUTBOX_INGEST_KEY` (or a flag) cannot change on reload: only
//! `ingest-key-file`, `signing-secret-file` and the `--config` file can. [`Reloaded`] says
//! where the key comes from, so a reload that finds the same credentials can name what to
//! edit instead.

use super::{DeliverySettings, Layers, RawSettings, Settings, Source};
use anyhow::Context;

/// What a start now would use for delivery.
#[derive(Debug)]
pub struct Reloaded {
    pub delivery: DeliverySettings,
    /// What to edit to change the ingest key, for the operator.
    pub key_source: String,
}

/// Re-reads the configuration file and secret files on top of `raw`, the flags and
/// environment read at start.
pub fn reread(raw: &RawSettings) -> anyhow::Result<Reloaded> {
    let layers = raw.layers()?;
    let settings = Settings::from_layers(&layers)?;
    let delivery = settings
        .delivery
        .context("dashboard-url is no longer set; delivery settings other than credentials change only on restart")?;
    Ok(Reloaded {
        key_source: delivery.key_source.clone(),
        delivery,
    })
}

/// What to edit to change the ingest key, given where it comes from.
pub(super) fn key_origin(layers: &Layers) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(values: &[(&'static str, &str, Source)]) -> RawSettings {
        let mut raw = RawSettings::default();
        raw.values
            .insert("dashboard-url", ("http://127.0.0.1:9".into(), Source::Flag));
        for (name, value, source) in values {
            raw.values.insert(name, (value.to_string(), *source));
        }
        raw
    }

    #[test]
    fn a_reload_reads_the_key_file_again_and_names_it_as_what_to_edit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ingest-key");
        std::fs::write(&file, "first-key-0123456789\n").unwrap();
        let path = file.to_str().unwrap();
        let raw = raw(&[("ingest-key-file", path, Source::Flag)]);
        let first = reread(&raw).unwrap();
        assert_eq!(first.delivery.ingest_key, "first-key-0123456789");
        assert!(first.key_source.contains(path), "{}", first.key_source);
        std::fs::write(&file, "second-key-0123456789\n").unwrap();
        assert_eq!(
            reread(&raw).unwrap().delivery.ingest_key,
            "second-key-0123456789"
        );
    }

    #[test]
    fn a_key_from_the_environment_is_named_as_fixed_until_a_restart() {
        let raw = raw(&[("ingest-key", "env-key-0123456789", Source::Env)]);
        let r = reread(&raw).unwrap();
        assert_eq!(r.delivery.ingest_key, "env-key-0123456789");
        assert!(
            r.key_source.contains("OUTBOX_INGEST_KEY"),
            "{}",
            r.key_source
        );
    }
}
