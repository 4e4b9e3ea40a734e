-- outbox's PostgreSQL store, schema version 2: `accepted` as a stored counter, a quarantine
-- table, and trace IDs in byte order.

-- Trace IDs compare byte by byte (as the embedded store orders its keys), whatever the
-- database's locale: listings page in the same order on both engines, and the primary key
-- compares with memcmp instead of the locale's rules. Only the index is rebuilt.
ALTER TABLE outbox_records ALTER COLUMN trace_id SET DATA TYPE text COLLATE "C";

-- Submissions accepted, one row per group committer of every instance (a random ID each
-- chooses when it starts), raised in the same statement as the group's insert by the rows
-- it actually inserted. Rows of different committers never contend, so instances do not
-- queue on one hot row; `accepted` is the sum. Then the accounting identity
-- (accepted = records + quarantined + purged) is a check that can fail, not a definition.
CREATE TABLE outbox_accepted (
    committer uuid   PRIMARY KEY,
    value     bigint NOT NULL
) WITH (
    -- Every group commit rewrites its committer's row: room for those HOT updates.
    fillfactor = 50
);
-- What a store of schema version 1 had accepted: every row and what left the table.
INSERT INTO outbox_accepted (committer, value)
SELECT '00000000-0000-0000-0000-000000000000',
       (SELECT count(*) FROM outbox_records)
     + (SELECT coalesce(sum(value), 0) FROM outbox_counters WHERE name IN ('purged', 'quarantined'));

-- Records moved out of the lifecycle (they do not decode, or cannot be sent), kept whole for
-- an operator: the row as it was (`to_jsonb` of it, so a row whose columns no longer make a
-- record is kept too), why, and when. A trace ID may be quarantined more than once (posted
-- again after its first row left), so it is not the key.
CREATE TABLE outbox_quarantine (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trace_id          text   COLLATE "C" NOT NULL,
    reason            text   NOT NULL,
    quarantined_at_ms bigint NOT NULL,
    record            jsonb  NOT NULL
);
CREATE INDEX outbox_quarantine_trace_id ON outbox_quarantine (trace_id);
