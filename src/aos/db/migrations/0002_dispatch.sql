-- Dispatches (one ReActUnit run each), durable approvals, and usage of calls made outside
-- dispatches (compute.complete). Usage of dispatch steps is read from the assistant facts'
-- meta.usage in history: it costs no extra write per step.

CREATE TABLE dispatches (
    id             text PRIMARY KEY,
    session_id     text NOT NULL REFERENCES sessions (id),
    agent_id       text NOT NULL REFERENCES agents (id),
    epoch          bigint NOT NULL,
    owner          text NOT NULL,
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'waiting_approval', 'done', 'failed', 'interrupted',
                                     'refused', 'max_steps', 'crashed', 'lease_lost')),
    model          text,
    steps          integer NOT NULL DEFAULT 0,
    error          jsonb,
    schema_version smallint NOT NULL DEFAULT 1,
    started_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz
);
CREATE INDEX dispatches_session_idx ON dispatches (session_id, started_at);
CREATE INDEX dispatches_live_idx ON dispatches (status) WHERE status IN ('running', 'waiting_approval');

CREATE TABLE approvals (
    id             text PRIMARY KEY,
    session_id     text NOT NULL REFERENCES sessions (id),
    dispatch_id    text NOT NULL REFERENCES dispatches (id),
    agent_id       text NOT NULL REFERENCES agents (id),
    call_id        text NOT NULL,
    command        text NOT NULL,
    cwd            text NOT NULL,
    reason         text NOT NULL,
    skill          text NOT NULL,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'cancelled')),
    resolved_by    text,
    note           text,
    schema_version smallint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz
);
CREATE INDEX approvals_pending_idx ON approvals (status, created_at) WHERE status = 'pending';

CREATE TABLE usage (
    id                bigserial PRIMARY KEY,
    ts                timestamptz NOT NULL DEFAULT now(),
    agent_id          text REFERENCES agents (id),
    session_id        text REFERENCES sessions (id),
    source            text NOT NULL,
    actor             text NOT NULL,
    model             text NOT NULL,
    prompt_tokens     integer NOT NULL,
    completion_tokens integer NOT NULL,
    cost              double precision,
    latency_ms        real
);
CREATE INDEX usage_ts_idx ON usage (ts);

-- Usage reads of dispatch steps scan assistant facts; this keeps that scan small.
CREATE INDEX history_assistant_idx ON history (created_at) WHERE kind = 'message' AND role = 'assistant';
