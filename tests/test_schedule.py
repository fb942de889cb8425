"""aos-schedule: schedules with cheap probes, through a real daemon, the skill's real service, real
probes in the sandbox and the scripted model; the scheduler's clock is a file the test moves
($AOS_SCHEDULE_CLOCK), so hours and days go by in seconds."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aos.pidlock import PidLock
from aos_sdk.syncclient import SyncClient
from aos_sdk.testing import ScriptedModel

from .conftest import run_aos
from .procutil import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


class World:
    """The daemon's home, its clock file, and a way to talk to it."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.clock = home / "clock" / "now"
        self.clock.parent.mkdir(exist_ok=True)
        self.env = {**env, "AOS_SCHEDULE_CLOCK": str(self.clock)}
        self.now = T0
        self.set(T0)

    def set(self, at: datetime) -> None:
        self.now = at
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(at.isoformat())
        tmp.replace(self.clock)

    def call(self, method: str, params: dict[str, Any]) -> Any:
        with SyncClient(self.home / "run" / "kernel.sock") as c:
            return c.call(method, params)

    def cmd(self, command: str, **args: Any) -> Any:
        return self.call(
            "skill.command",
            {"skill": "aos-schedule", "command": command, "args": {**args, "as_json": True}},
        )["result"]

    def until(self, what: str, test: Callable[[], Any], timeout: float = 30) -> Any:
        """Wait for ``test()`` to hold (a state the service reaches; not a fixed sleep)."""
        return wait_until(what, test, timeout)

    def tick(self, at: datetime) -> None:
        """Move the clock and wait until the scheduler has looked at the new time."""
        self.set(at)
        self.until(
            f"the scheduler to see {at}",
            lambda: self.cmd("list") and self.cmd("list")[0]["checked"] == at.isoformat(),
        )

    def log(self, sched: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
        facts = self.call("history.list", {"session": sched["log"], "limit": 10000})["facts"]
        return [f for f in facts if kind is None or f["kind"] == kind]

    def runs(self, sched: dict[str, Any]) -> list[dict[str, Any]]:
        return [f["body"] for f in self.log(sched, "schedule.done")]

    def wait_runs(self, sched: dict[str, Any], n: int) -> list[dict[str, Any]]:
        return self.until(f"{n} runs", lambda: len(self.runs(sched)) >= n and self.runs(sched))

    def agent(
        self, model: ScriptedModel, name: str, *, llm: str = "openai/scripted", **settings: Any
    ) -> None:
        self.call(
            "agent.create",
            {
                "name": name,
                "model": llm,
                "settings": {"model_params": {"api_base": model.url, "api_key": "k"}, **settings},
            },
        )


@pytest.fixture
def world(home: Path, daemon_env: dict[str, str]) -> Iterator[World]:
    (home / "aoscb.json").write_text(
        json.dumps({"skills": {"disabled": ["aos-guard", "aos-a2a", "aos-frontend"]}})
    )
    w = World(home, daemon_env)
    assert run_aos("start", env=w.env).returncode == 0
    try:
        yield w
    finally:
        run_aos("stop", env=w.env)


def aos(w: World, *args: str) -> Any:
    r = run_aos(*args, env=w.env)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout) if "--json" in args else r.stdout


