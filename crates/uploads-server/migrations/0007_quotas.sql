-- Quotas and request rates (issue 25).
--
-- Each owner's usage is counted in the transaction of a create, under an advisory lock on the
-- owner: its Files' bytes plus its pending Uploads' declared bytes. The sizes are read from
-- the records' JSON into generated columns, so the rows are written as before. They are read
-- from the record's text, not with `->>`: a JSON operator that returns text unescapes every
-- string of the record, and fails on a name holding a NUL (`\u0000`), which `json` keeps (see
-- 0006). The first `"bytes":` of the text is the field (the File's, nested first in a File
-- record): inside a string a quote is always escaped, so no value can hold that pattern.
ALTER TABLE files
    ADD COLUMN bytes bigint GENERATED ALWAYS AS
        (substring(record::text FROM '"bytes":([0-9]+)')::bigint) STORED;
ALTER TABLE uploads
    ADD COLUMN bytes bigint GENERATED ALWAYS AS
        (substring(record::text FROM '"bytes":([0-9]+)')::bigint) STORED;
CREATE INDEX files_usage_by_owner ON files (owner) INCLUDE (bytes, expires_at);
CREATE INDEX uploads_pending_by_owner ON uploads (owner, expires_at) INCLUDE (bytes)
    WHERE status = 'pending' AND NOT parts_removed;

-- One request-rate bucket per API key, named by the key's SHA-256 (never the key): its
-- theoretical arrival time (GCRA, see uploads_core::rate), in microseconds of the database's
-- clock; whether the latest request was allowed; and when it came.
CREATE TABLE rate_buckets (
    key_digest bytea   PRIMARY KEY,
    tat        bigint  NOT NULL,
    allowed    boolean NOT NULL,
    seen_at    bigint  NOT NULL
);
