"""aos-schedule's runs: the clock, each schedule's state, its log, and the loop that starts runs.

Where things live:
- a schedule's definition in its agent's settings (``settings.schedules.<id>``): the agent's
  record, so it outlives this service and shows in ``aos agent show``;
- each run in the schedule's log, a session of that agent: ``schedule.fired`` (a run began),
  ``schedule.started`` (the agent was dispatched), ``schedule.done`` (how it ended, with the
  schedule's running state: runs that found nothing, today's spend), ``schedule.alert``,
  ``schedule.paused``/``schedule.resumed``. A restart reads the log's tail and goes on: a run
  whose dispatch still runs is awaited, one that never got as far as its dispatch, or that the
  daemon's stop cut off, runs again.

With several kernels on one database, each runs this service, and each runs the schedules of
the agents it runs (``runs_here`` of ``agent.list``: their home kernel, or for agents that may
run anywhere the first live kernel by name). When that kernel dies another takes them at its next
sweep, and a run the dead one left unfinished runs again from the log. Every run's dispatch
carries a request id (schedule, due time, attempt), so a run is dispatched once even while two
kernels briefly both think it theirs.

The clock is the system's, or the time written in the file ``$AOS_SCHEDULE_CLOCK`` (tests move
it to simulate days going by; each change of that file is a tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plan import (
    PlanError,
    When,
    backoff_skip,
    day_of,
    next_midnight,
    probe_level,
    reply_level,
)

from aos_sdk.errors import (
    AosError,
    Conflict,
    ConnectionLost,
    NotFound,
    Unavailable,
)

#: A probe's output kept in the log and shown to the agent (its end: where errors are).
PROBE_OUTPUT_KEPT = 4000
#: How often the definitions are read again (a person may edit them with ``aos agent set``) and
#: running dispatches checked (one that ended while this service was away is settled).
SWEEP_S = 30.0
ENDED = {"done", "failed", "interrupted", "refused", "max_steps", "crashed", "lease_lost"}
#: A run cut off by the daemon stopping or crashing is run again, at most this many times in all.
MAX_ATTEMPTS = 3
LOG_KINDS = ["schedule.fired", "schedule.started", "schedule.done", "schedule.paused", "schedule.resumed"]


#: How to reach the service's syscall client (:mod:`service` binds it).
_client: list[Any] = []
_tasks: set[asyncio.Task[Any]] = set()


def bind(get_client: Any) -> None:
    _client[:] = [get_client]


def kernel() -> Any:
    got = _client[0]() if _client else None
    assert got is not None, "the service is not connected"
    return got


def spawn(coro: Any) -> None:
    """Run ``coro`` in the background, holding on to it until it ends."""
    task = asyncio.create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


# -- the clock ---------------------------------------------------------------------------------


class Clock:
    """The time: the system's, or the one in ``$AOS_SCHEDULE_CLOCK`` (a file holding an ISO 8601
    time; the scheduler looks again each time it changes)."""

    def __init__(self) -> None:
        raw = os.environ.get("AOS_SCHEDULE_CLOCK")
        self.path = Path(raw) if raw else None
        self.tick = asyncio.Event()

    def now(self) -> datetime:
        if self.path is None:
            return datetime.now(UTC)
        try:
            at = datetime.fromisoformat(self.path.read_text().strip())
        except (OSError, ValueError):
            return datetime.now(UTC)
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    async def watch(self) -> None:
        if self.path is None:
            return
        from watchfiles import awatch

        async for changes in awatch(self.path.parent, debounce=10, step=10):
            if any(Path(p).name == self.path.name for _, p in changes):
                self.tick.set()


clock = Clock()


# -- state -------------------------------------------------------------------------------------


@dataclass
class Sched:
    """One schedule: its definition and what its log says so far."""

    id: str
    agent_id: str
    d: dict[str, Any]
    when: When
    last_due: datetime | None = None
    empties: int = 0  # model runs in a row that found nothing (back-off)
    day: str = ""
    day_cost: float = 0.0
    last: dict[str, Any] | None = None  # the last run: at, level, summary
    running: dict[str, Any] | None = None  # the run under way: due, dispatch_id
    loaded: bool = False

    def base(self) -> datetime:
        return self.last_due or datetime.fromisoformat(self.d["created"])

    def next_due(self) -> datetime:
        skip = backoff_skip(self.empties) if self.d.get("backoff", True) else 0
        return self.when.after(self.base(), skip)

    def paused(self, now: datetime) -> bool:
        if not self.d.get("paused"):
            return False
        until = self.d.get("paused_until")
        return until is None or now < datetime.fromisoformat(until)

    def state(self) -> dict[str, Any]:
        return {"empties": self.empties, "day": self.day, "day_cost": round(self.day_cost, 6)}


_scheds: dict[str, Sched] = {}
_inflight: dict[str, str] = {}  # dispatch id -> schedule id
_wake = asyncio.Event()
_checked: dict[str, str] = {"at": ""}  # the clock time the scheduler last looked at


def poke() -> None:
    _wake.set()


# -- the log -----------------------------------------------------------------------------------


async def log(s: Sched, kind: str, body: dict[str, Any], key: str) -> None:
    await kernel().call(
        "session.append",
        {
            "session": s.d["log"],
            "kind": kind,
            "body": {"schedule": s.id, **body},
            "inbound": True,
            "idempotency_key": f"{kind}:{s.id}:{key}",
        },
    )


async def log_tail(s: Sched, kinds: list[str], facts: int) -> list[dict[str, Any]]:
    """The facts of ``kinds`` among the last ``facts`` facts of the schedule's log."""
    last_seq = int((await kernel().call("session.get", {"session": s.d["log"]}))["last_seq"])
    params = {"session": s.d["log"], "after_seq": max(0, last_seq - facts), "limit": 10000, "kinds": kinds}
    return list((await kernel().call("history.list", params))["facts"])


