//! The alert rules and the metrics, checked by Prometheus's own tool.
//!
//! `promtool check rules` parses the rules as Prometheus will; `promtool test rules` runs
//! `ops/prometheus-alerts.test.yml`, where each alert fires when it should (the first dead
//! letter after a start included) and stays quiet on a healthy service; `promtool check
//! metrics` lints a live `/metrics` of the real binary. The same fresh scrape must hold, at 0,
//! every series the rules and the Grafana dashboard select, or `increase()` misses a first event.
//! Without promtool (Debian: `apt-get install prometheus`) the tests print a loud SKIP and pass,
//! except under CI (`CI` set), where they fail: `.ci/run` installs it.

use crate::harness::{free_port, root, spawn_binary_async, tools};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// promtool, or a loud SKIP (a failure under CI).
fn promtool() -> Option<PathBuf> {
    tools::need(
        "the Prometheus test",
        "promtool",
        "Debian: apt-get install prometheus",
    )
}

/// Runs promtool with `args` (and `stdin`), failing with its output unless it exits 0.
fn run_promtool(tool: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = tools::output_text(&out);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_tests_pass() {
    let Some(tool) = promtool() else { return };
    let checked = run_promtool(
        &tool,
        &["check", "rules", "ops/prometheus-alerts.yml"],
        None,
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(
        &tool,
        &["test", "rules", "ops/prometheus-alerts.test.yml"],
        None,
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[tokio::test]
async fn a_fresh_binary_exports_lint_clean_metrics_with_every_selected_series_at_zero() {
    let Some(tool) = promtool() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = spawn_binary_async(&tmp.path().join("data"), port, &[]).await;
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let linted = run_promtool(&tool, &["check", "metrics"], Some(&text));
    assert!(
        linted.trim().is_empty(),
        "promtool lint findings:\n{linted}"
    );

    let series = parse_exposition(&text);
    let mut missing = Vec::new();
    for expr in rule_and_dashboard_exprs() {
        for (name, matchers) in selectors(&expr) {
            if !selected(&series, &name, &matchers) {
                missing.push(format!("{name}{matchers:?} (in {expr})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "a fresh start lacks series that rules or the dashboard select:\n{}\nscrape:\n{text}",
        missing.join("\n")
    );
    for (name, labels, value) in &series {
        let counter = name.ends_with("_total");
        let in_collect_route = labels.get("route").map(String::as_str) == Some("/api/collect");
        if counter && (in_collect_route || !name.starts_with("outbox_http_requests")) {
            assert_eq!(*value, 0.0, "{name}{labels:?} is not 0 at start");
        }
    }
}

/// Every PromQL expression in the alert rules and the dashboard.
fn rule_and_dashboard_exprs() -> Vec<String> {
    let rules = std::fs::read_to_string(root().join("ops/prometheus-alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&rules).unwrap();
    let mut exprs: Vec<String> = docs[0]["groups"][0]["rules"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    let dash = std::fs::read_to_string(root().join("ops/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash).unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

type Matcher = (String, String, String);

/// The `outbox_*` selectors of a PromQL expression: name and `(label, op, value)` matchers.
fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("outbox_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut matchers = Vec::new();
        rest = &tail[end..];
        if let Some(body) = rest.strip_prefix('{') {
            let close = body.find('}').expect("closed selector");
            for m in body[..close].split(',').filter(|m| !m.trim().is_empty()) {
                let op_at = m.find(['=', '!']).expect("a matcher operator");
                let op_len = if m[op_at + 1..].starts_with(['=', '~']) {
                    2
                } else {
                    1
                };
                let value = m[op_at + op_len..].trim().trim_matches('"');
                matchers.push((
                    m[..op_at].trim().to_owned(),
                    m[op_at..op_at + op_len].to_owned(),
                    value.to_owned(),
                ));
            }
            rest = &body[close + 1..];
        }
        out.push((name, matchers));
    }
    out
}

/// Whether the scrape has series for `name` that satisfy `matchers`: an equality needs a
/// series with that value; a regex of plain alternatives (`pending|in_flight`) needs one for
/// each; any other regex (`5..`, `.` matching any character) needs at least one.
fn selected(series: &[Series], name: &str, matchers: &[Matcher]) -> bool {
    let mut wanted: Vec<Vec<(&str, String)>> = vec![vec![]];
    let mut patterns = Vec::new();
    for (label, op, value) in matchers {
        match op.as_str() {
            "=" => wanted
                .iter_mut()
                .for_each(|w| w.push((label, value.clone()))),
            "=~" if value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_/|".contains(c)) =>
            {
                wanted = wanted
                    .iter()
                    .flat_map(|w| {
                        value.split('|').map(move |alt| {
                            let mut w = w.clone();
                            w.push((label.as_str(), alt.to_owned()));
                            w
                        })
                    })
                    .collect();
            }
            "=~" => patterns.push((label.as_str(), value.as_str())),
            _ => {}
        }
    }
    wanted.iter().all(|w| {
        series.iter().any(|(n, labels, _)| {
            n == name
                && w.iter().all(|(l, v)| labels.get(*l) == Some(v))
                && patterns.iter().all(|(l, p)| {
                    labels.get(*l).is_some_and(|v| {
                        v.len() == p.len()
                            && v.chars().zip(p.chars()).all(|(a, b)| b == '.' || a == b)
                    })
                })
        })
    })
}

type Series = (String, BTreeMap<String, String>, f64);

/// Name, labels and value of each sample line of the text format.
fn parse_exposition(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (head, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value.parse().unwrap_or(f64::NAN))
        })
        .collect()
}

#[test]
fn selector_parsing_and_matching_follow_promql() {
    let got = selectors(
        r#"sum(rate(outbox_x_total{route="/api/collect",status=~"5.."}[5m])) or outbox_y"#,
    );
    assert_eq!(got[0].0, "outbox_x_total");
    assert_eq!(got[0].1[1], ("status".into(), "=~".into(), "5..".into()));
    assert_eq!(got[1], ("outbox_y".into(), vec![]));
    let series = parse_exposition(
        "outbox_x_total{route=\"/api/collect\",status=\"503\"} 0\noutbox_r{s=\"a\"} 1\n",
    );
    assert!(selected(&series, "outbox_x_total", &got[0].1));
    let both = selectors(r#"outbox_r{s=~"a|b"}"#);
    assert!(!selected(&series, "outbox_r", &both[0].1), "b is missing");
    assert!(!selected(&series, "outbox_y", &[]));
}
