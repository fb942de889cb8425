"""The hook engine: a fixed table of hooks, three classes, deterministic order.

- **gate** (awaited, in order): returns the (possibly rewritten) ``output_data`` to allow, or a
  verdict ``{"verdict": "reject" | "ask", "reason": ...}``. A gate that raises or times out
  rejects (fails closed) unless its handler declared ``failure="open"``.
- **transform** (awaited, in order): returns the new ``output_data``. A failing transform is
  skipped and reported as a diagnostic; ``session.assemble`` is required: if no handler provides
  it, or one fails, the dispatch fails with an error naming the problem.
- **event** (fire and forget, concurrently): observes; failures are logged and never touch the
  main flow.

Order: scope (``system``, then ``agent``, then ``session``), then the declared priority (lower
first), then the skill's name. Handlers receive ``(input_data, output_data)``; ``input_data``
always carries ``agent_id``, ``session_id`` and ``dispatch_id`` (when one exists).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..logs import debug_enabled, get_logger

__all__ = [
    "HOOKS",
    "Ask",
    "GateVerdict",
    "HookBus",
    "HookError",
    "HookHandler",
    "MissingHook",
    "Reject",
]

log = get_logger("aos.hooks")

HookClass = Literal["gate", "transform", "event"]
Scope = Literal["system", "agent", "session"]

#: The fixed hook table (design §6). Unknown names are refused at registration.
HOOKS: dict[str, HookClass] = {
    "dispatch.before": "gate",
    "message.before_write": "gate",
    "compute.before": "gate",
    "tool.before": "gate",
    "session.assemble": "transform",
    "session.compact": "transform",
    "compute.model": "transform",
    "tool.env": "transform",
    "tool.after": "transform",
    "compute.after": "event",
    "compute.failed": "event",
    "tool.after_event": "event",
    "dispatch.after": "event",
    "session.created": "event",
    "session.archived": "event",
    "skill.loaded": "event",
    "skill.removed": "event",
    "skill.started": "event",
    "skill.stopped": "event",
    "skill.crashed": "event",
    "approval.requested": "event",
    "approval.resolved": "event",
    "aos.started": "event",
    "aos.stopping": "event",
}

REQUIRED = ("session.assemble",)
_SCOPE_RANK = {"system": 0, "agent": 1, "session": 2}

Handler = Callable[[dict[str, Any], Any], Any]


class HookError(Exception):
    """A registration was refused, or a required transform failed."""


class MissingHook(HookError):
    """No handler provides a required hook."""


@dataclass(frozen=True)
class Reject:
    """A gate refused; ``skill`` says which."""

    reason: str
    skill: str


@dataclass(frozen=True)
class Ask:
    """A gate wants a human to decide."""

    reason: str
    skill: str


GateVerdict = Reject | Ask


@dataclass(frozen=True)
class HookHandler:
    """One registered handler."""

    hook: str
    skill: str
    fn: Handler
    priority: int = 100
    scope: Scope = "system"
    timeout_s: float = 5.0
    failure: Literal["closed", "open"] = "closed"
    applies: Callable[[dict[str, Any]], bool] | None = field(default=None, compare=False)

    @property
    def kind(self) -> HookClass:
        return HOOKS[self.hook]

    def sort_key(self) -> tuple[int, int, str]:
        return (_SCOPE_RANK[self.scope], self.priority, self.skill)


async def _call(h: HookHandler, input_data: dict[str, Any], output_data: Any) -> Any:
    if debug_enabled():
        return await _call_logged(h, input_data, output_data)
    result = h.fn(input_data, output_data)
    if inspect.isawaitable(result):
        result = await asyncio.wait_for(result, h.timeout_s)
    return result


async def _call_logged(h: HookHandler, input_data: dict[str, Any], output_data: Any) -> Any:
    """:func:`_call`, saying in the log (at debug) how each handler answered and how fast."""
    t0 = time.perf_counter()
    outcome = "error"
    try:
        result = h.fn(input_data, output_data)
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, h.timeout_s)
        verdict = result.get("verdict") if isinstance(result, dict) else None
        outcome = str(verdict) if verdict else ("unchanged" if result is None else "ok")
        return result
    finally:
        log.debug(
            "hook.call",
            hook=h.hook,
            skill=h.skill,
            ms=round((time.perf_counter() - t0) * 1000, 2),
            outcome=outcome,
        )


class HookBus:
    """Registered handlers and the three ways of running them."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[HookHandler]] = {name: [] for name in HOOKS}
        self._events: set[asyncio.Task[None]] = set()
        self.diagnostics: list[dict[str, Any]] = []

    # -- registration --------------------------------------------------------------------------

    def register(self, handler: HookHandler) -> None:
        """Add a handler.

        Raises:
            HookError: unknown hook name, bad scope, priority or timeout.
        """
        if handler.hook not in HOOKS:
            raise HookError(
                f"unknown hook {handler.hook!r} (skill {handler.skill}); known hooks: {', '.join(sorted(HOOKS))}"
            )
        if handler.scope not in _SCOPE_RANK:
            raise HookError(f"scope must be system, agent or session, not {handler.scope!r}")
        if handler.timeout_s <= 0:
            raise HookError("a hook's timeout must be positive")
        if handler.failure not in ("closed", "open"):
            raise HookError("failure must be 'closed' or 'open'")
        lst = self._handlers[handler.hook]
        lst.append(handler)
        lst.sort(key=HookHandler.sort_key)

    def unregister_skill(self, skill: str) -> int:
        """Remove every handler of ``skill``; returns how many."""
        n = 0
        for name, lst in self._handlers.items():
            keep = [h for h in lst if h.skill != skill]
            n += len(lst) - len(keep)
            self._handlers[name] = keep
        return n

    def unregister(self, handlers: list[HookHandler]) -> None:
        """Remove exactly these handler objects (not others of the same skill)."""
        ids = {id(h) for h in handlers}
        for name, lst in self._handlers.items():
            self._handlers[name] = [h for h in lst if id(h) not in ids]

    def handlers(self, hook: str, input_data: dict[str, Any] | None = None) -> list[HookHandler]:
        """The handlers of ``hook`` in firing order (those that apply to ``input_data``)."""
        lst = self._handlers.get(hook, [])
        if input_data is None:
            return list(lst)
        return [h for h in lst if h.applies is None or h.applies(input_data)]

    def table(self) -> list[dict[str, Any]]:
        """Every hook with its class and handlers in firing order (``aos hooks``)."""
        return [
            {
                "hook": name,
                "class": HOOKS[name],
                "required": name in REQUIRED,
                "handlers": [
                    {
                        "skill": h.skill,
                        "scope": h.scope,
                        "priority": h.priority,
                        "timeout_s": h.timeout_s,
                        "failure": h.failure,
                    }
                    for h in lst
                ],
            }
            for name, lst in self._handlers.items()
        ]

    # -- running -------------------------------------------------------------------------------

    async def gate(self, hook: str, input_data: dict[str, Any], output_data: Any) -> Any:
        """Run a gate's handlers in order; returns the allowed (maybe rewritten) output data or a
        :class:`Reject` / :class:`Ask` verdict (the first one ends the chain)."""
        for h in self.handlers(hook, input_data):
            try:
                result = await _call(h, input_data, copy.deepcopy(output_data))
            except Exception as exc:
                why = "timed out" if isinstance(exc, TimeoutError) else f"failed: {type(exc).__name__}: {exc}"
                self._report(hook, h, why)
                if h.failure == "open":
                    continue
                return Reject(f"gate {hook} of skill {h.skill} {why} (gates fail closed)", h.skill)
            if isinstance(result, dict) and result.get("verdict") in ("reject", "ask"):
                reason = str(result.get("reason") or f"refused by {h.skill}")
                return Reject(reason, h.skill) if result["verdict"] == "reject" else Ask(reason, h.skill)
            if isinstance(result, dict) and result.get("verdict") == "allow":
                result = {k: v for k, v in result.items() if k != "verdict"} or output_data
            if result is None:
                continue  # allowed, unchanged
            output_data = result
        return output_data

    async def transform(self, hook: str, input_data: dict[str, Any], output_data: Any) -> Any:
        """Run a transform's handlers in order, each on the previous one's output.

        Raises:
            MissingHook: a required hook has no handler.
            HookError: a handler of a required hook failed.
        """
        handlers = self.handlers(hook, input_data)
        if not handlers and hook in REQUIRED:
            raise MissingHook(
                f"no skill provides the required hook {hook}: enable a context skill (aos-context) "
                f"for this session"
            )
        for h in handlers:
            try:
                result = await _call(h, input_data, copy.deepcopy(output_data))
            except Exception as exc:
                why = "timed out" if isinstance(exc, TimeoutError) else f"failed: {type(exc).__name__}: {exc}"
                if hook in REQUIRED:
                    raise HookError(f"{hook} of skill {h.skill} {why}") from exc
                self._report(hook, h, why)
                continue
            if result is not None:
                output_data = result
        return output_data

    def event(self, hook: str, input_data: dict[str, Any]) -> None:
        """Fire an event's handlers concurrently; never raises, never waits."""
        for h in self.handlers(hook, input_data):
            task = asyncio.create_task(self._run_event(h, input_data), name=f"event-{hook}-{h.skill}")
            self._events.add(task)
            task.add_done_callback(self._events.discard)

    async def _run_event(self, h: HookHandler, input_data: dict[str, Any]) -> None:
        try:
            await _call(h, copy.deepcopy(input_data), None)
        except Exception as exc:
            self._report(h.hook, h, f"failed: {type(exc).__name__}: {exc}")

    async def wait_events(self) -> None:
        """Wait for running event handlers (tests; shutdown)."""
        while self._events:
            await asyncio.gather(*list(self._events), return_exceptions=True)

    def _report(self, hook: str, h: HookHandler, why: str) -> None:
        diag = {"hook": hook, "skill": h.skill, "error": why}
        self.diagnostics.append(diag)
        del self.diagnostics[:-100]
        log.warning("hook.failed", **diag)
