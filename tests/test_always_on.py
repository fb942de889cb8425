"""An always-on agent for a simulated week: a schedule with a probe, quiet hours and a daily cost
cap, a budget, and a fallback chain; the scheduler's clock moved an hour at a time, two scripted
model servers over real HTTP. Every run, refusal and failover must be in history, and the spend
never over the budget."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aos_sdk.testing import ScriptedModel

from .conftest import run_aos
from .test_schedule import World

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
ALARMS = (10, 14, 18)  # the hours at which the probe finds something
RUN = {"prompt_tokens": 1000, "completion_tokens": 100}  # $0.00021 a call at gpt-4o-mini's price
PER_RUN = 1000 * 0.15e-6 + 100 * 0.6e-6
BUDGET = 0.003  # 14 runs
CAP = 0.0005  # a day: two runs, and the third (which passes it) pauses the schedule


@pytest.fixture
def week(home: Path, daemon_env: dict[str, str]) -> Iterator[World]:
    (home / "aoscb.json").write_text(
        json.dumps(
            {
                "skills": {"disabled": ["aos-guard", "aos-a2a", "aos-frontend"]},
                "limits": {"model_retries": 1, "model_backoff_ms": 10},
            }
        )
    )
    w = World(home, daemon_env)
    w.set(MONDAY)
    assert run_aos("start", env=w.env).returncode == 0
    try:
        yield w
    finally:
        run_aos("stop", env=w.env)


def test_a_week_of_an_always_on_agent(week: World) -> None:
    w = week
    with ScriptedModel() as primary, ScriptedModel() as fallback:
        fallbacks = [{"model": "openai/gpt-4o-mini-2024-07-18", "model_params": {"api_base": fallback.url}}]
        w.agent(
            primary,
            "watch",
            llm="openai/gpt-4o-mini",
            skills={"enabled": ["aos-budget", "aos-router"]},
            budget={"month_cost": BUDGET},
            router={"fallbacks": fallbacks, "cooldowns_s": [0.05]},
        )
        answer = {"text": "WARN: / is at 91%", "usage": RUN}
        rate_limited = {"status": 429, "error": "rate limited"}  # twice: the call and its one retry
        primary.add(*[answer] * 3, rate_limited, rate_limited, *[answer] * 10)
        fallback.add(answer)
        s = w.cmd(
            "add",
            agent="watch",
            every="1h",
            probe="test ! -e alarm || { cat alarm; exit 1; }",
            quiet="23:00-06:00",
            max_cost_day=CAP,
            message="The disk is filling: see what grew.",
        )
        alarm = w.home / "workspaces" / "watch" / "alarm"
        alarm.parent.mkdir(parents=True, exist_ok=True)
        at = MONDAY
        for _ in range(7 * 24):
            at += timedelta(hours=1)
            if at.hour in ALARMS:
                alarm.write_text("/ is at 91%\n")
            w.set(at)
            w.until(
                f"{at} to be handled",
                lambda at=at: (
                    (r := w.cmd("list")[0])["checked"] == at.isoformat() and r["state"] != "running"
                ),
            )
            alarm.unlink(missing_ok=True)

        runs = w.runs(s)
        fired = [f["body"] for f in w.log(s, "schedule.fired")]
        # Every run is recorded once, and only outside quiet hours.
        assert len(fired) == len(runs) and len({r["due"] for r in runs}) == len(runs)
        hours = [datetime.fromisoformat(r["due"]).hour for r in runs]
        assert all(6 <= h < 23 for h in hours)
        kinds = Counter((r["kind"], r["level"]) for r in runs)
        model_runs = [r for r in runs if r["kind"] == "model"]
        assert all(datetime.fromisoformat(r["due"]).hour in ALARMS for r in model_runs)
        # Probes found nothing the rest of the time, for free.
        assert all(r["cost"] == 0 for r in runs if r["kind"] == "probe")
        # Days 1-4: 06:00-18:00 (the cap pauses the rest of the day); day 5 the same, its 18:00
        # run refused by the budget; days 6 and 7 until the 10:00 run, refused too.
        assert kinds == {("probe", "ok"): 4 * 10 + 10 + 2 * 4, ("model", "warn"): 4 * 3 + 3 + 2}
        # 14 runs the budget allows; then it refuses, and the schedule pauses for the day.
        done = [r for r in model_runs if r["status"] == "done"]
        refused = [r for r in model_runs if r["status"] == "refused"]
        assert len(done) == 14 and len(refused) >= 2, kinds
        assert all(r["level"] == "warn" for r in done)
        assert "watch's monthly cost limit of $0.0030" in refused[0]["summary"]
        pauses = [f["body"]["reason"] for f in w.log(s, "schedule.paused")]
        assert (
            sum("daily cost cap" in p for p in pauses) >= 4 and sum("was refused" in p for p in pauses) >= 2
        )
        # The daily cap held each simulated day to two runs and the one that passed it.
        per_day = Counter(r["due"][:10] for r in done)
        assert max(per_day.values()) == 3 and all(
            sum(r["cost"] for r in done if r["due"][:10] == day) <= CAP + PER_RUN + 1e-9 for day in per_day
        )
        # The failover is in history: the 4th run was answered by the fallback, the 5th by the primary.
        answers = []
        for r in done:
            facts = w.call("history.list", {"session": r["session"], "kinds": ["message"]})["facts"]
            answers.append(next(f["meta"] for f in facts if f["role"] == "assistant"))
        assert answers[3]["failed_over"] == [
            {"model": "openai/gpt-4o-mini", "kind": "RateLimitError", "status": 429}
        ]
        assert answers[3]["usage"]["model"] == "gpt-4o-mini-2024-07-18"
        assert answers[4]["usage"]["model"] == "gpt-4o-mini" and "failed_over" not in answers[4]
        # Refusals are in history too, naming the limit.
        refusal = w.call("history.list", {"session": refused[0]["session"], "kinds": ["error"]})["facts"][0]
        assert "watch's monthly cost limit of $0.0030" in refusal["body"]["message"]
        # And the spend never went over the budget.
        spent = w.call("usage.get", {"payer": "watch", "since_days": 3650})["total"]["cost"]
        assert spent == pytest.approx(14 * PER_RUN) and spent <= BUDGET
        assert len(primary.requests) == 13 + 2 and len(fallback.requests) == 1
