//! Typos in settings, through the real binary: an unknown `OUTBOX_*` variable makes
//! `config check` fail (the service only warns), and both a variable and a TOML key are
//! answered with the closest known name.

use crate::config_rules::check;
use crate::harness::tools::output_text;

#[test]
fn config_check_fails_on_an_unknown_outbox_variable_and_names_the_closest() {
    let o = check(&[], &[("OUTBOX_DASHBORD_URL", "https://dash.example.com")]);
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(!t.contains("configuration ok"), "{t}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("OUTBOX_DASHBORD_URL") && err.contains("did you mean OUTBOX_DASHBOARD_URL?"),
        "{err}"
    );
    // The verdict is the last thing printed, not lost above the table.
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("OUTBOX_DASHBORD_URL"), "last line: {last:?}");
}

#[test]
fn an_unknown_toml_key_is_answered_with_the_closest_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outbox.toml");
    std::fs::write(&file, "dashbord_url = \"https://dash.example.com\"\n").unwrap();
    let o = check(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did you mean dashboard_url?"), "{err}");
    // A file-only key is suggested too.
    std::fs::write(&file, "[[form_type_rule]]\ntype = \"quote\"\n").unwrap();
    let o = check(&["--config", file.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did you mean form_type_rules?"), "{err}");
    // A name like nothing known gets no guess.
    std::fs::write(&file, "zzzzzzzzzzzz = 1\n").unwrap();
    let o = check(&["--config", file.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("did you mean"), "{err}");
}
