-- A record is the ledger's JSON, read and written whole, never queried inside. `jsonb`
-- refuses a NUL (`\u0000`, which PostgreSQL's text cannot hold), so an Upload or File whose
-- name held one was a 503 here (retried for ever by the SDKs) while the directory stored it:
-- `json` keeps the text as given, NUL escapes included.
ALTER TABLE uploads ALTER COLUMN record TYPE json USING record::json;
ALTER TABLE files ALTER COLUMN record TYPE json USING record::json;
