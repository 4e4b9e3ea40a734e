//! The deployment assets in ops/ stay true to the code: the environment example lists every
//! setting, and the alert rules and Grafana dashboard use only metrics outbox exports.
//! The man page the Debian package installs is the CLI's own help.
//! `OUTBOX_UPDATE_ASSETS=1 cargo test --test ops assets::` rewrites ops/outbox.env.example and
//! ops/outbox.1.

use crate::harness::{root, tools};
use outbox::config::spec::{env_name, SPECS};
use outbox::telemetry::metrics::METRICS;
use std::collections::BTreeSet;
use std::path::Path;

fn env_example() -> String {
    let mut out = String::from(
        "# outbox environment file: every setting with its default, for systemd's\n\
         # EnvironmentFile=/etc/outbox/outbox.env. Uncomment and change what you need.\n\
         # Precedence: command-line flag > OUTBOX_* variable > TOML file (OUTBOX_CONFIG) > default.\n\
         # Durations: 500ms, 30s, 15m, 24h. Sizes: 64KiB, 1MiB, 4GiB. Rates: 10/s, 600/m, off.\n\
         # `outbox config check` prints the effective configuration (secrets masked) and checks it.\n\
         # Keep this file mode 0640, owned by root:outbox. The ingest key itself belongs in\n\
         # /etc/outbox/ingest-key (ops/outbox.service sets OUTBOX_INGEST_KEY_FILE to it): SIGHUP\n\
         # re-reads that file, while a variable set here only changes with a restart.\n\
         # Generated from the settings table: OUTBOX_UPDATE_ASSETS=1 cargo test --test ops assets::\n",
    );
    for spec in SPECS {
        let example = match (spec.name, spec.default) {
            ("dashboard-url", _) => "https://admin.example.com",
            ("ingest-key", _) => "change-me-to-a-long-random-key",
            ("ingest-key-file", _) => "/etc/outbox/ingest-key",
            ("signing-secret-file", _) => "/etc/outbox/signing-secret",
            (_, Some(d)) => d,
            (_, None) => "",
        };
        out.push_str(&format!(
            "\n# {}\n#{}={example}\n",
            spec.help,
            env_name(spec.name)
        ));
    }
    out
}

#[test]
fn the_environment_example_lists_every_setting() {
    let path = root().join("ops/outbox.env.example");
    let want = env_example();
    if std::env::var_os("OUTBOX_UPDATE_ASSETS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        have, want,
        "ops/outbox.env.example is stale: run OUTBOX_UPDATE_ASSETS=1 cargo test --test ops assets::"
    );
}

/// ops/outbox.1 (installed as man page outbox(1)) rendered from the clap definition.
fn man_page() -> String {
    let cmd = <outbox::cli::Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn the_man_page_is_the_cli_help() {
    let path = root().join("ops/outbox.1");
    let want = man_page();
    if std::env::var_os("OUTBOX_UPDATE_ASSETS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        have, want,
        "ops/outbox.1 is stale: run OUTBOX_UPDATE_ASSETS=1 cargo test --test ops assets::"
    );
    for section in [
        "Files",
        "Exit status",
        "/etc/outbox/outbox.env",
        "healthcheck",
    ] {
        assert!(want.contains(section), "the man page lacks {section}");
    }
}

#[test]
fn the_readme_configuration_reference_names_every_setting() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let missing: Vec<&str> = SPECS
        .iter()
        .filter(|s| {
            !readme.contains(&format!("--{}", s.name)) || !readme.contains(&env_name(s.name))
        })
        .map(|s| s.name)
        .collect();
    assert!(
        missing.is_empty(),
        "README lacks these settings: {missing:?}"
    );
}

