//! Looking up one setting in the merged layers and parsing it, with errors that name the
//! setting and where its value came from; secrets given as files are read here.

use super::spec::{find, Spec};
use super::{Layers, Source};
use anyhow::{anyhow, bail};

/// Looks up and parses one setting, naming it and its source on failure.
pub(super) struct Reader<'a>(pub(super) &'a Layers);

impl Reader<'_> {
    pub(super) fn raw(&self, name: &str) -> Option<(&str, Source, &'static Spec)> {
        let spec = find(name).unwrap_or_else(|| panic!("setting {name} is not in SPECS"));
        self.0
            .values
            .get(spec.name)
            .map(|(v, s)| (v.as_str(), *s, spec))
    }

    pub(super) fn opt<T>(
        &self,
        name: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<Option<T>> {
        match self.raw(name) {
            None => Ok(None),
            Some((v, _, _)) if v.trim().is_empty() => Ok(None),
            Some((v, source, spec)) => f(v).map(Some).map_err(|e| {
                let shown = if spec.secret {
                    "(secret)".to_string()
                } else {
                    format!("{v:?}")
                };
                anyhow!(
                    "invalid setting {} = {shown} (from {}): {e}",
                    spec.name,
                    source.describe(spec)
                )
            }),
        }
    }

    pub(super) fn req<T>(
        &self,
        name: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<T> {
        self.opt(name, f)?
            .ok_or_else(|| anyhow!("setting {name} must not be empty"))
    }

    /// A secret given directly (`name`) or as a file (`name-file`, read now: a reload reads
    /// it again). The file's content without its trailing newline is the secret.
    pub(super) fn secret(&self, name: &str) -> anyhow::Result<Option<String>> {
        let file_setting = format!("{name}-file");
        let direct = self.string(name);
        let Some(path) = self.string(&file_setting) else {
            return Ok(direct);
        };
        let (_, file_source, file_spec) = self.raw(&file_setting).expect("set");
        if direct.is_some() {
            let (_, source, spec) = self.raw(name).expect("set");
            bail!(
                "settings {name} ({}) and {file_setting} ({}) are both set: keep only one (the file, to rotate the secret with a reload)",
                source.describe(spec),
                file_source.describe(file_spec)
            );
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow!(
                "invalid setting {file_setting} = {path:?} (from {}): cannot read it ({e}); it must be readable by the user outbox runs as",
                file_source.describe(file_spec)
            )
        })?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.trim().is_empty() {
            bail!(
                "invalid setting {file_setting} = {path:?} (from {}): the file is empty",
                file_source.describe(file_spec)
            );
        }
        Ok(Some(value.to_owned()))
    }

    /// The value, or the setting's default when it is empty.
    pub(super) fn string_or_default(&self, name: &str) -> String {
        self.string(name)
            .unwrap_or_else(|| super::spec::default_of(name).to_owned())
    }

    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.raw(name)
            .map(|(v, _, _)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}
