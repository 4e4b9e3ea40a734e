//! The schema: versioned migrations embedded in the binary (refinery), applied at start.
//!
//! refinery keeps the applied versions in `outbox_schema_history`. Before migrating, the
//! highest version there is compared with the newest this binary carries: a database migrated
//! by a newer outbox is refused ([`PgStoreError::NewerSchema`]) before anything is read or
//! written, as the embedded store refuses a data directory of a newer format. A newer binary
//! applies its new versions, all in one transaction.
//!
//! Two instances starting at once may both try the first migration; the loser's transaction
//! fails on the winner's tables and is simply tried again, then finds nothing to do.

use super::pool::Conn;
use super::PgStoreError;

mod embedded {
    refinery::embed_migrations!("src/store/postgres/migrations");
}

/// refinery's history table for this store.
pub const HISTORY_TABLE: &str = "outbox_schema_history";

/// The newest schema version this release carries (and the newest it accepts).
pub fn known_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The highest version applied to the database (0 for a new one).
pub async fn applied_version(conn: &Conn) -> Result<i64, PgStoreError> {
    let row = conn
        .client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.{HISTORY_TABLE}")],
        )
        .await
        .map_err(super::classify)?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = conn
        .client
        .query_one(
            &format!("SELECT coalesce(max(version), 0)::bigint FROM {HISTORY_TABLE}"),
            &[],
        )
        .await
        .map_err(super::classify)?;
    Ok(row.get(0))
}

/// Refuses a newer schema, then applies what is missing.
pub async fn migrate(conn: &mut Conn) -> Result<(), PgStoreError> {
    let known = known_version();
    let mut tries = 0;
    loop {
        let found = applied_version(conn).await?;
        if found > known {
            return Err(PgStoreError::NewerSchema { found, known });
        }
        if found == known {
            return Ok(());
        }
        let mut runner = embedded::migrations::runner().set_grouped(true);
        runner.set_migration_table_name(HISTORY_TABLE);
        let run = runner.run_async(&mut conn.client).await;
        match run {
            Ok(report) => {
                for m in report.applied_migrations() {
                    tracing::info!(
                        version = m.version(),
                        name = m.name(),
                        "PostgreSQL store schema migrated"
                    );
                }
                return Ok(());
            }
            // Another instance was migrating at the same moment: look again.
            Err(_) if tries < 3 => tries += 1,
            Err(e) => return Err(PgStoreError::Migration(e.to_string())),
        }
    }
}
