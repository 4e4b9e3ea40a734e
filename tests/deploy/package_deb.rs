//! The Debian package, installed for real on this machine: `dpkg -i` creates the `outbox`
//! user, the data directory and the conffile; the installed binary, started the way the
//! installed unit says (its user, Environment= and EnvironmentFile=, ExecStart=), accepts and
//! delivers posts into /var/lib/outbox, and `outbox inspect` as that user sees them; an
//! upgrade restarts the service once the new binary is in place; `dpkg -r` keeps the data and
//! says so; installing again finds the same records; lintian reports no errors.
//!
//! It changes the machine (a package, a system user), so it runs only when `OUTBOX_DEB`
//! names a package, as root (`.ci/run` builds one). Without it: SKIP, except under CI.
//! It purges the package and the data directory at the end, so it can run again (outside CI
//! it refuses to start where /var/lib/outbox already holds a store).

use crate::harness::dashboard::{Dashboard, Reply};
use crate::harness::{free_port, tools, turn, wait_healthy, KillOnDrop};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const DATA: &str = "/var/lib/outbox";
const ENV_FILE: &str = "/etc/outbox/outbox.env";
const KEY: &str = "test-ingest-key-0123456789";
/// Where the unit reads the ingest key from (`OUTBOX_INGEST_KEY_FILE`).
const KEY_FILE: &str = "/etc/outbox/ingest-key";

fn ok(program: &str, args: &[&str]) -> Output {
    tools::run_ok(Command::new(program).args(args))
}

/// Purges the package and its data when the test ends, passed or not.
struct Cleanup;

impl Cleanup {
    fn now() {
        let _ = Command::new("dpkg").args(["--purge", "outbox"]).output();
        let _ = std::fs::remove_dir_all(DATA);
        let _ = std::fs::remove_file(KEY_FILE);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        Cleanup::now();
    }
}

/// What the installed unit says about starting the service.
struct Unit {
    user: String,
    env: BTreeMap<String, String>,
    exec: Vec<String>,
}

/// `KEY=VALUE` lines (comments and blanks skipped), as systemd reads an environment file.
fn env_lines(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
}

/// Reads the installed unit: Environment= first, then EnvironmentFile= (whose values win, as
/// in systemd), the User= and the ExecStart= command line.
fn installed_unit() -> Unit {
    let path = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(|d| Path::new(d).join("outbox.service"))
        .find(|p| p.exists())
        .expect("the package installs outbox.service");
    let text = std::fs::read_to_string(path).unwrap();
    let (mut user, mut env, mut exec, mut files) = (None, BTreeMap::new(), None, vec![]);
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "User" => user = Some(value.to_owned()),
            "Environment" => env.extend(env_lines(value)),
            "EnvironmentFile" => files.push(value.trim_start_matches('-').to_owned()),
            "ExecStart" => exec = Some(value.split_whitespace().map(String::from).collect()),
            "StateDirectory" => assert_eq!(format!("/var/lib/{value}"), DATA),
            _ => {}
        }
    }
    for f in files {
        env.extend(env_lines(&std::fs::read_to_string(f).unwrap()).collect::<Vec<_>>());
    }
    Unit {
        user: user.expect("User="),
        env,
        exec: exec.expect("ExecStart="),
    }
}

/// Starts the service as the unit would (systemd is not PID 1 here): a clean environment with
/// the unit's variables, as its user, then waits for /health.
fn start_like_the_unit(port: u16) -> KillOnDrop {
    let unit = installed_unit();
    assert_eq!(
        unit.env.get("OUTBOX_DATA_DIR").map(String::as_str),
        Some(DATA)
    );
    let user = unit.user.as_str();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .args(&unit.exec)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(&unit.env)
        .stdout(Stdio::null());
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    wait_healthy(port, &mut child);
    child
}

