-- The md5 of a pending Upload, computed while its Parts arrive, by whichever instance stores
-- them, in file order (the position a Part's request names). The chain's state after each
-- Part it hashed is kept on that Part's row (about 90 bytes: MD5's four words, the block
-- count and the partial block), so a complete reuses the longest prefix of its listed Parts
-- that the chain hashed in that order, and an instance that dies while hashing loses nothing
-- but its lease.
ALTER TABLE upload_parts
    -- The 0-based position in the file the Part's request named; NULL: none.
    ADD COLUMN position    integer,
    -- The Part's place in the chain, once hashed into it.
    ADD COLUMN chain_index integer,
    -- The md5 state after this Part, once hashed into the chain.
    ADD COLUMN md5_after   bytea;
CREATE INDEX upload_parts_by_position ON upload_parts (upload_id, position)
    WHERE position IS NOT NULL;

ALTER TABLE uploads
    -- The position the chain hashes next, and how many Parts it holds.
    ADD COLUMN md5_next_position integer NOT NULL DEFAULT 0,
    ADD COLUMN md5_chained       integer NOT NULL DEFAULT 0,
    -- Until when (unix seconds, the database's clock) an instance holds the chain to hash its
    -- next Part; NULL: nobody does.
    ADD COLUMN md5_hashing_until bigint;
-- The state the chain continues from: its last Part's.
CREATE INDEX upload_parts_in_chain ON upload_parts (upload_id, chain_index)
    WHERE chain_index IS NOT NULL;
