//! Settings that used to fail in silence, through the real binary: form-type rules in the
//! TOML file extend the built-in ones (unless the file says it replaces them) and
//! `config check` prints the effective rules; a route no rule can reach is refused.

use crate::harness;
use crate::harness::dashboard::Dashboard;
use crate::harness::tools::output_text;
use serde_json::json;
use std::path::Path;
use std::process::Output;

const KEY: &str = "test-ingest-key-0123456789";

/// The README's own `[[form_type_rules]]` example.
const README_RULE: &str = "[[form_type_rules]]\ntype = \"quote\"\nall = [\"company\", \"budget\"]\nany = []\nonly = false\n";

/// `outbox config check <args>` with only the given `OUTBOX_*` variables set.
pub fn check(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["config", "check"];
    all.extend_from_slice(args);
    crate::config::outbox(&all, env)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn with_dashboard<'a>(config: &'a str, routes: &'a str) -> Vec<&'a str> {
    vec![
        "--config",
        config,
        "--dashboard-url",
        "https://dash.example.com",
        "--ingest-key",
        KEY,
        "--routes",
        routes,
    ]
}

#[test]
fn a_rule_in_the_file_extends_the_built_in_rules_and_config_check_lists_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "outbox.toml", README_RULE);
    let o = check(
        &with_dashboard(&file, "contact=/api/contact,quote=/api/quote"),
        &[],
    );
    let t = output_text(&o);
    assert!(o.status.success(), "{t}");
    let order: Vec<usize> = [
        "1. quote",
        "2. demo_request",
        "3. contact",
        "4. newsletter",
        "otherwise generic",
    ]
    .iter()
    .map(|w| t.find(w).unwrap_or_else(|| panic!("{w:?} missing: {t}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {t}");
    assert!(
        t.lines()
            .any(|l| l.contains("1. quote") && l.contains("config file")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.contains("3. contact") && l.contains("built-in")),
        "{t}"
    );
}

#[test]
fn a_file_that_replaces_the_built_in_rules_cannot_route_a_type_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "outbox.toml",
        &format!("replace_builtin_form_type_rules = true\n{README_RULE}"),
    );
    let o = check(
        &with_dashboard(&file, "contact=/api/contact,quote=/api/quote"),
        &[],
    );
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("contact=/api/contact") && !err.contains("quote=/api/quote"),
        "the route is named: {err}"
    );
    // The same file without the dropped route is fine, and lists only its own rule.
    let o = check(&with_dashboard(&file, "quote=/api/quote"), &[]);
    let t = output_text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("1. quote") && !t.contains("2. "), "{t}");
}

#[test]
fn a_route_for_a_type_no_rule_produces_is_refused_unless_forms_send_it() {
    let o = check(
        &[
            "--dashboard-url",
            "https://dash.example.com",
            "--ingest-key",
            KEY,
            "--routes",
            "careers=/api/careers",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("careers=/api/careers") && err.contains("explicit-form-types"),
        "{err}"
    );
    let o = check(
        &["--dashboard-url", "https://dash.example.com"],
        &[
            ("OUTBOX_INGEST_KEY", KEY),
            ("OUTBOX_ROUTES", "careers=/api/careers"),
            ("OUTBOX_EXPLICIT_FORM_TYPES", "careers"),
        ],
    );
    assert!(o.status.success(), "{}", output_text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_readme_rule_a_contact_form_still_reaches_its_contact_route() {
    let dash = Dashboard::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "outbox.toml", README_RULE);
    let url = dash.url();
    let app = harness::spawn_app(&[
        "--config",
        &file,
        "--dashboard-url",
        &url,
        "--ingest-key",
        KEY,
        "--routes",
        "contact=/api/contact,quote=/api/quote",
    ])
    .await;
    for (key, body) in [
        (
            "rules-contact-1",
            json!({"email": "jo@example.com", "message": "Hi"}),
        ),
        (
            "rules-quote-001",
            json!({"company": "ACME", "budget": "10k"}),
        ),
    ] {
        let r = app.post_json(&body, &[("Idempotency-Key", key)]).await;
        assert_eq!(r.status(), 202);
    }
    let got = dash.wait_for_requests(2).await;
    let path_of = |id: &str| {
        let r = got.iter().find(|r| r.trace_id() == id).unwrap();
        (r.path.clone(), r.json()["_enrichment"]["form_type"].clone())
    };
    assert_eq!(
        path_of("rules-contact-1"),
        ("/api/contact".to_string(), json!("contact"))
    );
    assert_eq!(
        path_of("rules-quote-001"),
        ("/api/quote".to_string(), json!("quote"))
    );
    app.stop().await;
}