async def read_log(s: Sched) -> None:
    """Pick up from the log's tail: the last settled run and any run left unfinished."""
    facts = await log_tail(s, LOG_KINDS, 300)
    open_runs: dict[str, dict[str, Any]] = {}
    for f in facts:
        b = f["body"]
        if f["kind"] == "schedule.done":
            st = b.get("state") or {}
            s.last_due = datetime.fromisoformat(b["due"])
            s.empties, s.day, s.day_cost = (
                int(st.get("empties", 0)),
                str(st.get("day", "")),
                float(st.get("day_cost", 0)),
            )
            s.last = {k: b.get(k) for k in ("at", "level", "summary", "kind")}
            open_runs.pop(b["due"], None)
        elif f["kind"] == "schedule.fired":
            open_runs[b["due"]] = {
                "due": b["due"],
                "missed": b.get("missed", 0),
                "attempt": b.get("attempt", 1),
            }
        elif f["kind"] == "schedule.started" and b["due"] in open_runs:
            run = open_runs[b["due"]]
            if b.get("attempt", 1) == run["attempt"]:
                run.update(dispatch_id=b["dispatch_id"], session=b["session"], probe=b.get("probe"))
    s.loaded = True
    for run in open_runs.values():
        if run.get("dispatch_id"):  # dispatched before the restart: await its end
            s.running = run
            _inflight[run["dispatch_id"]] = s.id
        else:  # it never reached its dispatch: run it again, same due, once
            s.running = {"due": run["due"]}
            due = datetime.fromisoformat(run["due"])
            spawn(fire(s, due, int(run.get("missed", 0)), attempt=int(run["attempt"])))


# -- definitions -------------------------------------------------------------------------------


async def save(agent_id: str, sched_id: str, d: dict[str, Any] | None) -> None:
    """Write one schedule's definition into its agent's settings (None: remove it)."""
    for _ in range(8):
        agent = await kernel().call("agent.get", {"agent": agent_id})
        settings = dict(agent.get("settings") or {})
        all_ = dict(settings.get("schedules") or {})
        if d is None:
            all_.pop(sched_id, None)
        else:
            all_[sched_id] = d
        settings["schedules"] = all_
        try:
            await kernel().call(
                "agent.update", {"agent": agent_id, "settings": settings, "revision": agent["revision"]}
            )
            return
        except Conflict:
            continue  # changed meanwhile: read it again
    raise Conflict(f"could not save schedule {sched_id}: the agent's settings keep changing")


async def load() -> None:
    """Read every agent's schedules; keep the state of those already known."""
    seen: set[str] = set()
    for a in (await kernel().call("agent.list", {}))["agents"]:
        if a.get("runs_here") is False:
            continue  # another kernel runs this agent's schedules
        for sid, d in ((a.get("settings") or {}).get("schedules") or {}).items():
            if not isinstance(d, dict) or "log" not in d:
                continue
            try:
                when = When.of(d)
            except (PlanError, KeyError, TypeError):
                continue  # edited by hand into nonsense: left alone (``schedule show`` says so)
            seen.add(sid)
            s = _scheds.get(sid)
            if s is None:
                s = _scheds[sid] = Sched(sid, str(a["id"]), d, when)
            else:
                s.d, s.when = d, when
            if not s.loaded:
                with contextlib.suppress(AosError):
                    await read_log(s)
    for sid in set(_scheds) - seen:
        if _scheds[sid].running is None:
            del _scheds[sid]


