-- The dispatch queue, and where each agent may run (docs/deployment.md, "Several kernels").
--
-- A message that cannot start its dispatch now (its session runs one, on this kernel or another;
-- or its agent lives on another kernel) becomes a row here beside its `message.queued` fact. Any
-- kernel allowed to run the agent claims the oldest row of a free session with
-- FOR UPDATE SKIP LOCKED on the session, and starts it. The row's id is the dispatch it starts:
-- its state becomes 'started' in the transaction that creates that dispatch, so it starts once,
-- whichever kernel frees the session and however many try.
CREATE TABLE dispatch_queue (
    id            text PRIMARY KEY,
    session_id    text NOT NULL REFERENCES sessions (id),
    agent_id      text NOT NULL REFERENCES agents (id),
    seq           bigint NOT NULL,           -- its message.queued fact (text and meta are there)
    request_id    text,                      -- the caller's id for it (a2a message, schedule run)
    state         text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'started', 'dropped')),
    queued_by     text NOT NULL,             -- kernel id
    claimed_by    text,                      -- kernel id, while starting it
    claimed_until timestamptz,
    started_by    text,
    reason        text,                      -- why it was dropped
    created_at    timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz
);
-- Only waiting rows are indexed: looking for work costs nothing while none waits.
CREATE INDEX dispatch_queue_waiting_idx ON dispatch_queue (session_id, seq) WHERE state = 'queued';

-- Messages queued before this table (their dispatch never began, nor were they given up) wait
-- in it now.
INSERT INTO dispatch_queue (id, session_id, agent_id, seq, state, queued_by, created_at)
SELECT q.meta->>'queued_for', q.session_id, s.agent_id, q.seq, 'queued', 'migration-0010', q.created_at
FROM history q JOIN sessions s ON s.id = q.session_id
WHERE q.kind = 'message.queued' AND q.meta->>'queued_for' IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM dispatches d WHERE d.id = q.meta->>'queued_for')
  AND NOT EXISTS (SELECT 1 FROM history u WHERE u.session_id = q.session_id
                  AND u.kind = 'message.unqueued' AND u.meta->>'queued_for' = q.meta->>'queued_for')
ON CONFLICT (id) DO NOTHING;

-- An agent's placement: the kernel whose workspace holds its files (its name), 'any' when its
-- workspace is on storage every kernel mounts, or null until a kernel first runs it.
ALTER TABLE agents ADD COLUMN placement text;

-- A kernel's name is stable across its restarts (config kernel.name; by default host:home);
-- placements name it. Its id is new at every start.
ALTER TABLE kernels ADD COLUMN name text;
UPDATE kernels SET name = host || ':' || home WHERE name IS NULL;
