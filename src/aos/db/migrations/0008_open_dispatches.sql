-- Recovery also looks for dispatch rows still marked running (or waiting for a person) whose
-- session's lease is no longer theirs: a dispatch that nobody closed. This index holds only the
-- open ones, so the look every second costs nothing on the rest of the table.
CREATE INDEX dispatches_open_idx ON dispatches (session_id) WHERE status IN ('running', 'waiting_approval');