def test_a_probe_that_finds_nothing_costs_nothing_and_one_that_fails_wakes_the_agent_then_the_operator(
    world: World, model: ScriptedModel
) -> None:
    w = world
    w.agent(model, "health")
    w.agent(model, "ops")
    probe = "test ! -e alarm || { cat alarm; exit 2; }"
    s = aos(
        w,
        "schedule",
        "add",
        "health",
        "--every",
        "5m",
        "--probe",
        probe,
        "--alert-to",
        "ops",
        "Check the disk",
        "--json",
    )
    assert s["when"] == "every 5m" and s["next"] == (T0 + timedelta(minutes=5)).isoformat()
    # Two ticks with nothing wrong: the probe runs, the model is never asked.
    w.tick(T0 + timedelta(minutes=5))
    w.tick(T0 + timedelta(minutes=10))
    runs = w.wait_runs(s, 2)
    assert [(r["kind"], r["level"], r["cost"]) for r in runs] == [("probe", "ok", 0.0)] * 2
    assert runs[0]["probe"]["exit_code"] == 0 and model.requests == []
    # The probe finds something: the agent is started with its output, says ALERT, and ops is woken.
    (w.home / "workspaces" / "health" / "alarm").write_text("/ is 97% full\n")
    model.add({"text": "ALERT: / is 97% full, the logs grew"}, {"text": "ops: on it"})
    w.tick(T0 + timedelta(minutes=15))
    runs = w.wait_runs(s, 3)
    assert (runs[2]["kind"], runs[2]["level"], runs[2]["probe"]["exit_code"]) == ("model", "alert", 2)
    assert runs[2]["summary"] == "/ is 97% full, the logs grew"
    asked = model.requests[0]["messages"][-1]["content"]
    assert "Check the disk" in asked and "/ is 97% full" in asked and "exited 2" in asked
    alert = w.until("the alert", lambda: w.log(s, "schedule.alert"))[0]["body"]
    assert alert["level"] == "alert" and alert["woke"]["agent"] == "ops"
    ops = w.call("history.list", {"session": alert["woke"]["session"]})["facts"]
    assert ops[0]["body"]["text"].startswith("ALERT from health's schedule " + s["id"])
    assert ops[0]["meta"]["payer"] == w.call("agent.get", {"agent": "health"})["id"]  # health pays
    # The run had its own session, marked light; the main chat is untouched.
    run_session = w.call("session.get", {"session": runs[2]["session"]})
    assert run_session["settings"]["light"] is True and run_session["title"].startswith(f"schedule {s['id']}")
    shown = aos(w, "alerts")
    assert "ALERT" in shown and "health" in shown and "(woke ops)" in shown and "97% full" in shown


def test_quiet_hours_defer_a_run_and_downtime_is_caught_up_by_one_run(
    world: World, model: ScriptedModel
) -> None:
    w = world
    w.agent(model, "night")
    w.set(T0.replace(hour=20))
    s = aos(
        w,
        "schedule",
        "add",
        "night",
        "--every",
        "1h",
        "--quiet",
        "22:00-07:00",
        "--session",
        "keep",
        "Tidy up",
        "--json",
    )
    model.add({"text": "OK: tidy"})
    w.tick(T0.replace(hour=21))
    assert w.wait_runs(s, 1)[0]["level"] == "ok"
    # 22:00 to 07:00 is quiet: nothing runs, and the next run is at 07:00.
    w.tick(T0.replace(hour=23, minute=30))
    (row,) = w.cmd("list")
    assert row["next"] == (T0 + timedelta(days=1)).replace(hour=7).isoformat()
    assert len(w.runs(s)) == 1 and len(model.requests) == 1
    # The daemon is down from 23:30 to 12:10 the next day: one run stands for the six missed.
    assert run_aos("stop", env=w.env).returncode == 0
    w.set((T0 + timedelta(days=1)).replace(hour=12, minute=10))
    model.add({"text": "WARN: the backlog grew"})
    assert run_aos("start", env=w.env).returncode == 0
    runs = w.wait_runs(s, 2)
    assert (
        runs[1]["level"] == "warn" and runs[1]["due"] == (T0 + timedelta(days=1)).replace(hour=12).isoformat()
    )
    assert runs[0]["session"] == runs[1]["session"], "--session keep: one session for every run"
    fired = [f["body"] for f in w.log(s, "schedule.fired")]
    assert fired[-1]["missed"] == 5  # 07:00 to 11:00 stood for by the 12:00 run
    assert "5 earlier runs were missed" in model.requests[-1]["messages"][-1]["content"]
    w.tick((T0 + timedelta(days=1)).replace(hour=12, minute=50))
    assert len(w.runs(s)) == 2, "no burst"
    assert [a["level"] for a in w.cmd("alerts")] == ["warn"]


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_run_cut_off_by_a_restart_runs_again_once(world: World, model: ScriptedModel, how: str) -> None:
    w = world
    w.agent(model, "slow")
    s = aos(w, "schedule", "add", "slow", "--every", "10m", "Do the slow thing", "--json")
    model.add({"bash": "sleep 30; echo late"})
    w.tick(T0 + timedelta(minutes=10))
    started = w.until("the run's dispatch", lambda: w.log(s, "schedule.started"))[0]["body"]
    w.until(
        "the command",
        lambda: any(
            f["kind"] == "tool.started"
            for f in w.call("history.list", {"session": started["session"]})["facts"]
        ),
    )
    if how == "stop":
        assert run_aos("stop", env=w.env).returncode == 0
    else:  # the daemon dies: its services notice their socket closing and exit
        pid = PidLock.holder(w.home / "run" / "aos.pid")
        assert pid and pid > 0
        os.kill(pid, signal.SIGKILL)
    model.add({"text": "OK: finished after the restart"})
    assert run_aos("start", env=w.env).returncode == 0
    runs = w.wait_runs(s, 1)
    assert (
        runs[0]["summary"] == "finished after the restart"
        and runs[0]["dispatch_id"] != started["dispatch_id"]
    )
    first = w.call("history.list", {"session": started["session"], "kinds": ["interrupt"]})["facts"]
    assert first[0]["body"]["cause"] == ("shutdown" if how == "stop" else "crash")
    assert [f["body"]["attempt"] for f in w.log(s, "schedule.fired")] == [1, 2]
    assert [f["body"]["attempt"] for f in w.log(s, "schedule.started")] == [1, 2]
    w.tick(T0 + timedelta(minutes=15))
    assert len(w.runs(s)) == 1 and len(model.requests) == 2


