//! `backup`, `restore` and `compact` with a store URL (from the flag, the environment or the
//! config file, as the service reads it) refuse with exit 2 and name the PostgreSQL tools
//! that do their job; they decide from the settings alone, so no server is needed. `verify
//! --repair` is refused too: the PostgreSQL store has no indexes of its own to rebuild.

use super::harness::ops::Run;
use super::harness::postgres::Postgres;
use super::ops::{outbox_in, outbox_pg};

/// A store URL with a password, which no message may show.
const URL: &str = "postgres://outbox:s3cret-pw@db1.example:5432/outbox";

/// Exit 2, every word of `names` in the message, the password in none of it, nothing made.
fn assert_refused(r: &Run, cwd: &std::path::Path, names: &[&str]) {
    assert_eq!(r.code, 2, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    for name in names {
        assert!(r.stderr.contains(name), "{name} not named: {}", r.stderr);
    }
    assert!(r
        .stderr
        .contains("the store is PostgreSQL (postgres://outbox:********@db1"));
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    let made: Vec<_> = std::fs::read_dir(cwd)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        made.iter().all(|n| n == "outbox.toml" || n == "backup-src"),
        "{made:?}"
    );
}

#[test]
fn backup_with_a_store_url_flag_names_pg_basebackup_pg_dump_and_wal_archiving() {
    let tmp = tempfile::tempdir().unwrap();
    let r = outbox_in(tmp.path(), &["backup", "--store-url", URL, "dest"], &[]);
    assert_refused(
        &r,
        tmp.path(),
        &[
            "pg_basebackup",
            "pg_dump -t 'outbox_*'",
            "WAL archiving",
            "point-in-time recovery",
        ],
    );
}

#[test]
fn restore_with_a_store_url_in_the_environment_names_postgresqls_restore_tools() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("backup-src")).unwrap();
    let r = outbox_in(
        tmp.path(),
        &["restore", "backup-src"],
        &[("OUTBOX_STORE_URL", URL)],
    );
    assert_refused(
        &r,
        tmp.path(),
        &[
            "pg_basebackup",
            "pg_restore",
            "pg_dump",
            "WAL archive",
            "point-in-time recovery",
        ],
    );
}

#[test]
fn compact_with_a_store_url_in_the_config_file_names_autovacuum_and_vacuum() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("outbox.toml");
    std::fs::write(&config, format!("store_url = \"{URL}\"\n")).unwrap();
    let r = outbox_in(
        tmp.path(),
        &["compact", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_refused(&r, tmp.path(), &["autovacuum", "VACUUM"]);
}

#[test]
fn verify_repair_on_postgresql_is_refused_as_there_is_nothing_to_rebuild() {
    let Some(pg) = Postgres::start("ops verify --repair on postgres") else {
        return;
    };
    let r = outbox_pg(&pg.url(), "verify", &["--repair"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the PostgreSQL store has none to rebuild"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("run outbox verify without --repair"),
        "{}",
        r.stderr
    );
}
