//! `outbox config check` and start-up errors, through the real binary.

use crate::harness;
use crate::harness::tools::{self, output_text};
use std::process::{Command, Output};

/// `outbox <args>` with only the given `OUTBOX_*` variables set.
pub fn outbox(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(harness::bin());
    cmd.args(args);
    // Start from a clean slate: no OUTBOX_* from the environment running the tests.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OUTBOX_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run outbox")
}

#[test]
fn defaults_are_valid_and_printed() {
    let o = outbox(&["config", "check"], &[]);
    assert!(o.status.success(), "{}", output_text(&o));
    let t = output_text(&o);
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
    let t = output_text(&outbox(
        &["config", "check", "--listen", "127.0.0.1:3333"],
        &env,
    ));
    assert!(
        t.contains("127.0.0.1:3333") && t.contains("flag --listen"),
        "{t}"
    );
    let t = output_text(&outbox(&["config", "check"], &env));
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
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", output_text(&o));
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
        assert!(o.status.success(), "{args:?}: {}", output_text(&o));
        assert!(
            !output_text(&o).contains(key),
            "the ingest key must be masked"
        );
        assert!(output_text(&o).contains("********"));
    }
}

#[test]
fn a_data_directory_held_by_another_process_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = harness::free_port();
    let mut first = harness::spawn_binary(&data, port, &[]);
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
    let pid = first.id();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("in use by another outbox process"),
        "{}",
        output_text(&o)
    );
    assert!(
        output_text(&o).contains(&format!("held by outbox pid {pid}")),
        "the holder is named: {}",
        output_text(&o)
    );
}

/// A data directory the service's user cannot write names the owner, the mode and the user,
/// and says its cause once. Needs root (to run the binary as another user) and setpriv.
#[test]
fn a_data_directory_owned_by_another_user_names_the_owner_and_the_cause_once() {
    let test = "the data-directory owner test";
    let why = (!tools::is_root()).then(|| "it needs root to run outbox as another user".into());
    if !tools::runnable(test, why) || !tools::require(test, &["setpriv"]) {
        return;
    }
    // Under /tmp: the binary's own directory may not be reachable for uid 65534, so copy it.
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let bin = tmp.path().join("outbox");
    std::fs::copy(harness::bin(), &bin).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("OUTBOX_CONFIG")
        .output()
        .unwrap();
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&format!(
            "{} is owned by uid 0 (mode 0700) and outbox runs as uid 65534",
            data.display()
        )),
        "{t}"
    );
    assert_eq!(t.matches("(os error").count(), 1, "the cause once: {t}");
}

#[test]
fn secrets_come_from_files_and_not_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("ingest-key");
    std::fs::write(&key_file, "0123456789abcdef-from-file\n").unwrap();
    let kf = key_file.to_str().unwrap();
    let dash = ["--dashboard-url", "https://dash.example.com"];
    let check = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["config", "check"];
        args.extend_from_slice(&dash);
        args.extend_from_slice(extra);
        outbox(&args, env)
    };
    let o = check(&[], &[("OUTBOX_INGEST_KEY_FILE", kf)]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains(kf) && !output_text(&o).contains("from-file"),
        "{}",
        output_text(&o)
    );

    let both = check(
        &["--ingest-key", "0123456789abcdef-direct"],
        &[("OUTBOX_INGEST_KEY_FILE", kf)],
    );
    assert_eq!(both.status.code(), Some(2));
    assert!(
        output_text(&both).contains("settings ingest-key (flag --ingest-key) and ingest-key-file (environment OUTBOX_INGEST_KEY_FILE) are both set"),
        "{}",
        output_text(&both)
    );
    let missing = tmp.path().join("nope");
    let o = check(&["--ingest-key-file", missing.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        output_text(&o).contains("invalid setting ingest-key-file")
            && output_text(&o).contains("cannot read it"),
        "{}",
        output_text(&o)
    );
    std::fs::write(&key_file, "short\n").unwrap();
    let o = check(&["--ingest-key-file", kf], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        output_text(&o).contains("at least 16 are required"),
        "{}",
        output_text(&o)
    );
    std::fs::write(&key_file, "0123456789abcdef-from-file\r\n").unwrap();
    let empty = tmp.path().join("secret");
    std::fs::write(&empty, "\n").unwrap();
    let o = check(
        &[
            "--ingest-key-file",
            kf,
            "--signing-secret-file",
            empty.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        output_text(&o).contains("signing-secret-file")
            && output_text(&o).contains("the file is empty"),
        "{}",
        output_text(&o)
    );
}

#[test]
fn unknown_outbox_variables_are_named_with_the_closest_setting() {
    let env = [("OUTBOX_DASHBORD_URL", "https://dash.example.com")];
    let o = outbox(&["config", "check"], &env);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "unknown environment variable OUTBOX_DASHBORD_URL (did you mean OUTBOX_DASHBOARD_URL?): the service ignores it"
        ),
        "{}",
        output_text(&o)
    );
    // serve only warns, at start.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(harness::bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("OUTBOX_DASHBORD_URL", "https://dash.example.com")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        line["message"], "unknown environment variable ignored",
        "{first}"
    );
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["variable"], "OUTBOX_DASHBORD_URL");
    assert_eq!(line["closest"], "OUTBOX_DASHBOARD_URL");
}

#[test]
fn sigterm_stops_gracefully_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = harness::free_port();
    let mut child = harness::spawn_binary(&data, port, &[]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // The store reopens at once: the lock was released and nothing is left half-written.
    outbox::store::Store::open(&data).expect("store reopens after a graceful stop");
}

#[test]
fn every_json_flag_has_a_help_line() {
    for sub in [
        "inspect",
        "replay",
        "edit",
        "verify",
        "backup",
        "import-legacy",
        "purge",
    ] {
        let o = outbox(&[sub, "--help"], &[]);
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with("--json"))
            .unwrap_or_else(|| panic!("{sub} has no --json: {help}"));
        assert!(
            line.contains("Print JSON (shapes in the README"),
            "{sub}: {line:?}"
        );
    }
}

#[test]
fn the_store_url_is_checked_and_its_passwords_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pg-password");
    std::fs::write(&file, "swordfish\n").unwrap();
    let url = "postgres://outbox:hunter2@db1:5432,db2:5432/outbox?target_session_attrs=read-write";
    let o = outbox(
        &["config", "check", "--store-url", url],
        &[("OUTBOX_STORE_PASSWORD_FILE", file.to_str().unwrap())],
    );
    let text = output_text(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("swordfish"),
        "a password is shown: {text}"
    );
    assert!(
        text.contains("postgres://outbox:********@db1:5432,db2:5432/outbox"),
        "{text}"
    );

    for (args, names) in [
        (
            vec!["--store-url", "mysql://outbox:hunter2@db/outbox"],
            "store-url",
        ),
        (
            vec![
                "--store-url",
                "postgres://outbox:hunter2@db/outbox?sslmode=verify-full",
            ],
            "sslrootcert",
        ),
        (
            vec![
                "--store-url",
                "postgres://db/outbox",
                "--store-synchronous-commit",
                "off",
            ],
            "store-synchronous-commit",
        ),
        (vec!["--store-password", "hunter2"], "store-url is not"),
    ] {
        let mut all = vec!["config", "check"];
        all.extend(args.iter().copied());
        let o = outbox(&all, &[]);
        let text = output_text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(names), "{args:?}: {text}");
        assert!(!text.contains("hunter2"), "{args:?}: {text}");
    }
}
