//! Unknown `OUTBOX_*` environment variables. clap reads only the variables it knows, so a
//! typo (`OUTBOX_DASHBORD_URL`) would otherwise be ignored in silence and, for the dashboard
//! URL, turn delivery off. `serve` logs a warning for each and `config check` prints one,
//! naming the closest known variable, and `config check` fails on them, as unknown keys of
//! the TOML file are refused. [`closest`] also names the key meant by an unknown TOML key.

use super::spec::{env_name, SPECS};

/// Variables outside the settings table that outbox, its scripts or its tests and
/// benchmarks read: never reported as typos.
const OTHER_KNOWN: &[&str] = &[
    "OUTBOX_CONFIG",
    // ops/backup.sh, which an operator may run with the service's environment.
    "OUTBOX_BACKUP_ROOT",
    "OUTBOX_BACKUP_KEEP_DAYS",
    "OUTBOX_BIN",
    // Tests, benchmarks and build scripts.
    "OUTBOX_SOAK",
    "OUTBOX_SOAK_SECS",
    "OUTBOX_UPDATE_ASSETS",
    "OUTBOX_WRITE_GOLDEN",
    "OUTBOX_RESOURCE_SIZES",
    "OUTBOX_BENCH_OUTAGE_SECS",
    "OUTBOX_BENCH_RECORDS",
    "OUTBOX_BENCH_CONCURRENCY",
    "OUTBOX_BENCH_DEVICE",
    "OUTBOX_BENCH_LOOP_SIZE",
    "OUTBOX_BENCH_SECS",
    "OUTBOX_LIFE_RECORDS",
    "OUTBOX_DEB",
    "OUTBOX_IMAGE",
];

/// One unknown variable and the known name closest to it, if one is close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub name: String,
    pub closest: Option<String>,
}

impl Unknown {
    /// `" (did you mean OUTBOX_X?)"`, or nothing when no known name is close.
    pub fn hint(&self) -> String {
        did_you_mean(self.closest.as_deref())
    }
}

/// `" (did you mean X?)"` or nothing.
pub fn did_you_mean(closest: Option<&str>) -> String {
    closest
        .map(|c| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}

/// The known name nearest to `name` by edit distance, when it is near enough to be a typo:
/// at most a third of the name's length, and at least 3 edits allowed, so a short name with
/// two slips is still recognised while an unrelated name gets no guess.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(3);
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(k, name), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

/// The unknown `OUTBOX_*` names among `names` (the process's environment in practice).
pub fn unknown(names: impl IntoIterator<Item = String>) -> Vec<Unknown> {
    let known: Vec<String> = SPECS
        .iter()
        .map(|s| env_name(s.name))
        .chain(OTHER_KNOWN.iter().map(|s| s.to_string()))
        .collect();
    let mut out: Vec<Unknown> = names
        .into_iter()
        .filter(|n| n.starts_with("OUTBOX_") && !known.contains(n))
        .map(|name| Unknown {
            closest: closest(&name, known.iter().map(String::as_str)).map(str::to_owned),
            name,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The unknown `OUTBOX_*` variables of this process.
pub fn unknown_in_env() -> Vec<Unknown> {
    unknown(
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_is_unknown_and_named_with_its_closest_setting() {
        let got = unknown(
            [
                "OUTBOX_DASHBORD_URL",
                "OUTBOX_DASHBOARD_URL",
                "OUTBOX_CONFIG",
                "PATH",
                "OUTBOX_INGEST_KEY_FLIE",
                "OUTBOX_ZZZZZZZZZZZZZZZZ",
            ]
            .map(String::from),
        );
        assert_eq!(
            got,
            vec![
                Unknown {
                    name: "OUTBOX_DASHBORD_URL".into(),
                    closest: Some("OUTBOX_DASHBOARD_URL".into())
                },
                Unknown {
                    name: "OUTBOX_INGEST_KEY_FLIE".into(),
                    closest: Some("OUTBOX_INGEST_KEY_FILE".into())
                },
                Unknown {
                    name: "OUTBOX_ZZZZZZZZZZZZZZZZ".into(),
                    closest: None
                },
            ]
        );
        assert_eq!(closest("listne", ["data_dir", "listen"]), Some("listen"));
        assert_eq!(closest("zzzzzz", ["data_dir", "listen"]), None);
    }
}
