-- Adding a Part reads O(1) rows: the Upload's row carries its Parts' count and total, which
-- is all the ledger needs to decide on one more Part. A trigger keeps them, so that every
-- writer (an instance of an older version during a rolling upgrade too) counts alike.
-- Part rows are only ever removed with their Upload's row (ON DELETE CASCADE), so there is
-- nothing to subtract.
ALTER TABLE uploads
    ADD COLUMN part_count  bigint NOT NULL DEFAULT 0,
    ADD COLUMN parts_bytes bigint NOT NULL DEFAULT 0;

UPDATE uploads u SET part_count = p.count, parts_bytes = p.bytes
FROM (SELECT upload_id, count(*) AS count, sum(bytes) AS bytes
      FROM upload_parts GROUP BY upload_id) p
WHERE p.upload_id = u.id;

CREATE FUNCTION count_added_part() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE uploads SET part_count = part_count + 1, parts_bytes = parts_bytes + NEW.bytes
    WHERE id = NEW.upload_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER upload_parts_tally AFTER INSERT ON upload_parts
    FOR EACH ROW EXECUTE FUNCTION count_added_part();