# -- runs --------------------------------------------------------------------------------------


async def fire(s: Sched, due: datetime, missed: int = 0, *, attempt: int = 1, by: str | None = None) -> None:
    """One run: the probe, then (when it finds something) the agent. ``attempt`` > 1: the run
    is tried again because the daemon stopped under the previous attempt."""
    if s.running is not None and s.running.get("due") != due.isoformat():
        return
    s.running = {"due": due.isoformat(), "attempt": attempt, "missed": missed}
    at = clock.now()
    key = f"{due.isoformat()}#{attempt}"
    body: dict[str, Any] = {
        "due": due.isoformat(),
        "at": at.isoformat(),
        "missed": missed,
        "attempt": attempt,
    }
    if by:
        body["by"] = by
    try:
        await log(s, "schedule.fired", body, key)
        level, probe = "ok", None
        if s.d.get("probe"):
            res = await kernel().call(
                "sandbox.exec",
                {
                    "agent": s.agent_id,
                    "session": s.d["log"],
                    "command": s.d["probe"],
                    "timeout_s": float(s.d.get("probe_timeout_s") or 60),
                    "purpose": f"aos-schedule probe of {s.id}",
                },
            )
            probe = {
                "exit_code": res["exit_code"],
                "outcome": res["outcome"],
                "output": res["output"][-PROBE_OUTPUT_KEPT:],
            }
            if res["outcome"] in ("rejected", "needs_approval"):
                reason = f"the probe was refused ({res['reason']})"
                fix = reason + "; fix the probe or the guard's rules, then `schedule resume`"
                await settle(
                    s, due, kind="refused", level="warn", summary=reason, probe=probe, then_pause=(fix, None)
                )
                return
            level = probe_level(res["exit_code"], res["outcome"])
            if level == "ok":  # nothing to do: no model call, nothing spent
                await settle(s, due, kind="probe", level="ok", summary="the probe found nothing", probe=probe)
                return
        if await over_cap(s):  # (a cap lowered since the last run) paused now: this run is not made
            await settle(s, due, kind="skipped", level="ok", summary="not run: its daily cost cap is reached")
            return
        session = await run_session(s, due)
        meta = {"aos_schedule": {"id": s.id, "due": due.isoformat(), "level": level}}
        started = await kernel().call(
            "session.dispatch",
            {
                "session": session,
                "message": message(s, probe, missed),
                "meta": meta,
                "if_busy": "queue",
                "request_id": f"schedule:{s.id}:{key}",  # once, whichever kernel runs it
            },
        )
        s.running.update(dispatch_id=started["dispatch_id"], session=session, probe=probe)
        _inflight[started["dispatch_id"]] = s.id
        await log(
            s,
            "schedule.started",
            {
                "due": due.isoformat(),
                "attempt": attempt,
                "dispatch_id": started["dispatch_id"],
                "session": session,
                "probe": probe,
            },
            key,
        )
    except (Unavailable, ConnectionLost) as exc:
        # The daemon is stopping (or its database is away): the run is not over. Its log says
        # it began; after the restart it runs again.
        print(f"run of {s.id} cut off: {exc.message}; it runs again after the restart", flush=True)
    except AosError as exc:
        print(f"run of {s.id} failed: {exc.type}: {exc.message}", flush=True)
        with contextlib.suppress(AosError):
            await settle(s, due, kind="error", level="warn", summary=f"the run failed: {exc.message}")
        s.running = None
        poke()


def message(s: Sched, probe: dict[str, Any] | None, missed: int) -> str:
    text = str(s.d["message"])
    if probe is not None:
        how = "timed out" if probe["outcome"] == "timeout" else f"exited {probe['exit_code']}"
        text += f"\n\n[the probe `{s.d['probe']}` {how}; its output:]\n```\n{probe['output']}\n```"
    if missed:
        text += f"\n\n({missed} earlier runs were missed while AOS was down; this one stands for them.)"
    return (
        text + f"\n\n(A scheduled run of {s.id}. Start your final answer with OK: when nothing needs"
        " a person, WARN: for something the owner should see, or ALERT: for something urgent.)"
    )


