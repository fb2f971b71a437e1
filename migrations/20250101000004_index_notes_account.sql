-- no-transaction
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block. It waits
-- for every snapshot older than itself, which is why pgboot's waiters poll
-- pg_try_advisory_lock instead of blocking in pg_advisory_lock.
CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_account_id_idx ON notes (account_id);
