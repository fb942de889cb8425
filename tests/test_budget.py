"""aos-budget: limits that hold, through real dispatches on a real daemon; the skill's clock
moved with AOS_BUDGET_NOW to let a day go by."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aos_sdk.syncclient import SyncClient
from aos_sdk.testing import ScriptedModel

from .conftest import run_aos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture(autouse=True)
def budget_on(home: Path) -> None:
    """aos-budget's service runs (it is off per agent until an agent turns it on)."""
    (home / "aoscb.json").write_text(
        json.dumps({"skills": {"disabled": ["aos-guard", "aos-a2a", "aos-frontend"]}})
    )


def agent(home: Path, model: ScriptedModel, name: str, **settings: Any) -> str:
    with SyncClient(home / "run" / "kernel.sock") as c:
        c.call(
            "agent.create",
            {
                "name": name,
                "model": "openai/scripted",
                "settings": {"model_params": {"api_base": model.url, "api_key": "k"}, **settings},
            },
        )
        return str(c.call("session.create", {"agent": name})["id"])


def dispatch(home: Path, sid: str, text: str, env: dict[str, str]) -> dict[str, Any]:
    """``aos send --wait --json``: the facts of the dispatch, its end last."""
    r = run_aos("send", sid, text, "--wait", "--json", env=env)
    facts = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{"session_id"')]
    assert facts and facts[-1]["kind"] == "dispatch.end", r.stdout + r.stderr
    return {"facts": facts, "end": facts[-1]["body"]}


def test_a_daily_limit_refuses_the_next_call_survives_a_restart_and_resets_the_next_day(
    home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    on = {"skills": {"enabled": ["aos-budget"]}}
    try:
        assert run_aos("start", env=daemon_env).returncode == 0
        sid = agent(home, model, "ada", budget={"day_tokens": 1}, **on)
        free = agent(home, model, "bo")  # no limits, and the skill not on: never checked
        # The first call is checked at 0 tokens and made; the next one is over the limit.
        model.add({"bash": "echo spent"}, {"text": "never asked"}, {"text": "bo answers"})
        got = dispatch(home, sid, "spend", daemon_env)
        assert got["end"]["status"] == "refused" and len(model.requests) == 1
        error = next(f for f in got["facts"] if f["kind"] == "error")["body"]
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
        assert (
            "compute.before refused by aos-budget: ada's daily token limit of 1 tokens is used up"
            in error["message"]
        )
        assert f"it resets at {tomorrow} 00:00 UTC" in error["message"]
        assert dispatch(home, free, "hello", daemon_env)["end"]["status"] == "done"
        calls = len(model.requests)
        # A restart forgets nothing: the spend is in history.
        assert run_aos("stop", env=daemon_env).returncode == 0
        assert run_aos("start", env=daemon_env).returncode == 0
        assert dispatch(home, sid, "again", daemon_env)["end"]["status"] == "refused"
        assert len(model.requests) == calls, "a refused call is never made"
        # The next day the limit starts from zero.
        assert run_aos("stop", env=daemon_env).returncode == 0
        next_day = {**daemon_env, "AOS_BUDGET_NOW": f"{tomorrow}T09:00:00+00:00"}
        assert run_aos("start", env=next_day).returncode == 0
        model.add({"text": "a new day"})
        assert dispatch(home, sid, "good morning", next_day)["end"]["status"] == "done"
    finally:
        run_aos("stop", env=daemon_env)


def test_a_session_limit_holds_per_session_and_a_bad_setting_is_ignored(
    home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    try:
        assert run_aos("start", env=daemon_env).returncode == 0
        sid = agent(
            home,
            model,
            "cy",
            budget={"session_tokens": 1, "day_cost": "lots", "month_tokens": True},
            skills={"enabled": ["aos-budget"]},
        )
        model.add({"bash": "budget status"}, {"text": "fresh session"})
        got = dispatch(home, sid, "first", daemon_env)
        assert got["end"]["status"] == "refused"  # the status call spent the session's 1 token
        shown = next(f for f in got["facts"] if f["kind"] == "tool.result")["body"]["output"]
        assert shown.startswith("session token: ") and "of 1 tokens used, 0 tokens left" in shown
        assert "resets never: a new session starts from zero" in shown
        assert "daily cost" not in shown and "monthly" not in shown, "bad settings are left out"
        error = next(f for f in got["facts"] if f["kind"] == "error")["body"]["message"]
        assert "cy's session token limit of 1 tokens is used up" in error
        assert "it resets never: a new session starts from zero" in error
        with SyncClient(home / "run" / "kernel.sock") as c:
            fresh = c.call("session.create", {"agent": "cy"})["id"]
        assert dispatch(home, fresh, "hello", daemon_env)["end"]["status"] == "done"
    finally:
        run_aos("stop", env=daemon_env)


def test_a_woken_chain_is_charged_to_its_initiator_and_held_to_its_limits(
    home: Path, daemon_env: dict[str, str]
) -> None:
    """ada wakes bo (aos-a2a): bo's model calls are charged to ada, and ada's daily limit stops
    bo. Each agent has its own scripted model, so the order of calls is fixed."""
    usage = {"prompt_tokens": 500, "completion_tokens": 100}  # 600 tokens a call
    on = {"skills": {"enabled": ["aos-budget", "aos-a2a"]}}
    (home / "aoscb.json").write_text(json.dumps({"skills": {"disabled": ["aos-guard", "aos-frontend"]}}))
    with ScriptedModel() as a, ScriptedModel() as b:
        try:
            assert run_aos("start", env=daemon_env).returncode == 0
            sid = agent(home, a, "ada", budget={"day_tokens": 1500}, **on)
            agent(home, b, "bo", **on)  # no limits of its own
            a.add({"bash": "a2a send --to bo --wake --wait 60 'count the files'", "usage": usage})
            b.add({"bash": "echo working", "usage": usage}, {"text": "never asked", "usage": usage})
            got = dispatch(home, sid, "ask bo", daemon_env)
            # bo ran one call (600, charged to ada: 1200 in all); a second would pass 1500.
            reply = next(f for f in got["facts"] if f["kind"] == "tool.result")["body"]["output"]
            assert "ended with status refused" in reply, reply
            assert got["end"]["status"] == "refused", "and ada's own next call too"
            assert len(b.requests) == 1 and len(a.requests) == 1
            with SyncClient(home / "run" / "kernel.sock") as c:
                ada_id = c.call("agent.get", {"agent": "ada"})["id"]
                bo_sessions = c.call("session.list", {"agent": "bo"})["sessions"]
                facts = c.call("history.list", {"session": bo_sessions[0]["id"]})["facts"]
                paid = c.call("usage.get", {"group_by": "agent", "payer": "ada"})
                own = c.call("usage.get", {"group_by": "agent", "payer": "bo"})
                by_agent = {r["key"]: r for r in c.call("usage.get", {"group_by": "agent"})["rows"]}
            assistant = next(f for f in facts if f["kind"] == "message" and f["role"] == "assistant")
            assert assistant["meta"]["usage"]["payer"] == ada_id
            error = next(f for f in facts if f["kind"] == "error")["body"]["message"]
            assert "ada's daily token limit of 1500 tokens would be passed by the next call" in error
            assert "(ada pays for this run: it started the chain that woke this agent)" in error
            assert {r["key"]: r["prompt_tokens"] for r in paid["rows"]} == {"ada": 500, "bo": 500}
            assert own["rows"] == [], "bo paid for nothing"
            assert by_agent["bo"]["calls"] == 1, "usage by agent still says who made the call"
            # aos usage shows the limit, and what is left of it.
            r = run_aos("usage", "--by", "agent", env=daemon_env)
            assert r.returncode == 0, r.stderr
            assert (
                "daily token" in r.stdout and "1500" in r.stdout and "1200" in r.stdout and "300" in r.stdout
            )
            limits = json.loads(run_aos("usage", "--json", env=daemon_env).stdout)["limits"]
            assert limits == [
                {
                    "agent": "ada",
                    "limit": "day_tokens",
                    "label": "daily token",
                    "max": 1500.0,
                    "used": 1200.0,
                    "left": 300.0,
                    "resets": limits[0]["resets"],
                }
            ]
        finally:
            run_aos("stop", env=daemon_env)
