-- Inbound facts, and the input of each dispatch.
--
-- An inbound fact arrives from outside the session's running dispatch: a message from another
-- agent, a skill loaded by the agent's own CLI, a summary written by the context skill. It is
-- written with epoch -1, which the fence stamps with the session's current epoch whether or not
-- a lease is held: it does not compete with the lease holder's work, it is simply the next fact,
-- and the running dispatch sees it at its next assemble. Everything else is fenced as before.

CREATE OR REPLACE FUNCTION aos_history_fence() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF NEW.epoch = -1 THEN
        NEW.epoch := s.lease_epoch;
    ELSIF NEW.epoch IS NULL THEN
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

-- The seq of the user message that started each dispatch (its meta says who sent it and why).
ALTER TABLE dispatches ADD COLUMN input_seq bigint;
