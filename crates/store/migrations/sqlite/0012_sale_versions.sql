-- Every change of a sale (its stock, its status) counts one more version, so
-- that events about it from several nodes can be told apart by age.
ALTER TABLE sales ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
