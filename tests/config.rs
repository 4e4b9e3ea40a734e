//! `outbox config check` and start-up errors, through the real binary.

mod common;

use std::process::{Command, Output};

fn outbox(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::bin());
    cmd.args(args);
    // Start from a clean slate: no OUTBOX_* from the environment running the tests.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OUTBOX_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run outbox")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn defaults_are_valid_and_printed() {
    let o = outbox(&["config", "check"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("listen") && t.contains("127.0.0.1:8001"), "{t}");
    assert!(
        t.contains("./data") && t.contains("configuration ok"),
        "{t}"
    );
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outbox.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\nsource = \"from-file\"\nmax_body = 2048\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let env = [("OUTBOX_LISTEN", "127.0.0.1:2222"), ("OUTBOX_CONFIG", f)];
    let t = text(&outbox(
        &["config", "check", "--listen", "127.0.0.1:3333"],
        &env,
    ));
    assert!(
        t.contains("127.0.0.1:3333") && t.contains("flag --listen"),
        "{t}"
    );
    let t = text(&outbox(&["config", "check"], &env));
    assert!(
        t.contains("127.0.0.1:2222") && t.contains("environment OUTBOX_LISTEN"),
        "{t}"
    );
    assert!(
        t.contains("from-file") && t.contains("config file key source"),
        "{t}"
    );
    assert!(t.contains("2048"), "{t}");
}

#[test]
fn bad_settings_exit_2_with_a_message_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "listne = \"127.0.0.1:1\"\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--listen", "localhost:port"], "listen"),
        (
            vec![
                "--dashboard-url",
                "not a url",
                "--ingest-key",
                "0123456789abcdef",
            ],
            "dashboard-url",
        ),
        (
            vec!["--dashboard-url", "https://dash.example.com"],
            "ingest-key",
        ),
        (
            vec![
                "--dashboard-url",
                "https://dash.example.com",
                "--ingest-key",
                "short",
            ],
            "ingest-key",
        ),
        (
            vec![
                "--dashboard-url",
                "http://dash.example.com",
                "--ingest-key",
                "0123456789abcdef",
            ],
            "--allow-http-dashboard",
        ),
        (vec!["--config", unknown.to_str().unwrap()], "listne"),
        (vec!["--idempotency-window", "soon"], "idempotency-window"),
        (vec!["--max-body", "5MiB"], "max-body"),
        (vec!["--trusted-proxies", "10.0.0.0/33"], "trusted-proxies"),
        (
            vec!["--client-ip-header", "x-forwarded-for, forwarded"],
            "client-ip-header",
        ),
        (
            vec!["--cors-origins", "https://example.com/path"],
            "cors-origins",
        ),
        (vec!["--rate-limit", "fast"], "rate-limit"),
    ];
    for (args, named) in cases {
        let mut all = vec!["config", "check"];
        all.extend(args.iter().copied());
        let o = outbox(&all, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(named), "{args:?} should name {named}: {err}");
    }
}

#[test]
fn accepted_dashboard_settings_and_masked_secrets() {
    let key = "0123456789abcdef-secret";
    let ok = [
        vec![
            "--dashboard-url",
            "https://dash.example.com",
            "--ingest-key",
            key,
        ],
        vec![
            "--dashboard-url",
            "http://127.0.0.1:9000",
            "--ingest-key",
            key,
        ],
        vec![
            "--dashboard-url",
            "http://dash.internal",
            "--ingest-key",
            key,
            "--allow-http-dashboard",
        ],
    ];
    for args in ok {
        let mut all = vec!["config", "check"];
        all.extend(args.iter().copied());
        let o = outbox(&all, &[]);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains(key), "the ingest key must be masked");
        assert!(text(&o).contains("********"));
    }
}

#[test]
fn a_data_directory_held_by_another_process_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let mut first = common::spawn_binary(&data, port, &[]);
    let o = outbox(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("in use by another outbox process"),
        "{}",
        text(&o)
    );
}

#[test]
fn sigterm_stops_gracefully_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let mut child = common::spawn_binary(&data, port, &[]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // The store reopens at once: the lock was released and nothing is left half-written.
    outbox::store::Store::open(&data).expect("store reopens after a graceful stop");
}
