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