#[test]
fn the_readme_metrics_table_names_every_metric() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rows: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `outbox_"))
        .collect();
    let missing: Vec<&str> = METRICS
        .iter()
        .map(|(name, _, _)| *name)
        .filter(|name| !rows.iter().any(|r| r.contains(&format!("`{name}`"))))
        .collect();
    assert!(
        missing.is_empty(),
        "README lacks these metrics: {missing:?}"
    );
}

#[test]
fn the_readme_gives_the_circuit_gauge_values_of_the_metric_help() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let help = METRICS
        .iter()
        .find(|m| m.0 == "outbox_circuit_state")
        .unwrap()
        .2;
    let values = help.split_once(": ").expect("help lists the values").1;
    for place in [
        format!("`outbox_circuit_state` gauge ({values})"),
        format!("| `outbox_circuit_state` ({values})"),
    ] {
        assert!(readme.contains(&place), "README lacks {place:?}");
    }
}

/// Metric names a PromQL expression refers to, with histogram suffixes folded.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut in_braces = 0;
    for c in expr.chars().chain(std::iter::once(' ')) {
        match c {
            '{' => in_braces += 1,
            '}' => in_braces -= 1,
            _ => {}
        }
        if (c.is_ascii_alphanumeric() || c == '_' || c == ':') && in_braces == 0 {
            word.push(c);
            continue;
        }
        if word.starts_with("outbox_") || word == "up" {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(&word)
                .to_owned();
            names.insert(base);
        }
        word.clear();
    }
    names
}

fn exported() -> BTreeSet<String> {
    let mut set: BTreeSet<String> = METRICS.iter().map(|(n, _, _)| n.to_string()).collect();
    set.insert("up".into()); // Prometheus's own per-target series
    set
}

#[test]
fn alert_rules_parse_and_use_only_exported_metrics() {
    let text = std::fs::read_to_string(root().join("ops/prometheus-alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let rules = docs[0]["groups"][0]["rules"]
        .as_vec()
        .expect("groups[0].rules");
    let mut alerts = BTreeSet::new();
    for rule in rules {
        let name = rule["alert"].as_str().expect("alert name");
        let expr = rule["expr"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no expr"));
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{name} has no summary"
        );
        let unknown: Vec<String> = metric_names(expr)
            .difference(&exported())
            .cloned()
            .collect();
        assert!(
            unknown.is_empty(),
            "{name} uses metrics outbox does not export: {unknown:?}"
        );
        alerts.insert(name.to_owned());
    }
    for needed in [
        "OutboxGrowing",
        "OutboxOldestPendingTooOld",
        "OutboxDeadLetters",
        "OutboxDeliveryPausedCredentials",
        "OutboxCircuitOpen",
        "OutboxDiskLow",
        "OutboxIntake5xx",
    ] {
        assert!(alerts.contains(needed), "missing alert {needed}");
    }
}

#[test]
fn the_grafana_dashboard_parses_and_uses_only_exported_metrics() {
    let text = std::fs::read_to_string(root().join("ops/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            used.extend(metric_names(expr));
        }
    }
    let unknown: Vec<String> = used.difference(&exported()).cloned().collect();
    assert!(
        unknown.is_empty(),
        "dashboard uses metrics outbox does not export: {unknown:?}"
    );
    for needed in [
        "outbox_intake_seconds",
        "outbox_outbox_records",
        "outbox_oldest_pending_age_seconds",
        "outbox_circuit_state",
        "outbox_commit_batch_size",
        "outbox_delivery_attempts_total",
    ] {
        assert!(used.contains(needed), "dashboard lacks {needed}");
    }
}

#[test]
fn metric_name_extraction_ignores_labels_and_folds_histogram_suffixes() {
    let got = metric_names(
        r#"histogram_quantile(0.9, sum by (le) (rate(outbox_intake_seconds_bucket{route="outbox_x"}[5m]))) + up"#,
    );
    assert_eq!(
        got,
        BTreeSet::from(["outbox_intake_seconds".to_owned(), "up".to_owned()])
    );
}

/// The phrases ops/RUNBOOK.md quotes as log lines (``log line `...` ``).
fn runbook_log_phrases() -> Vec<String> {
    let runbook = std::fs::read_to_string(root().join("ops/RUNBOOK.md")).unwrap();
    let flat = runbook.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.split("log line `")
        .skip(1)
        .map(|rest| rest.split('`').next().unwrap().to_owned())
        .collect()
}

/// Every `.rs` file under src/, concatenated.
fn source_text() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = String::new();
    walk(&root().join("src"), &mut out);
    out
}

#[test]
fn the_runbook_quotes_log_lines_the_program_writes() {
    let phrases = runbook_log_phrases();
    // The lines an operator acts on; tests/delivery/process.rs makes the binary write each.
    for needed in [
        "delivery attempts failed",
        "delivery paused: the dashboard rejected the credentials",
        "reload: the delivery credentials did not change",
        "posts refused",
    ] {
        assert!(
            phrases.iter().any(|p| p == needed),
            "the runbook does not quote {needed:?}: {phrases:?}"
        );
    }
    let src = source_text();
    let missing: Vec<&String> = phrases
        .iter()
        .filter(|p| !src.contains(&format!("\"{p}")))
        .collect();
    assert!(
        missing.is_empty(),
        "ops/RUNBOOK.md quotes log lines no code writes: {missing:?}"
    );
}

/// systemd itself reads ops/outbox.service (with ExecStart pointed at the built binary):
/// no fatal error and no unknown key. Needs `systemd-analyze` (Debian package systemd).
#[test]
fn systemd_accepts_the_unit() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(root().join("ops/outbox.service"))
        .unwrap()
        .replace(
            "ExecStart=/usr/bin/outbox",
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_outbox")),
        );
    assert!(unit.contains("Environment=OUTBOX_INGEST_KEY_FILE=/etc/outbox/ingest-key"));
    let path = tmp.path().join("outbox.service");
    std::fs::write(&path, unit).unwrap();
    let test = "systemd_accepts_the_unit";
    let Some(analyze) = tools::need(test, "systemd-analyze", "Debian: apt-get install systemd")
    else {
        return;
    };
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let unit_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("outbox.service"))
        .collect();
    assert!(unit_lines.is_empty(), "systemd complains: {stderr}");
}

#[test]
fn the_debian_changelog_names_the_crate_version() {
    let text = std::fs::read_to_string(root().join("ops/debian/changelog")).unwrap();
    let first = text.lines().next().unwrap_or_default();
    let want = format!("outbox ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&want),
        "ops/debian/changelog must start with an entry for this version ({want}...), got {first:?}"
    );
}
