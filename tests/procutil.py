"""Process inspection for tests that kill things: nothing may be left running."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def live_processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live (not zombie) processes whose command line contains ``text``, other than this one."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text in cmdline and state != "Z":
            found.append((int(entry.name), cmdline.strip()))
    return found


def gone(pid: int) -> bool:
    """The process has exited (it may linger as a zombie until its parent reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def wait_until(what: str, test: Any, timeout: float = 30) -> Any:
    """Wait for ``test()`` to return something true, and return it: for states of another process
    (a daemon, a service) that no stream of ours announces. Fails after ``timeout`` s, naming
    ``what`` it waited for."""
    deadline = time.monotonic() + timeout
    while not (got := test()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return got
