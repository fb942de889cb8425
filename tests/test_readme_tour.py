"""The README's machine-health tour, run as written: its commands, in order, on a real daemon, the
probe in the real sandbox and the scripted model on a real port; then the alert path its prose
describes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aos_sdk.syncclient import SyncClient

from .conftest import run_aos
from .procutil import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

README = Path(__file__).resolve().parents[1] / "README.md"


def tour() -> list[tuple[str, list[str]]]:
    """The tour's commands and the lines the README shows after each."""
    text = README.read_text()
    block = text.split("<!-- tour:schedule -->", 1)[1].split("<!-- /tour:schedule -->", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.strip().strip("`").strip().splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def shape(line: str) -> str:
    """A README line with its ids, times and session ids marked (they differ in each run)."""
    line = re.sub(r"sch_[0-9a-f]{8}", "@ID@", re.sub(r"\s+", " ", line).strip())
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "@T@", line).replace("se_…", "@SE@")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_machine_health_tour_works_as_written(home: Path, daemon_env: dict[str, str]) -> None:
    usage = shutil.disk_usage("/")
    if usage.used / usage.total >= 0.88:
        pytest.skip("the disk here is nearly full: the tour's probe would alert at once")
    (home / "aoscb.json").write_text(json.dumps({"skills": {"disabled": ["aos-guard", "aos-frontend"]}}))
    steps = tour()
    assert [c.split(" ")[0:4] for c, _ in steps][2:4] == [["uv", "run", "aos", "agent"]] * 2
    port, script = free_port(), home / "script.json"
    ids: dict[str, str] = {}
    model: subprocess.Popen[bytes] | None = None
    sock = home / "run" / "kernel.sock"
    assert run_aos("start", env=daemon_env).returncode == 0
    try:
        for command, shown in steps:
            command = command.replace("/tmp/script.json", str(script)).replace("8999", str(port))
            for readme_id, real in ids.items():
                command = command.replace(readme_id, real)
            if "aos_sdk.testing" in command:  # the scripted model, in the background
                model = subprocess.Popen(
                    [sys.executable, "-m", "aos_sdk.testing", "--script", str(script), "--port", str(port)],
                    stdout=subprocess.DEVNULL,
                )
                continue
            if command.startswith("uv run aos schedule show"):
                # A person reads it a moment later; the test waits for the run to be recorded.
                sid = next(iter(ids.values()))
                wait_until(
                    "the run",
                    lambda sid=sid: (
                        "probe found nothing" in run_aos("schedule", "show", sid, env=daemon_env).stdout
                    ),
                )
            command = command.replace("uv run aos ", f"{sys.executable} -m aos ")
            r = subprocess.run(
                ["bash", "-c", command], env=daemon_env, capture_output=True, text=True, timeout=60
            )
            assert r.returncode == 0, (command, r.stdout, r.stderr)
            if shown and shown[0].startswith("added sch_"):
                readme_id = shown[0].split()[1]
                ids[readme_id] = r.stdout.split()[1]
            for want in shown:  # each line shown, its ids, times and session ids aside
                pattern = re.escape(shape(want))
                for mark, rx in (
                    ("@ID@", r"sch_[0-9a-f]{8}"),
                    ("@T@", r"\d{4}-\d\d-\d\d \d\d:\d\d"),
                    ("@SE@", r"se_\w+"),
                ):
                    pattern = pattern.replace(mark, rx)
                got = re.sub(r"\s+", " ", r.stdout)
                assert re.search(pattern, got), f"{command}\nREADME: {want}\nshown: {r.stdout}"
        assert model is not None and ids
        with SyncClient(sock) as c:
            assert c.call("usage.get", {})["total"]["calls"] == 0, "a probe that finds nothing costs nothing"
        # The other path, as the prose says: the same probe with a 0% threshold.
        add = next(c for c, _ in steps if c.startswith("uv run aos schedule add"))
        add = add.replace("-lt 90", "-lt 0").replace("uv run aos ", f"{sys.executable} -m aos ")
        r = subprocess.run(["bash", "-c", add], env=daemon_env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        second = r.stdout.split()[1]
        assert run_aos("schedule", "run-now", second, env=daemon_env).returncode == 0
        shown = wait_until(
            "the alert", lambda: "(woke ops)" in (out := run_aos("alerts", env=daemon_env).stdout) and out
        )
        assert (
            f"ALERT health {second} (woke ops): / is 97% full; /var/log grew 40 GB since yesterday" in shown
        )
        with SyncClient(sock) as c:
            ops = c.call("session.list", {"agent": "ops"})["sessions"][0]["id"]
            facts = wait_until(
                "ops to finish",
                lambda: (
                    [
                        f
                        for f in c.call("history.list", {"session": ops})["facts"]
                        if f["kind"] == "dispatch.end"
                    ]
                    and c.call("history.list", {"session": ops})["facts"]
                ),
            )
            assert facts[-2]["body"]["text"] == "On it: rotating the logs."
            paid = c.call("usage.get", {"group_by": "agent", "payer": "health"})["rows"]
            assert {r["key"] for r in paid} == {"health", "ops"}, "health pays for the run it caused"
    finally:
        run_aos("stop", env=daemon_env)
        if model is not None:
            model.terminate()
            model.wait(10)
