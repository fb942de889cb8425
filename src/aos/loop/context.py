"""The model context a unit holds, kept up to date through ``session.assemble``.

The protocol is incremental in both directions (see docs/hooks.md). The handler gets the facts
appended since the previous call only (``since``: the seq they follow; across dispatches the
dispatcher remembers it per session) and ``output_data`` ``{"base": n, "messages": []}``, ``n``
being the length of the context held here. It returns ``{"base": k, "messages": [...]}``: keep
the first ``k`` messages, then these. Without ``base`` (or on a dispatch's first step, where
nothing is held) the messages are the whole context. So a step sends and projects only what
changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .model_info import context_window

__all__ = ["Context", "InvalidContext"]

#: Reads a session's facts after a seq: ``(session_id, after_seq) -> facts``.
Reader = Callable[[str, int], Awaitable[list[dict[str, Any]]]]
#: Runs the ``session.assemble`` transform: ``(input_data, output_data) -> output``.
Assembler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]


class InvalidContext(ValueError):
    """``session.assemble`` answered something that is not a context."""


class Context:
    """One dispatch's copy of the session's model context."""

    def __init__(
        self, session_id: str, model: str, read: Reader, seen: dict[str, int], windows: dict[str, int]
    ):
        self.session_id = session_id
        self.model = model
        self._read = read
        #: The seq assembled last, per session (shared across dispatches).
        self._seen = seen
        #: Context windows already looked up, per model (shared).
        self._windows = windows
        self.messages: list[dict[str, Any]] | None = None
        self.head = 0
        self.window: int | None = None
        #: What the model reported for the previous step's prompt.
        self.last_prompt_tokens: int | None = None

    async def assemble(self, assembler: Assembler, input_data: dict[str, Any]) -> list[dict[str, Any]]:
        """Send the new facts (with ``input_data``) through ``assembler``, apply the delta,
        return the whole context.

        Raises:
            InvalidContext: the answer is not ``{base, messages}`` as described above.
            HookError: from the assembler.
        """
        first = self.messages is None
        since = self._seen.get(self.session_id, 0) if first else self.head
        facts = await self._read(self.session_id, since)
        head = facts[-1]["seq"] if facts else since
        if self.window is None:
            known = self._windows.get(self.model)
            if known is None:  # the first lookup reads a table: off the event loop
                known = await asyncio.to_thread(context_window, self.model) or 0
                self._windows[self.model] = known
            self.window = known
        prev = self.messages or []
        out = await assembler(
            {
                **input_data,
                "facts": [_fact_json(f) for f in facts],
                "since": since,
                "first": first,
                "model": self.model,
                "window": self.window or None,
                "last_prompt_tokens": self.last_prompt_tokens,
            },
            {"base": len(prev), "messages": []},
        )
        messages = out.get("messages") if isinstance(out, dict) else None
        base = out.get("base", 0) if isinstance(out, dict) else 0
        if (
            not isinstance(messages, list)
            or not isinstance(base, int)
            or not 0 <= base <= len(prev)
            or not all(isinstance(msg, dict) and "role" in msg for msg in messages)
            or not (base or messages)
        ):
            raise InvalidContext(
                "session.assemble returned no valid context: {base, messages} with messages a list of "
                "{role, content} objects and base at most the length of the previous context"
            )
        self.messages = prev[:base] + messages if base else messages
        self.head = head
        self._seen[self.session_id] = head
        return self.messages


def _fact_json(f: dict[str, Any]) -> dict[str, Any]:
    out = dict(f)
    ts = out.get("created_at")
    if ts is not None and not isinstance(ts, str):
        out["created_at"] = ts.isoformat()
    return out
