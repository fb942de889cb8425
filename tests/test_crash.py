"""kill -9 of the daemon loses no acknowledged append, and the next start recovers."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from aos.config import Paths
from aos.pidlock import PidLock
from aos_sdk.errors import AosError, ConnectionLost, Unavailable
from aos_sdk.syncclient import SyncClient

from .conftest import run_aos
from .procutil import live_processes_mentioning


@pytest.mark.slow
def test_kill9_during_appends_loses_no_acknowledged_append(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env["AOS_HOME"] = str(home)
    paths = Paths(home)
    try:
        assert run_aos("start", env=env).returncode == 0
        with SyncClient(paths.kernel_sock) as c:
            c.call("agent.create", {"name": "alice"})
            sid = c.call("session.create", {"agent": "alice"})["id"]

        acked: dict[str, int] = {}
        in_doubt: list[str] = []
        enough = threading.Event()

        def writer() -> None:
            with SyncClient(paths.kernel_sock, timeout=10) as c:
                for i in range(100_000):
                    key = f"k{i}"
                    try:
                        acked[key] = c.call(
                            "session.append", {"session": sid, "body": i, "idempotency_key": key}
                        )["seq"]
                    except (ConnectionLost, Unavailable):
                        in_doubt.append(key)
                        return
                    if i == 300:
                        enough.set()

        t = threading.Thread(target=writer)
        t.start()
        assert enough.wait(60)
        pid = PidLock.holder(paths.pidfile)
        assert pid and pid > 0
        os.kill(pid, signal.SIGKILL)
        t.join(30)
        assert not t.is_alive()
        assert len(acked) > 300 and len(in_doubt) == 1

        r = run_aos("start", env=env)
        assert r.returncode == 0, r.stderr + (home / "logs" / "daemon.out").read_text()
        with SyncClient(paths.kernel_sock) as c:
            facts = []
            after = 0
            while True:
                page = c.call("history.list", {"session": sid, "after_seq": after, "limit": 5000})
                facts += page["facts"]
                if page["next_after"] is None:
                    break
                after = page["next_after"]
            by_key = {f["idempotency_key"]: f["seq"] for f in facts}
            for key, seq in acked.items():
                assert by_key.get(key) == seq, f"acknowledged append {key} (seq {seq}) was lost"
            assert [f["seq"] for f in facts] == list(range(1, len(facts) + 1))
            assert len(facts) in (len(acked), len(acked) + 1)  # the in-doubt append: saved or not
            # Retrying the in-doubt append with its key stores it exactly once.
            retry = c.call("session.append", {"session": sid, "body": -1, "idempotency_key": in_doubt[0]})
            again = c.call("session.append", {"session": sid, "body": -1, "idempotency_key": in_doubt[0]})
            assert retry["seq"] == again["seq"] and again["duplicate"] is True
            assert c.call("session.get", {"session": sid})["last_seq"] == len(acked) + 1
    except AosError as exc:  # pragma: no cover - makes failures readable
        raise AssertionError(f"{exc!r}; log: {(home / 'logs' / 'aos.log').read_text()[-2000:]}") from exc
    finally:
        run_aos("stop", env=env)
    assert live_processes_mentioning(str(home)) == []
