"""The database goes away and comes back (a restart, a failover) under a running daemon: requests
meanwhile are answered `unavailable` (the daemon is not "not running"), a dispatch whose lease can
no longer be renewed stops itself before its lease runs out, and once the database is back the
first request works and the cut-off dispatch is closed, nothing left dangling."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.db.embedded import EmbeddedPostgres
from aos_sdk.syncclient import SyncClient
from aos_sdk.testing import ScriptedModel

from .conftest import run_aos
from .procutil import live_processes_mentioning, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
TTL = 3


def test_a_database_restart_mid_dispatch(
    home: Path, own_pg: EmbeddedPostgres, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    (home / "aoscb.json").write_text(
        json.dumps(
            {
                "skills": {"disabled": ["aos-guard", "aos-a2a", "aos-frontend", "aos-schedule"]},
                "limits": {"lease_ttl_s": TTL},
            }
        )
    )
    env = {**daemon_env, "AOS_DB_URL": own_pg.dsn("postgres")}
    sock = home / "run" / "kernel.sock"

    def call(method: str, params: dict[str, Any] | None = None) -> Any:
        with SyncClient(sock) as c:
            return c.call(method, params or {})

    assert run_aos("start", env=env).returncode == 0
    try:
        ws = home / "workspaces" / "ada"
        ws.mkdir(parents=True)
        os.mkfifo(ws / "started")
        settings = {"model_params": {"api_base": model.url, "api_key": "k"}}
        call("agent.create", {"name": "ada", "model": "openai/scripted", "settings": settings})
        sid = call("session.create", {"agent": "ada"})["id"]
        model.add({"bash": "echo go > started; sleep 396"})
        started = call("session.dispatch", {"session": sid, "message": "work"})
        (ws / "started").read_text()  # the command runs
        own_pg.stop()
        gone_at = time.monotonic()
        # The dispatch cannot renew its lease: it stops itself, command and all, before its
        # lease could run out (the last renewal was at most a third of the ttl ago).
        wait_until("the command to be stopped", lambda: live_processes_mentioning("sleep 396") == [], TTL + 2)
        assert time.monotonic() - gone_at <= TTL
        # Meanwhile: a clear `unavailable`, at once, and not "not running".
        t0 = time.monotonic()
        r = run_aos("agent", "list", env=env)
        assert r.returncode == 1 and "unavailable: the database is unavailable" in r.stderr, r.stderr
        assert "not running" not in r.stderr and time.monotonic() - t0 < 5
        r = run_aos("status", env=env)
        assert r.returncode == 1 and "is running" in r.stdout and "cannot serve" in r.stdout, r.stdout
        own_pg.start()
        # Back: the first request works (no stale connection is handed out).
        r = run_aos("agent", "list", env=env)
        assert r.returncode == 0 and "ada" in r.stdout, r.stderr
        # The cut-off dispatch is closed: its command unknown, then crash, then its end.
        facts = wait_until(
            "the dispatch to be closed",
            lambda: (
                (f := call("history.list", {"session": sid, "after_seq": started["seq"]})["facts"])
                and f[-1]["kind"] == "dispatch.end"
                and f
            ),
            timeout=TTL + 10,
        )
        assert [x["kind"] for x in facts][-3:] == ["tool.result", "interrupt", "dispatch.end"]
        assert facts[-3]["body"]["outcome"] in ("unknown", "interrupted")
        assert call("dispatch.get", {"dispatch": started["dispatch_id"]})["status"] != "running"
        assert call("session.get", {"session": sid})["lease_owner"] is None
        # And the agent works again.
        model.add({"text": "back"})
        again = call("session.dispatch", {"session": sid, "message": "still there?"})
        end = wait_until(
            "the next dispatch",
            lambda: [
                x
                for x in call("history.list", {"session": sid, "after_seq": again["seq"]})["facts"]
                if x["kind"] == "dispatch.end"
            ],
        )
        assert end[0]["body"]["status"] == "done"
    finally:
        run_aos("stop", env=env)


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m
