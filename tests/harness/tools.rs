//! System tools some tests drive (nginx, promtool, systemd-analyze, schemathesis, chromium,
//! dpkg, podman, a FUSE or tmpfs mount), and the one rule for a test that cannot have what it
//! needs: it says SKIP loudly and passes, except under CI (`CI` set), where it fails, because
//! `.ci/run` installs them all. Also [`run`], which runs a tool and shows what it said.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of `tool` on PATH (or in the sbin directories), if it is there.
pub fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether `test` can run: false (after a loud SKIP) when `why_not` is set, a failure under CI.
pub fn runnable(test: &str, why_not: Option<String>) -> bool {
    let Some(why) = why_not else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test} must run in CI: {why}");
    }
    eprintln!("\n********\nSKIP {test}: {why}\n********\n");
    false
}

/// [`runnable`] for a set of tools that must all be installed.
pub fn require(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find(t).is_none())
        .collect();
    runnable(
        test,
        (!missing.is_empty()).then(|| format!("{} not installed", missing.join(", "))),
    )
}

/// The path of `tool`, or `None` after [`runnable`]'s SKIP, which names `install` (how to get
/// it, e.g. "Debian: apt-get install nginx").
pub fn need(test: &str, tool: &str, install: &str) -> Option<PathBuf> {
    let found = find(tool);
    if found.is_none() {
        runnable(test, Some(format!("{tool} is not installed ({install})")));
    }
    found
}

/// Whether this process runs as root (package installs and containers need it).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user of the process looking at it.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `cmd` to the end and prints it with what it wrote (shown when the test fails).
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    println!("$ {cmd:?}\n{}", output_text(&out));
    out
}

/// What a finished command wrote: its stdout, then its stderr, lossily decoded.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// [`run`], failing the test unless `cmd` exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    out
}
