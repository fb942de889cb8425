"""aos-schedule: durable schedules for agents, with cheap probes first (see SKILL.md).

This module is the service: its commands (``schedule add|list|show|pause|resume|remove|run-now|
alerts``) and hooks. :mod:`runs` keeps the schedules and starts their runs; :mod:`plan` is the
arithmetic of when.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import runs
from plan import LEVELS, PlanError, When, backoff_skip, check_cron, day_of, parse_every, parse_quiet, zone
from runs import Sched, clock, ended, fire, load, log_tail, pause, poke, resume, save, spawn

from aos_sdk import define_service
from aos_sdk.errors import Conflict, InvalidParams, NotFound, PermissionDenied

#: At most this many schedules per agent.
MAX_PER_AGENT = 50
_scheds = runs._scheds
_checked = runs._checked


def kernel() -> Any:
    return runs.kernel()


# -- commands ----------------------------------------------------------------------------------


def who(caller: dict[str, Any]) -> str:
    return "a person" if caller.get("person") else f"agent {caller.get('agent_id')}"


async def mine(sched_id: str, caller: dict[str, Any]) -> Sched:
    await load()
    s = _scheds.get(str(sched_id))
    if s is None or (not caller.get("person") and s.agent_id != caller.get("agent_id")):
        raise NotFound(f"no schedule {sched_id!r}" + ("" if caller.get("person") else " of yours"))
    return s


def row(s: Sched, now: datetime) -> dict[str, Any]:
    state = "running" if s.running else "paused" if s.paused(now) else "active"
    return {
        "id": s.id,
        "agent": s.d.get("agent"),
        "when": s.when.describe(),
        "probe": s.d.get("probe"),
        "message": s.d["message"],
        "session": s.d.get("session", "new"),
        "state": state,
        "paused_reason": s.d.get("paused_reason") if s.d.get("paused") else None,
        "paused_until": s.d.get("paused_until") if s.d.get("paused") else None,
        "next": None if state == "paused" else s.next_due().isoformat(),
        "backoff": f"x{backoff_skip(s.empties) + 1}" if backoff_skip(s.empties) else None,
        "last": s.last,
        "spent_today": round(s.day_cost, 6) if s.day == day_of(now, s.when.tz) else 0.0,
        "max_cost_day": s.d.get("max_cost_day"),
        "alert_to": s.d.get("alert_to"),
        "log": s.d["log"],
        "checked": _checked["at"],
    }


def short(at: str | None) -> str:
    return "-" if not at else f"{datetime.fromisoformat(at):%Y-%m-%d %H:%M}"


def line(r: dict[str, Any]) -> str:
    last = r["last"] or {}
    state = r["state"] + (f" ({r['paused_reason']})" if r["paused_reason"] else "")
    return (
        f"{r['id']}  {r['agent']}  {r['when']}{'  probe: ' + r['probe'] if r['probe'] else ''}\n"
        f"    {state}; next {short(r['next'])}{' (backed off ' + r['backoff'] + ')' if r['backoff'] else ''};"
        f" last {last.get('level', '-')} {short(last.get('at'))}; {r['message'][:60]!r}"
    )


@define_service
def service() -> dict[str, Any]:
    async def add(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Add a schedule: --every or --cron, maybe a --probe, then the message."""
        target = args.get("agent")
        if caller.get("person"):
            if not target:
                raise InvalidParams('give the agent: schedule add <agent> --every 30m "message"')
            agent = await kernel().call("agent.get", {"agent": str(target)})
        else:
            agent = await kernel().call("agent.get", {"agent": str(caller["agent_id"])})
            if target and str(target) not in (agent["name"], agent["id"]):
                raise PermissionDenied(
                    "an agent schedules only itself: leave out the agent, or name yourself"
                )
        text = str(args.get("message") or "").strip()
        if not text:
            raise InvalidParams("the message is empty: say what the agent should do on each run")
        if ("\x00" in text) or ("\x00" in str(args.get("probe") or "")):
            raise InvalidParams("the message or probe holds a NUL byte")
        if bool(args.get("every")) == bool(args.get("cron")):
            raise InvalidParams('give exactly one of --every (e.g. 30m) and --cron (e.g. "0 9 * * 1-5")')
        d: dict[str, Any] = {"agent": agent["name"], "message": text[:10000]}
        try:
            if args.get("every"):
                d["every_s"] = parse_every(str(args["every"]))
            else:
                d["cron"] = check_cron(str(args["cron"]))
            if args.get("quiet"):
                parse_quiet(str(args["quiet"]))
                d["quiet"] = str(args["quiet"]).strip()
            d["tz"] = str(zone(str(args.get("tz") or "UTC")))
        except PlanError as exc:
            raise InvalidParams(str(exc)) from None
        if args.get("probe"):
            d["probe"] = str(args["probe"])[:10000]
            d["probe_timeout_s"] = float(args.get("probe_timeout") or 60)
        mode = str(args.get("session") or "new")
        if mode not in ("new", "keep"):
            raise InvalidParams("--session is new (a fresh session each run) or keep (one for this schedule)")
        d["session"] = mode
        catch_up = str(args.get("catch_up") or "one")
        if catch_up not in ("one", "skip"):
            raise InvalidParams("--catch-up is one (one run stands for those missed) or skip")
        d["catch_up"] = catch_up
        if args.get("max_cost_day") is not None:
            cap = float(args["max_cost_day"])
            if cap < 0:
                raise InvalidParams("--max-cost-day is a dollar amount, 0 or more")
            d["max_cost_day"] = cap
        if args.get("alert_to"):
            d["alert_to"] = (await kernel().call("agent.get", {"agent": str(args["alert_to"])}))["name"]
        d["backoff"] = not args.get("no_backoff")
        existing = ((agent.get("settings") or {}).get("schedules")) or {}
        if len(existing) >= MAX_PER_AGENT:
            raise Conflict(
                f"{agent['name']} has {len(existing)} schedules, the most allowed; remove one first"
            )
        sid = "sch_" + uuid.uuid4().hex[:8]
        light = {"light": True, "aos_schedule": sid, "skills": {"enabled": ["aos-schedule"]}}
        d["log"] = (
            await kernel().call(
                "session.create",
                {
                    "agent": agent["id"],
                    "title": f"schedule {sid} (log)",
                    "settings": {"aos_schedule_log": sid},
                },
            )
        )["id"]
        if mode == "keep":
            d["run_session"] = (
                await kernel().call(
                    "session.create", {"agent": agent["id"], "title": f"schedule {sid}", "settings": light}
                )
            )["id"]
        d["created"] = clock.now().isoformat()
        d["created_by"] = "person" if caller.get("person") else agent["name"]
        await save(str(agent["id"]), sid, d)
        s = _scheds[sid] = Sched(sid, str(agent["id"]), d, When.of(d), loaded=True)
        poke()
        r = row(s, clock.now())
        if args.get("as_json"):
            return r
        return f"added {sid} for {agent['name']}: {s.when.describe()}; first run {short(r['next'])}"

    async def list_(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Your schedules (a person: everyone's, or --agent's)."""
        await load()
        only = None
        if not caller.get("person"):
            only = str(caller["agent_id"])
        elif args.get("agent"):
            only = str((await kernel().call("agent.get", {"agent": str(args["agent"])}))["id"])
        now = clock.now()
        rows = [
            row(s, now)
            for s in sorted(_scheds.values(), key=lambda s: (s.d.get("agent") or "", s.id))
            if only is None or s.agent_id == only
        ]
        if args.get("as_json"):
            return rows
        return "\n".join(line(r) for r in rows) or "no schedules"

    async def show(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """One schedule, and its last runs."""
        s = await mine(str(args.get("id")), caller)
        r = row(s, clock.now())
        done = (await log_tail(s, ["schedule.done"], 200))[-int(args.get("runs") or 10) :]
        r["runs"] = [
            {k: f["body"].get(k) for k in ("at", "kind", "level", "summary", "cost", "session")} for f in done
        ]
        if args.get("as_json"):
            return r
        out = [line(r), f"    log: aos history {s.d['log']}"]
        for run in r["runs"]:
            cost = f" ${run['cost']:.4f}" if run.get("cost") else ""
            out.append(
                f"    {short(run['at'])}  {run['level']:<5} {run['kind']:<7}{cost}  {str(run['summary'])[:100]}"
            )
        return "\n".join(out)

    async def pause_cmd(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Stop a schedule's runs until resumed."""
        s = await mine(str(args.get("id")), caller)
        await pause(s, str(args.get("reason") or f"paused by {who(caller)}"), by=who(caller))
        return f"paused {s.id}"

    async def resume_cmd(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Start a paused schedule again."""
        s = await mine(str(args.get("id")), caller)
        if not s.d.get("paused"):
            return f"{s.id} is not paused"
        await resume(s, who(caller))
        return f"resumed {s.id}; next run {short(s.next_due().isoformat())}"

    async def remove(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Delete a schedule (its log session stays, with every run)."""
        s = await mine(str(args.get("id")), caller)
        await save(s.agent_id, s.id, None)
        _scheds.pop(s.id, None)
        return f"removed {s.id} (its runs stay in the log: aos history {s.d['log']})"

    async def run_now(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Run a schedule now, whatever its timing (its probe first, as always)."""
        s = await mine(str(args.get("id")), caller)
        if s.running is not None:
            raise Conflict(f"{s.id} is running already")
        due = clock.now()
        s.running = {"due": due.isoformat()}
        spawn(fire(s, due, by=who(caller)))
        return f"running {s.id} now; see: schedule show {s.id}"

    async def alerts(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Warnings and alerts of schedule runs, newest first."""
        await load()
        only = None if caller.get("person") else str(caller["agent_id"])
        if caller.get("person") and args.get("agent"):
            only = str((await kernel().call("agent.get", {"agent": str(args["agent"])}))["id"])
        found = []
        for s in _scheds.values():
            if only is not None and s.agent_id != only:
                continue
            facts = await log_tail(s, ["schedule.alert"], 2000)
            found += [{**f["body"], "log": s.d["log"]} for f in facts]
        wanted = set(LEVELS[1:]) if not args.get("level") else {str(args["level"])}
        found = [a for a in found if a.get("level") in wanted]
        found.sort(key=lambda a: str(a.get("at")), reverse=True)
        found = found[: int(args.get("limit") or 20)]
        if args.get("as_json"):
            return found
        if not found:
            return "no warnings or alerts"
        out = []
        for a in found:
            woke = f" (woke {a['woke']['agent']})" if a.get("woke") else ""
            said = re.sub(r"\s+", " ", str(a.get("summary")))[:160]
            out.append(
                f"{short(a.get('at'))}  {str(a.get('level')).upper():<5} {a.get('agent')} {a.get('schedule')}{woke}: {said}"
            )
        return "\n".join(out)

    async def after(input_data: dict[str, Any], output_data: Any) -> None:
        meta = input_data.get("input_meta") or {}
        if not isinstance(meta.get("aos_schedule"), dict):
            return
        await ended(
            str(input_data["dispatch_id"]),
            str(input_data.get("status")),
            input_data.get("reply"),
            input_data.get("usage"),
        )

    async def start() -> None:
        await runs.scheduler()

    return {
        "hooks": {"dispatch.after": after},
        "commands": {
            "add": add,
            "list": list_,
            "show": show,
            "pause": pause_cmd,
            "resume": resume_cmd,
            "remove": remove,
            "run-now": run_now,
            "alerts": alerts,
        },
        "start": start,
    }


runs.bind(lambda: service.kernel)
