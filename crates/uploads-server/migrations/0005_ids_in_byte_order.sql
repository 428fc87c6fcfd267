-- `GET /files` pages by (created_at, id), and the ledger orders ids by their bytes: on a
-- database whose default collation is not C (en_US.UTF-8, the default of many installs and
-- managed services), an `after` cursor between two Files created in the same second skipped
-- or repeated Files. Ids are ASCII: in C they order as the ledger orders them. The indexes
-- on the column are rebuilt with it.
ALTER TABLE files ALTER COLUMN id TYPE text COLLATE "C";
