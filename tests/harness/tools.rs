//! System tools some tests drive (nginx, dpkg, lintian, podman). Without one such a test says
//! SKIP loudly and passes, except under CI (`CI` set), where it fails: `.ci/run` installs them.

use std::path::PathBuf;

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

/// Whether this process runs as root (package installs and containers need it).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user of the process looking at it.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
