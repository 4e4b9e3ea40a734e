//! TLS to a real PostgreSQL with certificates made by `openssl`: `verify-full` checks the
//! chain and the host name, `verify-ca` the chain only, `require` encrypts without checking.

use super::harness::postgres::Postgres;
use super::harness::tools;
use outbox::store::postgres::{PgOptions, PgStore};
use std::path::Path;
use std::process::Command;

/// A CA (`<name>.pem`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    tools::run_ok(
        Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ])
            .args(["-subj", &format!("/CN={name}")]),
    );
}

/// A server certificate for `localhost` only, signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    tools::run_ok(
        Command::new("openssl")
            .current_dir(dir)
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-keyout", "server.key", "-out", "server.csr"])
            .args(["-subj", "/CN=localhost"]),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    tools::run_ok(
        Command::new("openssl")
            .current_dir(dir)
            .args([
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                &format!("{ca}.pem"),
            ])
            .args([
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
            ])
            .args(["-extfile", "san.ext", "-out", "server.crt"]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_checks_the_ca_and_the_host_name() {
    let Some(pg) = Postgres::start("postgres TLS") else {
        return;
    };
    if !tools::require("postgres TLS", &["openssl"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    make_server_cert(dir, "ca");
    // The server's key must belong to the server's user, readable by it alone.
    for f in ["server.crt", "server.key"] {
        std::fs::copy(dir.join(f), pg.data.join(f)).unwrap();
    }
    if tools::is_root() {
        tools::run_ok(
            Command::new("chown")
                .args(["postgres:postgres"])
                .args([pg.data.join("server.crt"), pg.data.join("server.key")]),
        );
    }
    tools::run_ok(
        Command::new("chmod")
            .arg("600")
            .arg(pg.data.join("server.key")),
    );
    let admin = super::sql(&pg).await;
    for sql in [
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "ALTER SYSTEM SET ssl = on",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let url = |host: &str, query: &str| {
        format!("postgres://postgres@{host}:{}/postgres?{query}", pg.port)
    };
    let root = |ca: &str| dir.join(format!("{ca}.pem")).display().to_string();
    let open = |u: String| async move { PgStore::open(&PgOptions::new(u)).await };

    let good = open(url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", root("ca")),
    ))
    .await
    .expect("verify-full with the right CA and name");
    let encrypted = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'outbox'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(encrypted.get::<_, i64>(0), 0, "every connection encrypted");
    assert!(encrypted.get::<_, i64>(1) > 0);
    drop(good);

    let wrong_name = open(url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", root("ca")),
    ))
    .await;
    assert!(
        wrong_name.is_err(),
        "the certificate does not name 127.0.0.1"
    );
    open(url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", root("ca")),
    ))
    .await
    .expect("verify-ca does not check the name");
    let wrong_ca = open(url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", root("other-ca")),
    ))
    .await;
    assert!(
        wrong_ca.is_err(),
        "a certificate from another CA is refused"
    );
    open(url("127.0.0.1", "sslmode=require"))
        .await
        .expect("require encrypts without checking");
}
