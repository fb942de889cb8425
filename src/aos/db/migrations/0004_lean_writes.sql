-- Foreign keys that bought nothing on the hot path.
--
-- Each foreign-key check locks the referenced row (FOR KEY SHARE), and each such lock is a WAL
-- record: six per invocation on `sessions` for history alone (bench/wal_breakdown.py).
--
-- history.session_id: the fence trigger already updates the session's row for every insert and
-- raises AOS02 when there is none; sessions are never deleted (they are archived).
-- dispatches.session_id, dispatches.agent_id: only the kernel writes dispatches, in the
-- transaction that takes the session's lease (or after taking it over), with the session's own
-- agent; neither sessions nor agents are ever deleted.
ALTER TABLE history DROP CONSTRAINT IF EXISTS history_session_id_fkey;
ALTER TABLE dispatches DROP CONSTRAINT IF EXISTS dispatches_session_id_fkey;
ALTER TABLE dispatches DROP CONSTRAINT IF EXISTS dispatches_agent_id_fkey;