async def run_session(s: Sched, due: datetime) -> str:
    """The session the run's dispatch goes to: a fresh one each run (``new``), or the schedule's
    own (``keep``). Both are marked light (a router may use a cheaper model) and have this skill
    on (so the run's end is heard here)."""
    settings = {"light": True, "aos_schedule": s.id, "skills": {"enabled": ["aos-schedule"]}}
    if s.d.get("session") == "keep":
        return str(s.d["run_session"])
    created = await kernel().call(
        "session.create",
        {"agent": s.agent_id, "title": f"schedule {s.id} {due:%Y-%m-%d %H:%M}", "settings": settings},
    )
    return str(created["id"])


async def over_cap(s: Sched) -> bool:
    """Pause the schedule when today's spend has reached its daily cap."""
    cap = s.d.get("max_cost_day")
    today = day_of(clock.now(), s.when.tz)
    spent = s.day_cost if s.day == today else 0.0
    if cap is None or spent < float(cap):
        return False
    until = next_midnight(clock.now(), s.when.tz)
    await pause(
        s,
        f"its daily cost cap of ${float(cap):.4f} is reached (${spent:.4f} spent today)",
        until=until,
    )
    return True


async def settle(
    s: Sched,
    due: datetime,
    *,
    kind: str,
    level: str,
    summary: str,
    probe: dict[str, Any] | None = None,
    cost: float = 0.0,
    tokens: int = 0,
    extra: dict[str, Any] | None = None,
    then_pause: tuple[str, datetime | None] | None = None,
) -> None:
    """Record how a run ended, raise its alert, pause the schedule if it must (``then_pause``:
    the reason and until when; or its daily cap is reached), and only then let it run again:
    a tick in between must not start a run the pause would have stopped."""
    not_this_run = s.running is None or s.running.get("due") != due.isoformat()
    if not_this_run and s.last_due is not None and s.last_due >= due:
        return  # settled already (heard twice: the event, and the sweep)
    at = clock.now()
    today = day_of(at, s.when.tz)
    if s.day != today:
        s.day, s.day_cost = today, 0.0
    s.day_cost += cost
    if kind == "model":
        s.empties = s.empties + 1 if level == "ok" else 0
    elif level != "ok":
        s.empties = 0
    body = {
        "due": due.isoformat(),
        "at": at.isoformat(),
        "kind": kind,
        "level": level,
        "summary": summary[:2000],
        "cost": cost,
        "tokens": tokens,
        "state": s.state(),
        **({"probe": probe} if probe else {}),
        **(extra or {}),
    }
    await log(s, "schedule.done", body, due.isoformat())
    s.last_due = due
    s.last = {"at": body["at"], "level": level, "summary": body["summary"], "kind": kind}
    try:
        if level != "ok":
            await alert(s, due, level, summary, extra or {})
        if then_pause is not None:
            await pause(s, then_pause[0], until=then_pause[1])
        elif kind == "model":
            await over_cap(s)
    finally:
        s.running = None
        poke()


async def alert(s: Sched, due: datetime, level: str, summary: str, extra: dict[str, Any]) -> None:
    """A warning is a notice for the owner (``aos alerts``); an alert also wakes ``alert_to``."""
    agent_name = str(s.d.get("agent") or s.agent_id)
    body: dict[str, Any] = {
        "due": due.isoformat(),
        "at": clock.now().isoformat(),
        "agent": agent_name,
        "level": level,
        "summary": summary[:2000],
        "what": str(s.d["message"])[:200],
        **{k: extra[k] for k in ("session", "dispatch_id") if k in extra},
    }
    target = s.d.get("alert_to")
    if level == "alert" and target:
        try:
            body["woke"] = await wake(s, due, str(target), agent_name, summary)
        except AosError as exc:
            body["wake_failed"] = exc.message
    await log(s, "schedule.alert", body, due.isoformat())


