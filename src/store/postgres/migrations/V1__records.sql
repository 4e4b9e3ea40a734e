-- outbox's PostgreSQL store, schema version 1. See src/store/postgres/mod.rs for the design.
-- Times are milliseconds since the Unix epoch (bigint), as in the embedded store.

CREATE TABLE outbox_records (
    trace_id           text    PRIMARY KEY,
    -- 'pending', 'delivered' or 'dead'; in flight is a live lease on a pending record.
    status             text    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts           bigint  NOT NULL DEFAULT 0,
    received_at_ms     bigint  NOT NULL,
    -- The receipt's time as the client got it (RFC 3339, milliseconds).
    received_at        text    NOT NULL,
    -- Next delivery attempt (the record's next_attempt_at_ms).
    due_at_ms          bigint  NOT NULL,
    last_attempt_at_ms bigint,
    last_error         text,
    last_status_code   integer,
    -- SHA-256 of the payload in normal form: a repeated key with another payload is a 409.
    payload_hash       bytea   NOT NULL,
    -- The form's fields as JSON text; NULL once delivered (a tombstone).
    payload            text,
    client_ip          text    NOT NULL DEFAULT '',
    user_agent         text,
    src                text    NOT NULL,
    form_type          text    NOT NULL,
    delivered_at_ms    bigint,
    dead_at_ms         bigint,
    audit              jsonb   NOT NULL DEFAULT '[]',
    -- The lease: who claimed the record for delivery, and until when (the database's clock).
    claim_token        uuid,
    lease_until_ms     bigint
) WITH (
    -- Claims and settles rewrite rows; room on each page lets a lease (no indexed column)
    -- be a HOT update that touches no index.
    fillfactor = 80,
    -- A queue table is all inserts, updates and deletes: vacuum it after 1% of it changed
    -- (the default waits for 20%), and without cost-based pauses, so dead rows do not pile up
    -- in front of the claim index.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- Claims: pending records in due order. Only pending rows are in it, so it stays as small
-- as the backlog.
CREATE INDEX outbox_records_due ON outbox_records (due_at_ms) WHERE status = 'pending';

-- The purge: tombstones in delivery order.
CREATE INDEX outbox_records_delivered ON outbox_records (delivered_at_ms) WHERE status = 'delivered';

-- Counters for what left the table: accepted = rows + purged + quarantined. Only the purge
-- and the quarantine write them, never intake, so group commits of several instances do not
-- queue on one row.
CREATE TABLE outbox_counters (
    name  text   PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO outbox_counters (name, value) VALUES ('purged', 0), ('quarantined', 0);
