//! Listing and verification: the table read in trace ID order, one page at a time.
//!
//! Pages are keyset pages (`WHERE trace_id > $last ORDER BY trace_id LIMIT n`), so each is
//! one short index range scan however deep the listing goes; trace IDs compare byte by byte
//! (the column's collation is "C"), the order the embedded store lists in.
//!
//! `verify` reads every row in such pages inside one read-only REPEATABLE READ transaction:
//! one snapshot for the whole check, so the recount and the counters describe the same
//! moment while instances go on writing, and no page is one giant result. It checks that
//! each row makes a record, the record's own invariants ([`problems`]), that the
//! `quarantined` counter matches the quarantine table, and the accounting identity:
//! `accepted` (stored, raised by the group commits) equals the rows plus what left the
//! table. The snapshot holds back vacuum while it runs, as any long read does; a page is
//! bounded by the read timeout.

use super::pool;
use super::row;
use super::{PgStore, PgStoreError, LEASED};
use crate::store::boundary::Verified;
use crate::store::{Record, Status};
use std::future::Future;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

/// Rows per page of [`PgStore::verify`]: bounded memory, and each page one short read.
const VERIFY_PAGE: i64 = 1000;

/// Up to `$2` rows after trace ID `$1` (from the first when NULL), in trace ID order.
fn page_sql() -> String {
    format!(
        "SELECT *, {LEASED} AS leased FROM outbox_records \
         WHERE ($1::text IS NULL OR trace_id > $1) ORDER BY trace_id LIMIT $2"
    )
}

/// Rows of a page: the trace ID and the record as shown, or why the row makes none.
pub(super) type Rows = Vec<(String, Result<Record, PgStoreError>)>;

fn decode(rows: &[Row]) -> Result<Rows, PgStoreError> {
    rows.iter()
        .map(|r| Ok((r.try_get("trace_id")?, row::shown(r))))
        .collect()
}

impl PgStore {
    /// Up to `limit` records after trace ID `after`, in trace ID order, a pending record
    /// under a live lease shown in flight; rows that make no record are skipped (verify
    /// reports them).
    pub async fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, PgStoreError> {
        let rows = self.rows_after(after, limit).await?;
        Ok(rows.into_iter().filter_map(|(_, r)| r.ok()).collect())
    }

    /// [`PgStore::page`] with the rows that make no record kept, with the reason.
    pub(super) async fn rows_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Rows, PgStoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = page_sql();
        let conn = pool::get(&self.pool).await?;
        let params: [(&(dyn ToSql + Sync), Type); 2] = [(&after, Type::TEXT), (&limit, Type::INT8)];
        let read = conn.client.query_typed(&sql, &params);
        let done = tokio::time::timeout(self.read_timeout, read).await;
        let rows = pool::bounded(conn, done, self.read_timeout, "reading a page of records")?;
        decode(&rows)
    }

    /// Reads every row, in pages of one snapshot, and checks each and the accounting.
    pub async fn verify(&self) -> Result<Verified, PgStoreError> {
        let mut conn = pool::get(&self.pool).await?;
        let done = verify_in(&mut conn.client, self.read_timeout).await;
        pool::bounded(conn, Ok(done), self.read_timeout, "verify")
    }
}

/// `work` within `limit`, a late answer as the server being unavailable.
async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgStoreError> {
    match tokio::time::timeout(limit, work).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(PgStoreError::Unavailable(format!(
            "verify got no answer within {limit:?}"
        ))),
    }
}