def test_runs_that_find_nothing_back_off_and_a_daily_cost_cap_pauses_until_midnight(
    world: World, model: ScriptedModel
) -> None:
    w = world
    # A priced model, so runs cost money: 1000 + 100 tokens of gpt-4o-mini each.
    w.agent(model, "busy", llm="openai/gpt-4o-mini")
    s = aos(
        w, "schedule", "add", "busy", "--every", "1h", "--max-cost-day", "0.0005", "Anything new?", "--json"
    )
    usage = {"prompt_tokens": 1000, "completion_tokens": 100}
    model.add(*[{"text": "OK: nothing", "usage": usage}] * 3)
    w.tick(T0 + timedelta(hours=1))
    w.wait_runs(s, 1)
    w.tick(T0 + timedelta(hours=2))
    w.wait_runs(s, 2)
    (row,) = w.cmd("list")
    assert row["backoff"] == "x2" and row["next"] == (T0 + timedelta(hours=4)).isoformat()
    w.tick(T0 + timedelta(hours=3))
    assert len(w.runs(s)) == 2, "backed off: no run at 11:00"
    w.tick(T0 + timedelta(hours=4))
    runs = w.wait_runs(s, 3)
    assert sum(r["cost"] for r in runs) > 0.0005
    (row,) = w.until("the pause", lambda: [r for r in w.cmd("list") if r["state"] == "paused"])
    assert "daily cost cap of $0.0005 is reached" in row["paused_reason"]
    assert row["paused_until"] == (T0 + timedelta(days=1)).replace(hour=0).isoformat()
    assert "paused: its daily cost cap" in w.cmd("alerts")[0]["summary"]
    w.tick(T0 + timedelta(hours=12))
    assert len(w.runs(s)) == 3 and len(model.requests) == 3
    # The next day it resumes by itself.
    model.add({"text": "WARN: something new", "usage": usage})
    w.tick((T0 + timedelta(days=1)).replace(hour=0, minute=1))
    w.until("the resume", lambda: w.log(s, "schedule.resumed"))
    w.tick((T0 + timedelta(days=1)).replace(hour=1))
    assert w.wait_runs(s, 4)[3]["level"] == "warn"


