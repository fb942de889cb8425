-- Sessions' updates stay HOT again. 0007 indexed sessions.lease_owner for recovery's look every
-- second; an index on a column an update changes makes that update non-HOT, so every lease
-- claim and release wrote a new entry in each of the sessions' indexes (about 600 bytes of WAL per
-- dispatch). Recovery's frequent look now starts from the open dispatch rows
-- (dispatches_open_idx, 0008); the rare lease with no open row (a kernel that died between closing
-- its row and giving the lease back) is found by a full look at start and every 30 s, and by any
-- dispatch that claims that session.
DROP INDEX IF EXISTS sessions_leased_idx;
-- dispatches_open_idx has the same predicate and serves every query this one served.
DROP INDEX IF EXISTS dispatches_live_idx;