async def wake(s: Sched, due: datetime, target: str, agent_name: str, summary: str) -> dict[str, Any]:
    """Dispatch ``target`` with the alert, in its newest session; the schedule's agent pays."""
    agent = await kernel().call("agent.get", {"agent": target})
    got = await kernel().call("session.list", {"agent": agent["id"], "limit": 1})
    if got["sessions"]:
        session = str(got["sessions"][0]["id"])
    else:
        session = str(
            (await kernel().call("session.create", {"agent": agent["id"], "title": "alerts"}))["id"]
        )
    text = (
        f"ALERT from {agent_name}'s schedule {s.id} ({str(s.d['message'])[:200]}):\n\n{summary}\n\n"
        f"(Sent by aos-schedule; `aos alerts` lists every alert.)"
    )
    started = await kernel().call(
        "session.dispatch",
        {
            "session": session,
            "message": text,
            "meta": {"aos_schedule_alert": {"schedule": s.id, "from": agent_name}},
            "payer": s.agent_id,
            "if_busy": "queue",
            "request_id": f"schedule-alert:{s.id}:{due.isoformat()}:{target}",
        },
    )
    return {"agent": agent["name"], "session": session, "dispatch_id": started["dispatch_id"]}


async def pause(s: Sched, reason: str, *, until: datetime | None = None, by: str = "aos-schedule") -> None:
    d = {**s.d, "paused": True, "paused_reason": reason, "paused_by": by}
    d["paused_until"] = until.isoformat() if until else None
    await save(s.agent_id, s.id, d)
    s.d = d
    body: dict[str, Any] = {"at": clock.now().isoformat(), "reason": reason, "by": by}
    if until:
        body["until"] = until.isoformat()
    await log(s, "schedule.paused", body, f"{clock.now().isoformat()}:{uuid.uuid4().hex[:6]}")
    if by == "aos-schedule":
        await log(
            s,
            "schedule.alert",
            {
                "at": body["at"],
                "agent": s.d.get("agent"),
                "level": "warn",
                "summary": f"paused: {reason}"
                + (f"; resumes at {until:%Y-%m-%d %H:%M} UTC" if until else ""),
                "what": str(s.d["message"])[:200],
            },
            f"pause:{body['at']}",
        )


async def resume(s: Sched, by: str) -> None:
    d = {**s.d, "paused": False, "paused_reason": None, "paused_until": None, "paused_by": None}
    await save(s.agent_id, s.id, d)
    s.d = d
    await log(s, "schedule.resumed", {"at": clock.now().isoformat(), "by": by}, f"{clock.now().isoformat()}")
    poke()


async def ended(dispatch_id: str, status: str, reply: str | None, usage: dict[str, Any] | None) -> None:
    """A run's dispatch ended: classify it and settle the run."""
    sid = _inflight.pop(dispatch_id, None)
    s = _scheds.get(sid or "")
    if s is None or s.running is None or s.running.get("dispatch_id") != dispatch_id:
        return
    due = datetime.fromisoformat(s.running["due"])
    probe = s.running.get("probe")
    attempt = int(s.running.get("attempt") or 1)
    if status in ("interrupted", "crashed") and attempt < MAX_ATTEMPTS:
        cause = await last_said(str(s.running.get("session")), dispatch_id, "interrupt", "cause")
        if cause in ("shutdown", "crash"):  # not the run's fault: it runs again
            missed = int(s.running.get("missed") or 0)
            s.running = {"due": due.isoformat()}
            spawn(fire(s, due, missed, attempt=attempt + 1))
            return
    floor = probe_level(probe["exit_code"], probe["outcome"]) if probe else "ok"
    extra = {"dispatch_id": dispatch_id, "session": s.running.get("session"), "status": status}
    cost = float((usage or {}).get("cost") or 0.0)
    tokens = int((usage or {}).get("prompt_tokens") or 0) + int((usage or {}).get("completion_tokens") or 0)
    if status == "done":
        level, text = reply_level(reply, floor)
        await settle(
            s,
            due,
            kind="model",
            level=level,
            summary=text or "(no answer)",
            probe=probe,
            cost=cost,
            tokens=tokens,
            extra=extra,
        )
        return
    error = await last_said(str(s.running.get("session")), dispatch_id, "error", "message") or ""
    summary = f"the run ended {status}" + (f": {error}" if error else "")
    await settle(
        s,
        due,
        kind="model",
        level="warn",
        summary=summary,
        probe=probe,
        cost=cost,
        tokens=tokens,
        extra=extra,
        # A budget said no: no use asking again before tomorrow.
        then_pause=(
            f"the model call was refused ({error or 'by a gate'})",
            next_midnight(clock.now(), s.when.tz),
        )
        if status == "refused"
        else None,
    )


