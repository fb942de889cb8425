"""The subreaper mechanism, with real processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest


def test_orphans_are_reparented_to_us_and_reaped() -> None:
    # In a fresh process (becoming a subreaper is for life): a bash that backgrounds a child and
    # exits leaves an orphan, which must come to us, and be reaped once it exits.
    code = textwrap.dedent(
        """
        import os, select, subprocess, time
        from aos.kernel import procs
        assert procs.become_subreaper()
        r, w = os.pipe()
        # The grandchild holds the pipe's write end until it exits: EOF on r is our event.
        bash = subprocess.run(["bash", "-c", "( sleep 0.3 ) >/dev/null 2>&1 & echo $!"], capture_output=True,
                              text=True, pass_fds=(w,))
        os.close(w)
        orphan = int(bash.stdout.strip())
        assert orphan in procs._children(), "the orphan was not reparented to the subreaper"
        select.select([r], [], [], 10)
        os.close(r)
        deadline = time.monotonic() + 10
        while not procs._is_zombie(orphan) and time.monotonic() < deadline:
            os.sched_yield()  # the exit and the zombie state are a few microseconds apart
        assert procs.reap_orphans() == [orphan]
        assert not os.path.exists(f"/proc/{orphan}")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "ok", out.stderr


def test_tracked_children_are_left_to_their_owner() -> None:
    code = textwrap.dedent(
        """
        import subprocess
        from aos.kernel import procs
        procs.become_subreaper()
        p = subprocess.Popen(["true"])
        procs.track(p.pid)
        import os
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        assert procs.reap_orphans() == []
        assert p.wait() == 0  # the owner still gets the real exit status
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "ok", out.stderr


def test_an_unsandboxed_command_is_on_record_before_it_runs(tmp_path: Path) -> None:
    """A daemon killed right after a spawn must find the command's group at the next start. The
    record was written by the daemon after the spawn, and under load the command (and the
    background jobs it starts) could run before it: killed then, they were never found again."""
    from aos.loop.bash import run_bash, setpriv_path

    if setpriv_path() is None:
        pytest.skip("util-linux setpriv is not installed: the preexec_fn path writes the record itself")
    track = tmp_path / "commands"
    track.mkdir()

    async def busy() -> None:
        for _ in range(8):  # a loaded daemon: other work between any two steps of the spawn
            time.sleep(0.05)  # noqa: ASYNC251 - blocking on purpose: the loop is busy
            await asyncio.sleep(0)

    async def main() -> Any:
        hog = asyncio.create_task(busy())
        # The command's very first act is to read the record: it must already name its group.
        res = await run_bash(
            f"cat {track}/*.pgid; echo; echo $$",
            cwd=str(tmp_path),
            env={"PATH": "/usr/bin:/bin"},
            timeout=10,
            cap=4096,
            track_dir=track,
        )
        await hog
        return res

    res = asyncio.run(main())
    recorded, own = res.output.split()
    assert res.exit_code == 0 and recorded == own
    assert list(track.iterdir()) == [], "the record goes once the command ends"
