"""Child processes: the daemon is a child subreaper and reaps every orphan handed to it.

On these machines PID 1 does not reap orphans, so a grandchild whose parent dies (a bash
pipeline, a service's helper) would stay a zombie forever. As a subreaper, the daemon becomes the
parent of such orphans instead, and :func:`reap_orphans` collects them. It never calls
``waitpid(-1)``: that would steal the exit status of children that ``subprocess`` or asyncio is
waiting for. It reaps only zombie children that nobody tracks.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

__all__ = ["become_subreaper", "reap_orphans", "track", "untrack"]

_PR_SET_CHILD_SUBREAPER = 36
_tracked: set[int] = set()


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def track(pid: int) -> None:
    """Mark ``pid`` as a child someone else waits for (never reaped here)."""
    _tracked.add(pid)


def untrack(pid: int) -> None:
    _tracked.discard(pid)


def _children() -> set[int]:
    out: set[int] = set()
    me = os.getpid()
    try:
        tasks = list(Path(f"/proc/{me}/task").iterdir())
    except FileNotFoundError:
        return out
    for task in tasks:
        try:
            out.update(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def reap_orphans() -> list[int]:
    """Reap zombie children that no one tracks; returns their pids."""
    reaped = []
    for pid in _children() - _tracked:
        if not _is_zombie(pid):
            continue
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done:
            reaped.append(pid)
    return reaped
