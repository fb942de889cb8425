"""aos-budget: the ``compute.before`` gate that holds agents to their token and cost limits.

Limits come from the agent's ``settings.budget`` over ``aoscb.json``'s ``budget``; spend from
``usage.get`` (history: every model call's usage), so nothing is kept here that a restart could
lose. Days and months are UTC.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aos_sdk import define_service
from aos_sdk.errors import AosError

#: Each limit: its window, what it counts, and how a person reads it.
LIMITS = {
    "day_tokens": ("day", "tokens", "daily token"),
    "day_cost": ("day", "cost", "daily cost"),
    "month_tokens": ("month", "tokens", "monthly token"),
    "month_cost": ("month", "cost", "monthly cost"),
    "session_tokens": ("session", "tokens", "session token"),
    "session_cost": ("session", "cost", "session cost"),
}
_CACHE_S = 5.0
_limits: dict[str, tuple[float, str, dict[str, float]]] = {}


def now() -> datetime:
    """The time (``AOS_BUDGET_NOW``, ISO 8601, moves it: tests of a day or a month going by)."""
    fake = os.environ.get("AOS_BUDGET_NOW")
    if fake:
        at = datetime.fromisoformat(fake)
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    return datetime.now(UTC)


def limits_of(raw: Any) -> dict[str, float]:
    """The numeric limits of a ``budget`` setting (anything else is left out)."""
    if not isinstance(raw, dict):
        return {}
    return {
        k: float(v)
        for k, v in raw.items()
        if k in LIMITS and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
    }


def resets(window: str, at: datetime) -> str:
    if window == "day":
        nxt = (at + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    elif window == "month":
        nxt = (at.replace(day=28) + timedelta(days=4)).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
    else:
        return "never: a new session starts from zero"
    return f"at {nxt:%Y-%m-%d %H:%M} UTC"


def amount(kind: str, value: float) -> str:
    return f"${value:.4f}" if kind == "cost" else f"{int(value)} tokens"


@define_service
def service() -> dict[str, Any]:
    async def call(method: str, params: dict[str, Any]) -> Any:
        assert service.kernel is not None
        return await service.kernel.call(method, params)

    async def limits_for(agent_id: str) -> tuple[str, dict[str, float]]:
        """The agent's name and limits, cached for a few seconds."""
        hit = _limits.get(agent_id)
        if hit is not None and time.monotonic() - hit[0] < _CACHE_S:
            return hit[1], hit[2]
        agent = await call("agent.get", {"agent": agent_id})
        config = (await call("system.config", {}))["config"]
        merged = {**limits_of(config.get("budget")), **limits_of((agent.get("settings") or {}).get("budget"))}
        _limits[agent_id] = (time.monotonic(), str(agent["name"]), merged)
        return str(agent["name"]), merged

    async def spent(
        agent_id: str, session_id: str | None, windows: set[str], at: datetime
    ) -> dict[str, dict[str, float]]:
        """Tokens and cost of the agent today and this month, and of the session, from history."""
        out = {w: {"tokens": 0.0, "cost": 0.0, "calls": 0.0} for w in ("day", "month", "session")}
        if windows & {"day", "month"}:
            # What the agent pays for: its own calls, and those of the agents it woke.
            rows = (await call("usage.get", {"group_by": "day", "payer": agent_id, "since_days": 32}))["rows"]
            for r in rows:
                used = {
                    "tokens": r["prompt_tokens"] + r["completion_tokens"],
                    "cost": r["cost"] or 0.0,
                    "calls": r["calls"],
                }
                for window, prefix in (("day", f"{at:%Y-%m-%d}"), ("month", f"{at:%Y-%m}")):
                    if str(r["key"]).startswith(prefix):
                        for k in used:
                            out[window][k] += used[k]
        if "session" in windows and session_id:
            t = (await call("usage.get", {"group_by": "session", "session": session_id, "since_days": 3650}))[
                "total"
            ]
            out["session"] = {
                "tokens": t["prompt_tokens"] + t["completion_tokens"],
                "cost": t["cost"] or 0.0,
                "calls": t["calls"],
            }
        return out

    async def gate(input_data: dict[str, Any], output_data: Any) -> Any:
        # A run woken by another agent is paid for by the chain's initiator: its limits hold.
        agent_id = input_data.get("payer") or input_data.get("agent_id")
        if not agent_id:
            return None
        try:
            name, limits = await limits_for(str(agent_id))
        except AosError:
            return None  # no agent to hold to anything
        if not limits:
            return None
        at = now()
        used = await spent(str(agent_id), input_data.get("session_id"), {LIMITS[k][0] for k in limits}, at)
        for key, limit in limits.items():
            window, kind, label = LIMITS[key]
            have = used[window][kind]
            # The next call will cost about what the calls so far cost on average: refused if
            # that would pass the limit, so spend stays under it rather than one call over.
            calls = used[window]["calls"]
            expect = have / calls if calls else 0.0
            if have >= limit or have + expect > limit:
                paid = (
                    f" ({name} pays for this run: it started the chain that woke this agent)"
                    if input_data.get("payer") and input_data.get("payer") != input_data.get("agent_id")
                    else ""
                )
                state = (
                    "is used up"
                    if have >= limit
                    else f"would be passed by the next call (about {amount(kind, expect)})"
                )
                return {
                    "verdict": "reject",
                    "reason": f"{name}'s {label} limit of {amount(kind, limit)} {state}"
                    f" ({amount(kind, have)} used); it resets {resets(window, at)}{paid}",
                }
        return None

    async def report(agent_id: str, session_id: str | None) -> tuple[str, list[dict[str, Any]]]:
        """The agent's name, and each of its limits: used, left, when it resets."""
        name, limits = await limits_for(agent_id)
        at = now()
        used = await spent(agent_id, session_id, {LIMITS[k][0] for k in limits}, at) if limits else {}
        rows = []
        for key, limit in limits.items():
            window, kind, label = LIMITS[key]
            if window == "session" and not session_id:
                rows.append({"agent": name, "limit": key, "label": label, "max": limit, "used": None})
                continue
            have = used[window][kind]
            rows.append(
                {
                    "agent": name,
                    "limit": key,
                    "label": label,
                    "max": limit,
                    "used": have,
                    "left": max(limit - have, 0.0),
                    "resets": resets(window, at),
                }
            )
        return name, rows

    def line(r: dict[str, Any]) -> str:
        kind = LIMITS[r["limit"]][1]
        if r["used"] is None:
            return f"{r['label']}: {amount(kind, r['max'])} in each session"
        return (
            f"{r['label']}: {amount(kind, r['used'])} of {amount(kind, r['max'])} used,"
            f" {amount(kind, r['left'])} left; resets {r['resets']}"
        )

    async def status(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Each of your limits: what is used, what is left, and when it resets. A person
        (``aos usage``) sees every agent's, or one agent's (``agent``)."""
        if caller.get("person"):
            if caller.get("agent_id") or args.get("agent"):
                ids = [
                    str(caller.get("agent_id") or (await call("agent.get", {"agent": args["agent"]}))["id"])
                ]
            else:
                ids = [str(a["id"]) for a in (await call("agent.list", {}))["agents"]]
            rows = [r for agent_id in ids for r in (await report(agent_id, None))[1]]
            if args.get("as_json"):
                return rows
            return (
                "\n".join(f"{r['agent']}: {line(r)}" for r in rows) or "no agent has limits (settings.budget)"
            )
        name, rows = await report(str(caller["agent_id"]), caller.get("session_id"))
        if args.get("as_json"):
            return rows
        return "\n".join(line(r) for r in rows) or f"{name} has no limits (settings.budget)"

    return {
        "hooks": {"compute.before": {"handler": gate, "priority": 20, "timeout_s": 5, "failure": "closed"}},
        "commands": {"status": status},
    }
