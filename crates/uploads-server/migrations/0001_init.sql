-- The scale-out backend's schema: the ledger's records, split so that each request touches
-- O(1) rows. Applied once, in order, by `uploads serve` at startup (see src/pg/migrations.rs).

-- One row per Upload: the ledger's UploadRecord without its Parts.
CREATE TABLE uploads (
    id            text PRIMARY KEY,
    owner         text    NOT NULL,
    -- pending | cancelled | completed (expired is computed from expires_at).
    status        text    NOT NULL,
    -- The File a completed Upload produced.
    file_id       text,
    expires_at    bigint  NOT NULL,
    -- An expired Upload's Part bytes were removed (the sweep reports them once).
    parts_removed boolean NOT NULL DEFAULT false,
    record        jsonb   NOT NULL
);
CREATE INDEX uploads_by_expiry ON uploads (expires_at);

-- One row per Part, in the order the Parts were added.
CREATE TABLE upload_parts (
    upload_id  text   NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    part_id    text   NOT NULL,
    seq        bigserial,
    bytes      bigint NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (upload_id, part_id)
);
CREATE INDEX upload_parts_in_order ON upload_parts (upload_id, seq);

-- One row per File; the list index serves `GET /files` (owner, purpose, order, after).
CREATE TABLE files (
    id         text   PRIMARY KEY,
    owner      text   NOT NULL,
    purpose    text   NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    record     jsonb  NOT NULL
);
CREATE INDEX files_by_owner ON files (owner, created_at, id);
CREATE INDEX files_by_owner_purpose ON files (owner, purpose, created_at, id);
CREATE INDEX files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;

-- Objects to delete from the bucket once `not_before` (unix seconds) has passed: written in
-- the transaction that stops needing them, or before an object is written at all (an
-- intent, removed by the transaction that records the object), so that no object outlives
-- its rows, whichever instance dies when.
CREATE TABLE doomed_objects (
    key        text   PRIMARY KEY,
    not_before bigint NOT NULL
);
CREATE INDEX doomed_objects_due ON doomed_objects (not_before);
