-- Kernels: several may share one database (docs/deployment.md). Each registers here when it
-- starts and beats its heart (heartbeat_at) every third of its ttl. One whose heartbeat is older
-- than its ttl is dead, on whatever host or in whatever PID namespace it ran: no kernel reads
-- another's /proc. Its sessions are then taken over by a live one.
CREATE TABLE kernels (
    id            text PRIMARY KEY,
    host          text NOT NULL,
    boot_id       text NOT NULL,
    pid           integer NOT NULL,
    pid_ns        text,
    home          text NOT NULL,
    version       text NOT NULL,
    ttl_s         real NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);

-- The kernel each dispatch ran on (the first part of its lease owner) is kept when another
-- kernel recovers it: the recovering owner goes beside it.
ALTER TABLE dispatches ADD COLUMN kernel_id text GENERATED ALWAYS AS (split_part(owner, '/', 1)) STORED;
ALTER TABLE dispatches ADD COLUMN recovered_by text;

-- Which kernel served each logged command.
ALTER TABLE runtime_log ADD COLUMN kernel_id text;

-- Recovery looks at leased sessions every second: only those, however many sessions there are.
CREATE INDEX sessions_leased_idx ON sessions (lease_owner) WHERE lease_owner IS NOT NULL;