async fn verify_in(
    client: &mut tokio_postgres::Client,
    limit: Duration,
) -> Result<Verified, PgStoreError> {
    let start = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start();
    let tx = within(limit, start).await?;
    let mut out = Verified::default();
    let sql = page_sql();
    let mut after: Option<String> = None;
    loop {
        let params: [(&(dyn ToSql + Sync), Type); 2] =
            [(&after, Type::TEXT), (&VERIFY_PAGE, Type::INT8)];
        let page = tx.query_typed(&sql, &params);
        let rows = within(limit, page).await?;
        for r in &rows {
            let id: String = r.try_get("trace_id")?;
            out.records += 1;
            match row::shown(r) {
                Ok(rec) => {
                    let token = r.try_get::<_, Option<uuid::Uuid>>("claim_token")?;
                    let until = r.try_get::<_, Option<i64>>("lease_until_ms")?;
                    out.problems
                        .extend(problems(&rec, token.is_some(), until.is_some()));
                }
                Err(e) => out.problems.push(match e {
                    PgStoreError::Db(what) => format!("{what}: the row makes no record"),
                    e => format!("record {id}: {e}"),
                }),
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == VERIFY_PAGE => after = Some(last.try_get(0)?),
            _ => break,
        }
    }
    let counters = tx.query_typed_one(
        "SELECT (SELECT coalesce(sum(value), 0)::bigint FROM outbox_accepted), \
           (SELECT value FROM outbox_counters WHERE name = 'quarantined'), \
           (SELECT value FROM outbox_counters WHERE name = 'purged'), \
           (SELECT count(*) FROM outbox_quarantine)",
        &[],
    );
    let c = within(limit, counters).await?;
    let (accepted, quarantined, purged, in_quarantine): (i64, i64, i64, i64) =
        (c.try_get(0)?, c.try_get(1)?, c.try_get(2)?, c.try_get(3)?);
    within(limit, tx.commit()).await?;
    if quarantined != in_quarantine {
        out.problems.push(format!(
            "counter quarantined is {quarantined} but {in_quarantine} records are quarantined"
        ));
    }
    let left = out.records as i64 + quarantined + purged;
    if accepted != left {
        out.problems.push(format!(
            "accounting identity broken: accepted={accepted} but records ({}) + quarantined \
             ({quarantined}) + purged ({purged}) = {left}",
            out.records
        ));
    }
    Ok(out)
}

/// What is wrong with one stored record: its status against its times and payload, and its
/// lease (`token`, `until`: whether each lease column is set).
fn problems(r: &Record, token: bool, until: bool) -> Vec<String> {
    let id = &r.trace_id;
    let mut out = Vec::new();
    let status = r.status.as_str();
    let (delivered, dead) = (r.delivered_at_ms.is_some(), r.dead_at_ms.is_some());
    let (want_delivered, want_dead) = match r.status {
        Status::Pending | Status::InFlight => (false, false),
        Status::Delivered => (true, false),
        Status::Dead => (false, true),
    };
    if delivered != want_delivered {
        out.push(format!(
            "{status} record {id} {} a delivery time",
            if delivered { "has" } else { "lacks" }
        ));
    }
    if dead != want_dead {
        out.push(format!(
            "{status} record {id} {} a dead-letter time",
            if dead { "has" } else { "lacks" }
        ));
    }
    if r.payload.is_none() && r.status != Status::Delivered {
        out.push(format!(
            "{status} record {id} has no payload (only a delivered record may be a tombstone)"
        ));
    }
    if token != until {
        out.push(format!(
            "record {id} has half a lease (a claim token without an expiry, or the reverse)"
        ));
    }
    if token && !r.status.is_queued() {
        out.push(format!("{status} record {id} holds a delivery lease"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::problems;
    use crate::store::conformance::record;
    use crate::store::Status;

    #[test]
    fn a_record_whose_status_disagrees_with_its_times_payload_or_lease_is_a_problem() {
        let pending = record("v-1", r#"{"k":"v"}"#, 1);
        assert!(problems(&pending, false, false).is_empty());
        assert!(problems(&pending, true, true).is_empty(), "a live claim");
        assert_eq!(problems(&pending, true, false).len(), 1, "half a lease");

        let mut delivered = pending.clone();
        delivered.status = Status::Delivered;
        assert_eq!(
            problems(&delivered, false, false).len(),
            1,
            "no delivery time"
        );
        delivered.delivered_at_ms = Some(2);
        delivered.payload = None;
        assert!(problems(&delivered, false, false).is_empty(), "a tombstone");
        assert_eq!(
            problems(&delivered, true, true).len(),
            1,
            "leased after delivery"
        );

        let mut dead = pending.clone();
        dead.status = Status::Dead;
        dead.dead_at_ms = Some(2);
        assert!(problems(&dead, false, false).is_empty());
        dead.payload = None;
        dead.delivered_at_ms = Some(2);
        let found = problems(&dead, false, false);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|p| p.contains("v-1")), "{found:?}");
    }
}