async def last_said(session: str, dispatch_id: str, kind: str, key: str) -> str | None:
    """``body[key]`` of the newest ``kind`` fact of a dispatch in ``session``: what its ``error``
    fact says (a budget's refusal), or why it was interrupted (``user``, ``shutdown``, ``crash``)."""
    with contextlib.suppress(AosError):
        facts = (await kernel().call("history.list", {"session": session, "limit": 10000, "kinds": [kind]}))[
            "facts"
        ]
        for f in reversed(facts):
            if (f.get("meta") or {}).get("dispatch_id") in (None, dispatch_id):
                return str((f.get("body") or {}).get(key) or "")
    return None


async def sweep() -> None:
    """Settle runs whose dispatch ended while nobody here heard it (this service restarted)."""
    for dispatch_id, sid in list(_inflight.items()):
        s = _scheds.get(sid)
        if s is None:
            continue
        try:
            d = await kernel().call("dispatch.get", {"dispatch": dispatch_id})
        except NotFound:
            _inflight.pop(dispatch_id, None)
            continue
        if d["status"] not in ENDED:
            continue
        reply, usage = await outcome_of(str(d["session_id"]), d.get("input_seq"))
        await ended(dispatch_id, str(d["status"]), reply, usage)


async def outcome_of(session: str, input_seq: int | None) -> tuple[str | None, dict[str, Any]]:
    """A dispatch's final answer and usage, from its session's history."""
    facts = (
        await kernel().call(
            "history.list",
            {"session": session, "after_seq": int(input_seq or 0), "limit": 10000, "kinds": ["message"]},
        )
    )["facts"]
    reply, usage = None, {"cost": 0.0, "prompt_tokens": 0, "completion_tokens": 0}
    for f in facts:
        if f["role"] == "user":
            break  # the next dispatch's input: this one's facts are all read
        if f["role"] == "assistant":
            reply = (f["body"] or {}).get("text") or reply
            u = (f.get("meta") or {}).get("usage") or {}
            for k in usage:
                usage[k] += float(u.get(k) or 0)
    return reply, usage


# -- the loop ----------------------------------------------------------------------------------


async def tick() -> None:
    now = clock.now()
    for s in list(_scheds.values()):
        try:
            await consider(s, now)
        except Exception as exc:  # one broken schedule must not stop the others
            print(f"schedule {s.id}: {type(exc).__name__}: {exc}", flush=True)
    _checked["at"] = now.isoformat()


async def consider(s: Sched, now: datetime) -> None:
    """Start ``s``'s run if it is due at ``now`` (once, whatever was missed)."""
    if not s.loaded or s.running is not None:
        return
    if s.d.get("paused"):
        if s.paused(now):
            return
        await resume(s, "aos-schedule (its pause ended)")
    due = s.next_due()
    if due > now or s.when.quiet_at(now):
        return  # (a due time in quiet hours is moved past them when it is computed)
    latest, missed = s.when.latest_due(due, now)
    s.running = {"due": latest.isoformat()}  # taken now: the next tick must not start it again
    if missed and s.d.get("catch_up") == "skip":
        summary = f"{missed + 1} runs were missed while AOS was down; skipped (catch-up: skip)"
        await settle(s, latest, kind="skipped", level="ok", summary=summary)
        return
    spawn(fire(s, latest, missed))


async def scheduler() -> None:
    """The loop: look at the clock, start what is due, sleep until the next due time (or the
    next change: a schedule added, a run ended, the test clock moved). Nothing it meets may
    stop it: a failure is printed to the skill's log and the loop goes on."""
    watcher = asyncio.create_task(clock.watch())
    loop = asyncio.get_running_loop()
    last_sweep = loop.time() - SWEEP_S  # read everything at once
    try:
        while True:
            _wake.clear()
            clock.tick.clear()
            if loop.time() - last_sweep >= SWEEP_S:
                try:
                    await load()
                    await sweep()
                    last_sweep = loop.time()
                except Exception as exc:
                    print(f"reading the schedules failed: {type(exc).__name__}: {exc}", flush=True)
            try:
                await tick()
            except Exception as exc:
                print(f"tick failed: {type(exc).__name__}: {exc}", flush=True)
            wait = SWEEP_S
            if clock.path is None:
                with contextlib.suppress(Exception):
                    dues = [
                        s.next_due() for s in _scheds.values() if s.running is None and not s.d.get("paused")
                    ]
                    if dues:
                        wait = max(0.05, min(wait, (min(dues) - clock.now()).total_seconds()))
            waiters = [asyncio.create_task(_wake.wait()), asyncio.create_task(clock.tick.wait())]
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
    finally:
        watcher.cancel()