def test_an_agent_schedules_its_own_follow_up_and_cannot_touch_anothers(
    world: World, model: ScriptedModel
) -> None:
    w = world
    w.agent(model, "ada")
    w.agent(model, "bo")
    theirs = aos(w, "schedule", "add", "bo", "--every", "1h", "Bo's thing", "--json")
    model.add(
        {"bash": 'schedule add --every 30m --probe "true" "Look again"'},
        {"bash": f"schedule remove {theirs['id']}; schedule add bo --every 1h 'hijack'; schedule list"},
        {"text": "done"},
    )
    sid = w.call("session.create", {"agent": "ada"})["id"]
    r = run_aos("send", sid, "follow up later", "--wait", "--json", env=w.env)
    assert r.returncode == 0, r.stderr
    results = [
        f["body"]["output"] for f in map(json.loads, r.stdout.splitlines()) if f.get("kind") == "tool.result"
    ]
    assert results[0].startswith("added sch_") and "for ada" in results[0]
    assert f"no schedule '{theirs['id']}' of yours" in results[1]
    assert "an agent schedules only itself" in results[1]
    assert "Look again" in results[1] and "Bo's thing" not in results[1]
    mine = {r["agent"]: r for r in w.cmd("list")}
    assert set(mine) == {"ada", "bo"} and mine["ada"]["probe"] == "true"


def test_bad_definitions_are_refused_with_the_fix(world: World, model: ScriptedModel) -> None:
    w = world
    w.agent(model, "ada")
    for args, said in [
        (["--every", "10s"], "at least 1 minute"),
        (["--every", "soon"], "give a duration such as"),
        (["--cron", "61 * * * *"], "--cron '61 * * * *'"),
        (["--every", "1h", "--cron", "0 9 * * *"], "exactly one of --every"),
        (["--every", "1h", "--quiet", "25:00-07:00"], "HH:MM-HH:MM"),
        (["--every", "1h", "--tz", "Mars/Olympus"], "not a time zone"),
    ]:
        r = run_aos("schedule", "add", "ada", *args, "hello", env=w.env)
        assert r.returncode == 1 and said in r.stderr, (args, r.stderr)
    r = run_aos("schedule", "add", "nobody", "--every", "1h", "hello", env=w.env)
    assert r.returncode == 1 and "nobody" in r.stderr
    assert w.cmd("list") == []


def test_the_schedule_cli_explains_itself_without_the_daemon(home: Path, daemon_env: dict[str, str]) -> None:
    r = run_aos("schedule", "--help", env=daemon_env)
    assert r.returncode == 0 and "run-now" in r.stdout and "exit 0: nothing to do" in r.stdout
    r = run_aos("schedule", "add", "--help", env=daemon_env)
    assert r.returncode == 0 and "--max-cost-day" in r.stdout
    for words in (["alerts"], ["models"], ["schedule", "list"]):
        r = run_aos(*words, env=daemon_env)
        assert r.returncode == 3 and "is the daemon running?" in r.stderr, (words, r.stderr)


def test_a_cron_schedule_runs_on_weekdays_only(world: World, model: ScriptedModel) -> None:
    w = world
    w.agent(model, "daily")
    friday = T0 + timedelta(days=4)  # 08:00
    w.set(friday)
    s = aos(w, "schedule", "add", "daily", "--cron", "0 9 * * 1-5", "Morning report", "--json")
    assert s["when"] == "cron '0 9 * * 1-5'" and s["next"] == friday.replace(hour=9).isoformat()
    model.add({"text": "OK: report sent"}, {"text": "OK: monday's report"})
    w.tick(friday.replace(hour=9, minute=1))
    assert w.wait_runs(s, 1)[0]["level"] == "ok"
    w.tick(friday + timedelta(days=1, hours=2))  # Saturday 10:00: nothing
    (row,) = w.cmd("list")
    assert row["next"] == (friday + timedelta(days=3)).replace(hour=9).isoformat()
    assert len(w.runs(s)) == 1
