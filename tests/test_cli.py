"""The ``aos`` command line, driven as a user drives it: real subprocesses, real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aos.kernel.syscalls import SYSCALLS

from .conftest import run_aos
from .procutil import live_processes_mentioning


@pytest.fixture
def embedded_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env["AOS_HOME"] = str(home)
    return env


def test_start_status_stop_with_embedded_postgres(embedded_env: dict[str, str], home: Path) -> None:
    def aos(*args: str) -> subprocess.CompletedProcess[str]:
        return run_aos(*args, env=embedded_env)

    try:
        r = aos("status")
        assert r.returncode == 3 and "aos is not running" in r.stdout

        r = aos("start")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("aos started (pid ")
        pid = int(r.stdout.split("pid ")[1].split(",")[0])

        r = aos("start")
        assert r.returncode == 0 and f"aos is already running (pid {pid})" in r.stdout

        r = aos("status")
        assert r.returncode == 0, r.stderr
        assert f"running, pid {pid}" in r.stdout
        assert "embedded PostgreSQL 18" in r.stdout
        assert str(home / "run" / "kernel.sock") in r.stdout

        r = aos("status", "--json")
        assert r.returncode == 0
        st = json.loads(r.stdout)
        assert st["running"] is True and st["pid"] == pid
        assert st["database"]["kind"] == "embedded"
        assert st["database"]["fsync"] == "on" and st["database"]["unsafe_durability"] is False
        assert st["uptime_s"] >= 0 and st["version"]

        r = aos("stop")
        assert r.returncode == 0 and f"aos stopped (pid {pid}" in r.stdout

        r = aos("status")
        assert r.returncode == 3 and "not running" in r.stdout
        r = aos("status", "--json")
        assert r.returncode == 3 and json.loads(r.stdout)["running"] is False
        assert not (home / "run" / "kernel.sock").exists()
        assert live_processes_mentioning(str(home)) == []

        r = aos("stop")
        assert r.returncode == 0 and "not running" in r.stdout
        log = aos("logs", "-n", "0")
        assert "aos.started" in log.stdout and "aos.stopped" in log.stdout and "INFO" in log.stdout
    finally:
        aos("stop")


def test_agents_sessions_history_through_the_cli(aos: Any) -> None:
    assert aos("start").returncode == 0
    r = aos("agent", "list")
    assert r.returncode == 0 and "no agents yet" in r.stdout

    r = aos("agent", "create", "alice", "--instructions", "be brief", "--model", "m1")
    assert r.returncode == 0 and r.stdout.startswith("created agent alice (ag_")
    r = aos("agent", "create", "alice")
    assert r.returncode == 1 and "conflict: an agent named 'alice' already exists" in r.stderr

    r = aos("agent", "list")
    assert "alice" in r.stdout and "NAME" in r.stdout and "m1" in r.stdout
    agents = json.loads(aos("agent", "list", "--json").stdout)
    assert [a["name"] for a in agents] == ["alice"]
    r = aos("agent", "show", "alice")
    assert "be brief" in r.stdout

    s = json.loads(aos("session", "create", "alice", "--title", "demo", "--json").stdout)
    sid = s["id"]
    for text in ("hello", "two\nlines"):
        r = aos(
            "call", "session.append", json.dumps({"session": sid, "role": "user", "body": {"text": text}})
        )
        assert r.returncode == 0, r.stderr
    r = aos("call", "session.append", "-", input=json.dumps({"session": sid, "body": [1, 2]}))
    assert json.loads(r.stdout)["seq"] == 3

    r = aos("history", sid)
    lines = r.stdout.splitlines()
    assert "message/user" in lines[0] and lines[0].endswith("hello")
    assert lines[1].endswith("two") and lines[2].strip() == "lines"
    assert lines[3].endswith("[1, 2]")
    facts = [json.loads(x) for x in aos("history", sid, "--json").stdout.splitlines()]
    assert [f["seq"] for f in facts] == [1, 2, 3]
    assert [
        f["seq"] for f in map(json.loads, aos("history", sid, "--json", "--after", "2").stdout.splitlines())
    ] == [3]

    r = aos("session", "list")
    row = next(line for line in r.stdout.splitlines() if line.startswith(sid))
    assert row.split()[1] == "alice" and "demo" in row  # the agent by name
    r = aos("session", "show", sid)
    assert "last_seq" in r.stdout and " 3" in r.stdout

    r = aos("agent", "archive", "alice")
    assert r.returncode == 0 and "archived agent alice" in r.stdout
    r = aos("call", "session.append", json.dumps({"session": sid, "body": "x"}))
    assert r.returncode == 1 and "archived" in r.stderr


def test_call_errors_and_list(aos: Any) -> None:
    assert aos("start").returncode == 0
    r = aos("call", "agent.list", "{not json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = aos("call", "agent.list", "[1]")
    assert r.returncode == 2 and "must be a JSON object" in r.stderr
    r = aos("call", "agent.gett")
    assert r.returncode == 1 and "method_not_found" in r.stderr and "agent.get" in r.stderr
    r = aos("call", "agent.get", '{"agent": "nobody"}', "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["data"]["type"] == "not_found"
    r = aos("call", "--list")
    assert all(name in r.stdout for name in SYSCALLS)


def test_commands_say_when_the_daemon_is_not_running(aos: Any) -> None:
    r = aos("agent", "list")
    assert r.returncode == 3 and "aos is not running" in r.stderr and "aos start" in r.stderr


def test_history_follow_streams_new_facts(aos: Any, daemon_env: dict[str, str]) -> None:
    assert aos("start").returncode == 0
    aos("agent", "create", "alice")
    sid = json.loads(aos("session", "create", "alice", "--json").stdout)["id"]
    aos("call", "session.append", json.dumps({"session": sid, "body": {"text": "before"}}))
    follower = subprocess.Popen(
        [sys.executable, "-m", "aos", "history", sid, "--follow"],
        env=daemon_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().rstrip().endswith("before")
        aos("call", "session.append", json.dumps({"session": sid, "body": {"text": "after"}}))
        assert follower.stdout.readline().rstrip().endswith("after")
        # Readable, not raw JSON: a command's result is its outcome and its output's lines.
        result = {"call_id": "c1", "outcome": "ok", "exit_code": 2, "output": 'line one\nline "two"\n'}
        aos("call", "session.append", json.dumps({"session": sid, "kind": "tool.result", "body": result}))
        assert follower.stdout.readline().rstrip().endswith("tool.result        [ok, exit 2]")
        assert follower.stdout.readline().strip() == "line one"
        assert follower.stdout.readline().strip() == 'line "two"'
        # aos stop does not wait out a timeout for a connected client: it tells it the daemon
        # is going away (1001), and the follower ends saying so.
        follower_err = follower.stderr
        assert aos("stop").returncode == 0
        assert follower.wait(30) != 0
        assert follower_err is not None and "code 1001" in follower_err.read()
    finally:
        follower.terminate()
        follower.wait(10)
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()


def test_refuses_a_database_without_durability(aos: Any, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    r = aos("start")
    assert r.returncode == 1
    assert "synchronous_commit=off" in r.stderr and "--unsafe-durability" in r.stderr
    assert aos("status").returncode == 3

    r = aos("start", "--unsafe-durability")
    assert r.returncode == 0, r.stderr
    st = json.loads(aos("status", "--json").stdout)
    assert st["database"]["unsafe_durability"] is True
    assert "UNSAFE" in aos("status").stdout


def test_bad_aoscb_json_is_reported(aos: Any, home: Path) -> None:
    (home / "aoscb.json").write_text('{"limits": {"max_steps": "many"}}')
    r = aos("start")
    assert r.returncode == 2 and "limits.max_steps must be a positive integer" in r.stderr
    (home / "aoscb.json").write_text("{oops")
    r = aos("start")
    assert r.returncode == 2 and "aoscb.json: not valid JSON" in r.stderr
    (home / "aoscb.json").write_text('{"model_client": "fast"}')
    r = aos("start")
    assert r.returncode == 2 and "model_client must be auto or litellm, got 'fast'" in r.stderr
    (home / "aoscb.json").write_text('{"kernel": {"name": "any"}}')
    r = aos("start")
    assert (
        r.returncode == 2
        and "kernel.name must be a word without spaces, other than any and here, got 'any'" in r.stderr
    )
    (home / "aoscb.json").write_text('{"kernel": {"shared_workspaces": "yes"}}')
    r = aos("start")
    assert r.returncode == 2 and "kernel.shared_workspaces must be true or false, got 'yes'" in r.stderr


@pytest.mark.slow
def test_stop_kills_a_daemon_that_does_not_stop(aos: Any, home: Path) -> None:
    import signal

    from aos.pidlock import PidLock

    assert aos("start").returncode == 0
    pid = PidLock.holder(home / "run" / "aos.pid")
    assert pid and pid > 0
    os.kill(pid, signal.SIGSTOP)  # hung: it cannot act on SIGTERM
    r = aos("stop", "--timeout", "1")
    assert r.returncode == 0 and "killing it (SIGKILL)" in r.stderr and f"aos killed (pid {pid})" in r.stdout
    assert aos("status").returncode == 3
    r = aos("start")  # and the next start recovers
    assert r.returncode == 0, r.stderr


def test_aos_ui_prints_a_link_that_signs_in_once(aos: Any, home: Path, daemon_env: dict[str, str]) -> None:
    import socket
    import urllib.error
    import urllib.request

    assert aos("ui").returncode == 3, "no daemon: says so"
    (home / "aoscb.json").write_text(
        json.dumps({"skills": {"disabled": ["aos-guard", "aos-skill", "aos-a2a"]}, "ui": {"port": 0}})
    )
    assert aos("start").returncode == 0
    r = aos("ui")
    assert r.returncode == 0, r.stderr
    link = r.stdout.strip()
    assert link.startswith("http://127.0.0.1:") and "/?token=" in link

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as first:
        opener.open(link, timeout=10)
    first.value.close()  # its socket
    assert first.value.code == 303 and "HttpOnly" in first.value.headers["set-cookie"]
    with pytest.raises(urllib.error.HTTPError) as again:
        opener.open(link, timeout=10)
    again.value.close()
    assert again.value.code == 401, "a link signs in once"
    assert aos("ui").stdout.strip() != link, "the next `aos ui` prints a fresh link"
    # --open hands the link to the browser ($BROWSER, as Python's webbrowser finds one).
    opened = home / "opened.txt"
    browser = home / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o755)
    r = run_aos("ui", "--open", env={**daemon_env, "BROWSER": f"{browser} %s"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert opened.read_text() == r.stdout.strip() and "/?token=" in r.stdout
    r = run_aos("ui", "--open", env={**daemon_env, "BROWSER": "false %s"})  # no browser works here
    assert r.returncode == 0 and "/?token=" in r.stdout
    assert "no browser to open here: copy the link above" in r.stderr
    # A port that is taken: the UI says so, and `aos ui` passes it on.
    port = int(link.split(":")[2].split("/")[0])
    assert aos("stop").returncode == 0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        (home / "aoscb.json").write_text(
            json.dumps({"skills": {"disabled": ["aos-guard", "aos-skill", "aos-a2a"]}, "ui": {"port": port}})
        )
        assert aos("start").returncode == 0
        r = aos("ui")
        assert r.returncode == 1 and f"port {port}" in r.stderr and "taken" in r.stderr


def test_agent_set_changes_an_agent_and_secrets_are_never_shown(
    aos: Any, home: Path, tmp_path: Path, db_url: str
) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz012345"
    assert aos("start").returncode == 0
    r = aos("agent", "create", "ada", "--instructions-file", "/nonexistent/brief.md")
    assert r.returncode == 2 and "cannot read --instructions-file /nonexistent/brief.md" in r.stderr
    assert "Traceback" not in r.stderr
    r = aos("agent", "create", "ada", "--workspace", "relative/ws")  # from here, not the daemon's /
    assert r.returncode == 0, r.stderr
    brief = tmp_path / "brief.md"
    brief.write_text("Answer in one line.")
    r = aos(
        "agent", "set", "ada",
        "--model", "openai/gpt-x",
        "--instructions-file", str(brief),
        "--guard-allow", "^make( |$)",
        "--guard-ask", "^git push",
        "--set", f'model_params.api_key="{secret}"',
        "--set", "model_params.api_base=http://127.0.0.1:9/v1",
        "--set", "sandbox.network=false",
    )  # fmt: skip
    assert r.returncode == 0 and "updated agent ada (revision 2)" in r.stdout, r.stderr
    shown = json.loads(aos("agent", "show", "ada", "--json").stdout)
    assert shown["model"] == "openai/gpt-x" and shown["instructions"] == "Answer in one line."
    assert shown["workspace"] == str(Path.cwd() / "relative" / "ws")
    assert shown["settings"]["guard"] == {"allow": ["^make( |$)"], "ask": ["^git push"]}
    assert shown["settings"]["sandbox"] == {"network": False}
    assert shown["settings"]["model_params"] == {"api_key": "***", "api_base": "http://127.0.0.1:9/v1"}
    for out in (aos("agent", "show", "ada").stdout, aos("agent", "list", "--json").stdout):
        assert secret not in out and "***" in out
    # A client that sends back what it read (*** and all) keeps the key; --unset removes a setting.
    r = aos("call", "agent.update", json.dumps({"agent": "ada", "settings": shown["settings"]}))
    assert r.returncode == 0 and secret not in r.stdout
    assert aos("agent", "set", "ada", "--unset", "sandbox").returncode == 0
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT settings FROM agents WHERE name = 'ada'").fetchone()[0]
    assert stored["model_params"]["api_key"] == secret and "sandbox" not in stored
    r = aos("agent", "set", "ada", "--guard-deny", "([")
    assert r.returncode == 2 and "is not a regular expression" in r.stderr
    assert aos("agent", "set", "ada").returncode == 2, "nothing to change"


def test_an_archived_agent_is_restored_by_name(aos: Any, home: Path) -> None:
    assert aos("start").returncode == 0
    assert aos("agent", "create", "bo").returncode == 0
    assert aos("agent", "archive", "bo").returncode == 0
    r = aos("agent", "create", "bo")
    assert r.returncode == 1 and "`aos agent restore bo` brings it back" in r.stderr
    r = aos("agent", "restore", "bo")
    assert r.returncode == 0 and "restored agent bo" in r.stdout
    assert json.loads(aos("agent", "show", "bo", "--json").stdout)["status"] == "active"
    r = aos("agent", "restore", "bo")
    assert r.returncode == 1 and "is not archived" in r.stderr


def test_a_bad_aoscb_json_is_a_usage_error_and_misspelt_keys_are_named(aos: Any, home: Path) -> None:
    config = home / "aoscb.json"
    saved = config.read_text()
    config.write_text('{"model": "x",\n "limits": {"max_steps": 3}')
    r = aos("start")
    assert r.returncode == 2 and "aoscb.json: not valid JSON (line 2" in r.stderr, r.stderr
    config.write_text(
        json.dumps({**json.loads(saved), "modle": "openai/typo", "limits": {"max_stepz": 3}, "myskill": {}})
    )
    # $AOS_HOME/.env is read too (the environment and the checkout's .env still win).
    (home / ".env").write_text("AOS_MODEL=openai/from-home-env\n")
    r = aos("start")
    assert r.returncode == 0, r.stderr
    assert "unknown key 'modle' (did you mean 'model'?)" in r.stderr
    assert "unknown key limits.'max_stepz' (did you mean 'max_steps'?)" in r.stderr
    assert "myskill" not in r.stderr, "a skill's own section is not a mistake"
    shown = json.loads(aos("call", "system.config", "{}").stdout)
    assert shown["config"]["model"] == "openai/from-home-env"


def test_every_command_speaks_json_and_so_do_its_errors(aos: Any, home: Path) -> None:
    r = aos("stop", "--json")
    assert json.loads(r.stdout) == {"running": False, "stopped": False}
    r = aos("agent", "list", "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["error"]["type"] == "not_running"
    r = aos("ui", "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["error"]["type"] == "not_running"
    started = json.loads(aos("start", "--json").stdout)
    assert started["running"] is True and started["started"] is True and started["pid"] > 0
    again = json.loads(aos("start", "--json").stdout)
    assert again == {"running": True, "pid": started["pid"], "started": False}
    lines = aos("logs", "--json", "-n", "3").stdout.splitlines()
    assert len(lines) == 3 and all("event" in json.loads(x) for x in lines)
    r = aos("skills", "logs", "aos-context", "--json", "-n", "5")
    got = json.loads(r.stdout)
    assert got["skill"] == "aos-context" and isinstance(got["lines"], list)
    r = aos("skills", "logs", "no-such-skill", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["type"] == "not_found"
    r = aos("agent", "create", "ada", "--instructions-file", "/nope", "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["type"] == "usage"
    assert aos("agent", "create", "ada").returncode == 0
    r = aos("chat", "ada", "--json", input="/usage\n")  # from a pipe: facts as JSON lines
    assert r.returncode == 0 and r.stdout == "", r.stdout  # a slash command writes no fact
    assert "this session: 0 model calls" in r.stderr
    stopped = json.loads(aos("stop", "--json").stdout)
    assert stopped["stopped"] is True and stopped["pid"] == started["pid"]
