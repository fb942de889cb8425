-- AOS schema, version 1: agents, sessions, the append-only history, content, runtime log.
-- Every row carries schema_version so readers can migrate old JSON step by step.

CREATE TABLE agents (
    id             text PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    display_name   text,
    model          text,
    instructions   text NOT NULL DEFAULT '',
    workspace      text,
    settings       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    revision       integer NOT NULL DEFAULT 1,
    schema_version smallint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id             text PRIMARY KEY,
    agent_id       text NOT NULL REFERENCES agents (id),
    title          text,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    phase          text NOT NULL DEFAULT 'idle',
    settings       jsonb NOT NULL DEFAULT '{}'::jsonb,
    parent_id      text REFERENCES sessions (id),
    forked_at_seq  bigint,
    lease_owner    text,
    lease_epoch    bigint NOT NULL DEFAULT 0,
    lease_until    timestamptz,
    last_seq       bigint NOT NULL DEFAULT 0,
    revision       integer NOT NULL DEFAULT 1,
    schema_version smallint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_agent_idx ON sessions (agent_id, created_at);

CREATE TABLE history (
    session_id      text NOT NULL REFERENCES sessions (id),
    seq             bigint NOT NULL,
    epoch           bigint NOT NULL,
    kind            text NOT NULL,
    role            text,
    body            jsonb NOT NULL,
    meta            jsonb,
    idempotency_key text NOT NULL,
    schema_version  smallint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq),
    UNIQUE (session_id, idempotency_key)
);

-- History is the truth: rows are never changed or removed, whoever asks.
CREATE FUNCTION aos_history_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'history is append-only: % is not allowed', TG_OP USING ERRCODE = 'AOS01';
END $$;
CREATE TRIGGER history_no_update BEFORE UPDATE OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION aos_history_immutable();
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON history
    FOR EACH STATEMENT EXECUTE FUNCTION aos_history_immutable();

-- Every insert, by any path, must carry the session's current lease epoch and the next seq:
-- stale writers are fenced off and seq stays dense. The trigger also advances last_seq.
CREATE FUNCTION aos_history_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cur_epoch bigint;
    cur_seq   bigint;
BEGIN
    SELECT lease_epoch, last_seq INTO cur_epoch, cur_seq FROM sessions WHERE id = NEW.session_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no session %', NEW.session_id USING ERRCODE = 'AOS02';
    END IF;
    IF NEW.epoch <> cur_epoch THEN
        RAISE EXCEPTION 'stale lease epoch % for session % (current epoch %)', NEW.epoch, NEW.session_id, cur_epoch
            USING ERRCODE = 'AOS04';
    END IF;
    IF NEW.seq <> cur_seq + 1 THEN
        RAISE EXCEPTION 'seq % is not the next seq % of session %', NEW.seq, cur_seq + 1, NEW.session_id
            USING ERRCODE = 'AOS05';
    END IF;
    UPDATE sessions SET last_seq = NEW.seq WHERE id = NEW.session_id;
    RETURN NEW;
END $$;
CREATE TRIGGER history_fence BEFORE INSERT ON history
    FOR EACH ROW EXECUTE FUNCTION aos_history_fence();

-- One round trip per append: lock the session, answer a retried key with the stored fact,
-- refuse archived sessions, insert at the next seq (the fence trigger checks the epoch).
-- p_epoch NULL is a writer without a lease (an administrator): refused while a live lease is held.
CREATE FUNCTION aos_append(
    p_session text, p_epoch bigint, p_kind text, p_role text, p_body jsonb, p_meta jsonb, p_key text
) RETURNS TABLE (seq bigint, epoch bigint, created_at timestamptz, duplicate boolean) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    s record;
    h record;
BEGIN
    SELECT sessions.last_seq, sessions.status, sessions.lease_owner, sessions.lease_until, sessions.lease_epoch
        INTO s FROM sessions WHERE id = p_session FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no session %', p_session USING ERRCODE = 'AOS02';
    END IF;
    SELECT history.seq, history.epoch, history.created_at INTO h
        FROM history WHERE session_id = p_session AND idempotency_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT h.seq, h.epoch, h.created_at, true;
        RETURN;
    END IF;
    IF s.status <> 'active' THEN
        RAISE EXCEPTION 'session % is archived', p_session USING ERRCODE = 'AOS03';
    END IF;
    IF p_epoch IS NULL AND s.lease_owner IS NOT NULL AND s.lease_until > now() THEN
        RAISE EXCEPTION 'session % is busy: % holds its lease', p_session, s.lease_owner USING ERRCODE = 'AOS06';
    END IF;
    RETURN QUERY
        INSERT INTO history AS x (session_id, seq, epoch, kind, role, body, meta, idempotency_key)
        VALUES (p_session, s.last_seq + 1, coalesce(p_epoch, s.lease_epoch), p_kind, p_role, p_body, p_meta, p_key)
        RETURNING x.seq, x.epoch, x.created_at, false;
END $$;

CREATE TABLE content (
    id             text NOT NULL,            -- sha256 of the bytes, hex
    agent_id       text NOT NULL REFERENCES agents (id),
    session_id     text REFERENCES sessions (id),
    data           bytea NOT NULL,
    size           bigint NOT NULL,
    line_count     integer NOT NULL,
    mime           text NOT NULL DEFAULT 'text/plain',
    schema_version smallint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, id)
);

CREATE TABLE runtime_log (
    id          bigserial PRIMARY KEY,
    ts          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    op          text NOT NULL,
    args        jsonb,
    outcome     text NOT NULL,
    error       jsonb,
    result      jsonb,
    duration_ms real
);
CREATE INDEX runtime_log_op_idx ON runtime_log (op, id);
