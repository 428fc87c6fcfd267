-- Collecting objects no longer holds a transaction across the bucket's deletes (a slow bucket
-- would keep it open past idle_in_transaction_session_timeout): a sweeper claims due rows by
-- setting `claimed_until` (unix seconds, the database's clock) and commits, deletes the
-- objects, then the rows it still holds. A claim that lapsed (its instance died) is taken
-- again. An intent whose row is claimed cannot be consumed: its object may be gone.
ALTER TABLE doomed_objects ADD COLUMN claimed_until bigint;

-- Uploads swept before the ledger's records carried the mark: the record says it too, so the
-- ledger keeps them expired whatever the clock reads.
UPDATE uploads SET record = jsonb_set(record, '{parts_removed}', 'true')
WHERE parts_removed AND status = 'pending';
