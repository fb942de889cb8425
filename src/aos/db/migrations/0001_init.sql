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
) WITH (fillfactor = 70);  -- room for HOT updates: every append bumps last_seq
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

-- Every insert, by any path, is fenced and numbered here, in one row update of the session:
-- - seq NULL takes the next seq; an explicit seq must be exactly the next one (dense);
-- - epoch NULL is a writer without a lease (an administrator): refused while a live lease is
--   held, otherwise stamped with the current epoch; an explicit epoch must be the current one;
-- - archived sessions take no appends.
-- Any refusal raises, which rolls back the last_seq bump with the insert: no gap is possible.
-- A retried idempotency key fails on the unique index (also rolling back); the store then
-- returns the fact already stored.
-- On a refusal, a retry of a fact already stored is answered as a retry (AOS07), not refused:
-- its first attempt was accepted.
CREATE FUNCTION aos_refuse_unless_retry(p_session text, p_key text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM history WHERE session_id = p_session AND idempotency_key = p_key) THEN
        RAISE EXCEPTION 'fact % of session % is already stored', p_key, p_session USING ERRCODE = 'AOS07';
    END IF;
END $$;

CREATE FUNCTION aos_history_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    UPDATE sessions SET last_seq = last_seq + 1, updated_at = now()
        WHERE id = NEW.session_id
        RETURNING last_seq, lease_epoch, lease_owner, lease_until, status INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no session %', NEW.session_id USING ERRCODE = 'AOS02';
    END IF;
    IF s.status <> 'active' THEN
        PERFORM aos_refuse_unless_retry(NEW.session_id, NEW.idempotency_key);
        RAISE EXCEPTION 'session % is archived', NEW.session_id USING ERRCODE = 'AOS03';
    END IF;
    IF NEW.epoch IS NULL THEN
        IF s.lease_owner IS NOT NULL AND s.lease_until > now() THEN
            PERFORM aos_refuse_unless_retry(NEW.session_id, NEW.idempotency_key);
            RAISE EXCEPTION 'session % is busy: % holds its lease', NEW.session_id, s.lease_owner
                USING ERRCODE = 'AOS06';
        END IF;
        NEW.epoch := s.lease_epoch;
    ELSIF NEW.epoch <> s.lease_epoch THEN
        PERFORM aos_refuse_unless_retry(NEW.session_id, NEW.idempotency_key);
        RAISE EXCEPTION 'stale lease epoch % for session % (current epoch %)', NEW.epoch, NEW.session_id,
            s.lease_epoch USING ERRCODE = 'AOS04';
    END IF;
    IF NEW.seq IS NULL THEN
        NEW.seq := s.last_seq;
    ELSIF NEW.seq <> s.last_seq THEN
        RAISE EXCEPTION 'seq % is not the next seq % of session %', NEW.seq, s.last_seq, NEW.session_id
            USING ERRCODE = 'AOS05';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER history_fence BEFORE INSERT ON history
    FOR EACH ROW EXECUTE FUNCTION aos_history_fence();

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
