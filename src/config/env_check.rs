//! Unknown `OUTBOX_*` environment variables. clap reads only the variables it knows, so a
//! typo (`OUTBOX_DASHBORD_URL`) would otherwise be ignored in silence and, for the dashboard
//! URL, turn delivery off. `serve` logs a warning for each and `config check` prints one,
//! naming the closest known variable, as unknown keys of the TOML file are refused.

use super::spec::{env_name, SPECS};

/// Variables outside the settings table that outbox or its tests and benchmarks read.
const OTHER_KNOWN: &[&str] = &[
    "OUTBOX_CONFIG",
    "OUTBOX_SOAK",
    "OUTBOX_SOAK_SECS",
    "OUTBOX_UPDATE_ASSETS",
    "OUTBOX_RESOURCE_SIZES",
    "OUTBOX_BENCH_OUTAGE_SECS",
    "OUTBOX_BENCH_RECORDS",
    "OUTBOX_BENCH_CONCURRENCY",
];

/// One unknown variable and the known name closest to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub name: String,
    pub closest: String,
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
        .map(|name| {
            let closest = known
                .iter()
                .min_by_key(|k| distance(k, &name))
                .expect("settings exist")
                .clone();
            Unknown { name, closest }
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

/// Levenshtein distance (names are short ASCII).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
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
            ]
            .map(String::from),
        );
        assert_eq!(
            got,
            vec![
                Unknown {
                    name: "OUTBOX_DASHBORD_URL".into(),
                    closest: "OUTBOX_DASHBOARD_URL".into()
                },
                Unknown {
                    name: "OUTBOX_INGEST_KEY_FLIE".into(),
                    closest: "OUTBOX_INGEST_KEY_FILE".into()
                },
            ]
        );
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