/// `outbox <args> --data-dir /var/lib/outbox --json` as the outbox user.
fn as_outbox(args: &[&str]) -> (serde_json::Value, String) {
    let mut all = vec!["-u", "outbox", "--", "/usr/bin/outbox"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", DATA, "--json"]);
    let out = ok("runuser", &all);
    let json = serde_json::from_slice(&out.stdout).expect("JSON from outbox");
    (json, String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn post(port: u16, id: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/collect"))
        .header("Idempotency-Key", id)
        .json(&serde_json::json!({"email": "jo@example.com", "message": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

/// Installs the package over itself with `deb-systemd-invoke` and `systemctl` replaced by
/// stubs that log their calls and the installed binary's version, as if systemd ran.
fn upgrade_logging_service_actions(deb: &Path) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("calls.log");
    for name in ["deb-systemd-invoke", "systemctl"] {
        let stub = tmp.path().join(name);
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"{name} $* | $(/usr/bin/outbox --version 2>&1)\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The maintainer scripts act on the service only where systemd runs.
    let fake_systemd = !Path::new("/run/systemd/system").exists();
    if fake_systemd {
        std::fs::create_dir_all("/run/systemd/system").unwrap();
    }
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new("dpkg")
        .args(["-i", deb.to_str().unwrap()])
        .env("PATH", path)
        .output()
        .unwrap();
    if fake_systemd {
        std::fs::remove_dir("/run/systemd/system").unwrap();
    }
    assert!(out.status.success(), "upgrade: {out:?}");
    std::fs::read_to_string(log).unwrap_or_default()
}

fn package() -> Option<PathBuf> {
    let test = "the Debian package test";
    let deb = std::env::var_os("OUTBOX_DEB").map(PathBuf::from);
    let why = match &deb {
        None => Some(
            "OUTBOX_DEB is not set (cargo deb --strip, then OUTBOX_DEB=target/debian/outbox_*.deb)"
                .into(),
        ),
        Some(d) if !d.is_file() => Some(format!("OUTBOX_DEB={} is not a file", d.display())),
        Some(_) if !tools::is_root() => Some("it installs a package: run it as root".into()),
        // Outside CI's throwaway machine, never purge somebody's real outbox data.
        Some(_) if std::env::var_os("CI").is_none() && Path::new(DATA).join("db").exists() => Some(
            format!("{DATA} holds a store, and this test would delete it"),
        ),
        Some(_) => None,
    };
    (tools::runnable(test, why) && tools::require(test, &["dpkg", "lintian", "setpriv", "runuser"]))
        .then(|| deb.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_runs_as_outbox_keeps_data_on_removal_and_finds_it_again() {
    let Some(deb) = package() else {
        return;
    };
    let _turn = turn().await;
    let deb_s = deb.to_str().unwrap();
    Cleanup::now(); // a run that died half-way left the package installed
    let _cleanup = Cleanup;
    let lint = ok("lintian", &["--no-cfg", "--fail-on", "error", deb_s]);
    assert!(!String::from_utf8_lossy(&lint.stdout).contains("E: "));

    ok("dpkg", &["-i", deb_s]);
    let passwd = String::from_utf8(ok("getent", &["passwd", "outbox"]).stdout).unwrap();
    assert!(passwd.contains(":/var/lib/outbox:"), "{passwd}");
    let data = std::fs::metadata(DATA).unwrap();
    let uid: u32 = passwd.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!((data.uid(), data.mode() & 0o777), (uid, 0o700));
    let env = std::fs::metadata(ENV_FILE).unwrap();
    assert_eq!(
        env.mode() & 0o777,
        0o640,
        "the env file holds the ingest key"
    );
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "outbox"]);
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains(ENV_FILE));
    assert!(Path::new("/usr/share/man/man1/outbox.1.gz").exists());

    // The operator's edits: where to listen and the dashboard in the env file, its key in
    // the key file the unit names (readable by the outbox group only).
    std::fs::write(KEY_FILE, format!("{KEY}\n")).unwrap();
    ok("chown", &["root:outbox", KEY_FILE]);
    ok("chmod", &["0640", KEY_FILE]);
    let dash = Dashboard::start().await;
    dash.set_handler(|r| match r.trace_id().as_str() {
        "deb-pending-0001" => Reply::status(503),
        _ => Reply::ok(),
    });
    let port = free_port();
    let edits = format!(
        "\nOUTBOX_LISTEN=127.0.0.1:{port}\nOUTBOX_DASHBOARD_URL={}\n",
        dash.url()
    );
    let mut text = std::fs::read_to_string(ENV_FILE).unwrap();
    text.push_str(&edits);
    std::fs::write(ENV_FILE, &text).unwrap();

    let mut server = tokio::task::spawn_blocking(move || start_like_the_unit(port))
        .await
        .unwrap();
    post(port, "deb-delivered-0001").await;
    post(port, "deb-pending-0001").await;
    dash.wait_until(
        |r| r.iter().any(|r| r.trace_id() == "deb-delivered-0001"),
        "the delivery from the installed binary",
    )
    .await;
    let (rec, how) = as_outbox(&["inspect", "deb-pending-0001"]);
    assert!(how.contains("via the running server"), "{how}");
    assert_eq!(rec["status"], "pending");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(server.wait().unwrap().success(), "outbox stops cleanly");

    let calls = upgrade_logging_service_actions(&deb);
    println!("service actions during the upgrade:\n{calls}");
    let restart = calls
        .lines()
        .find(|l| l.starts_with("deb-systemd-invoke restart outbox.service"))
        .unwrap_or_else(|| panic!("an upgrade restarts the service: {calls}"));
    assert!(
        restart.contains("outbox 0."),
        "the new binary is in place: {restart}"
    );
    assert!(
        !calls.contains(" stop "),
        "an upgrade does not stop first: {calls}"
    );

    let removed = ok("dpkg", &["-r", "outbox"]);
    let said = String::from_utf8_lossy(&removed.stderr);
    assert!(
        said.contains("kept the data directory /var/lib/outbox"),
        "{said}"
    );
    assert!(!Path::new("/usr/bin/outbox").exists());
    assert!(Path::new(DATA).join("db").exists(), "the data stays");

    ok("dpkg", &["-i", deb_s]);
    let kept = std::fs::read_to_string(ENV_FILE).unwrap();
    assert!(
        kept.contains(&edits),
        "the operator's edits survive: {kept}"
    );
    let (list, how) = as_outbox(&["inspect", "--list"]);
    assert!(how.contains("offline"), "{how}");
    let status = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["trace_id"] == id)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status("deb-pending-0001"), Some("pending".into()));
    assert_eq!(status("deb-delivered-0001"), Some("delivered".into()));
}
