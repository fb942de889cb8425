-- Messages queued behind a running dispatch (session.dispatch with if_busy: queue).
--
-- A `message.queued` fact names the dispatch it will start (meta.queued_for); that dispatch's row
-- exists once it started, and a `message.unqueued` fact records one that could not start. The
-- daemon looks for queued messages with neither when a dispatch ends and at start: this partial
-- index holds only those two kinds, so the look costs nothing on the rest of history (and no
-- write to any other fact).
CREATE INDEX history_queued_idx ON history (session_id, seq)
    WHERE kind IN ('message.queued', 'message.unqueued');
