-- outbox's PostgreSQL store, schema version 2: the quarantine, records set aside because they
-- could not be read or sent, kept with the reason until an operator looks at them.
-- They count as quarantined in outbox_counters (accepted = rows + purged + quarantined).

CREATE TABLE outbox_quarantine (
    trace_id          text   PRIMARY KEY,
    reason            text   NOT NULL,
    quarantined_at_ms bigint NOT NULL,
    -- The status the record was counted under before it was set aside.
    previous_status   text,
    -- What was set aside, as the store that quarantined it kept it: from the embedded store,
    -- its entry's and its body's bytes in hex ({"original_hex": ..., "original_body_hex": ...}).
    original          jsonb  NOT NULL
);
