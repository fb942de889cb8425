"""Child processes: the daemon is a child subreaper and reaps every orphan handed to it.

On these machines PID 1 does not reap orphans, so a grandchild whose parent dies (a bash
pipeline, a service's helper) would stay a zombie forever. As a subreaper, the daemon becomes the
parent of such orphans instead, and :func:`reap_orphans` collects them. It never calls
``waitpid(-1)``: that would steal the exit status of children that ``subprocess`` or asyncio is
waiting for. It reaps only zombie children that nobody tracks.

A child is tracked only once its spawn returns, and asyncio's spawn awaits between the fork and
that moment: a command that exits at once could be reaped here first, and asyncio would then
report its exit code as 255. So spawns run inside :func:`spawning`, and the reaper waits while
any spawn is under way (it runs again when the last one is tracked).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["become_subreaper", "reap_orphans", "spawning", "track", "untrack", "wait_children_by_pidfd"]

_PR_SET_CHILD_SUBREAPER = 36
_tracked: set[int] = set()
_spawns = 0
_reap_deferred = False


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def wait_children_by_pidfd() -> bool:
    """Have asyncio wait for child processes through the event loop (a pidfd per child), not
    with a thread per child; returns whether it does now.

    On Python 3.11 asyncio's default watcher starts a thread that blocks in ``waitpid`` for every
    process it spawns: a thread start and its teardown for each of an agent's commands, and
    threads contending for the GIL at 100 sessions. 3.12 waits by pidfd where Linux has it
    (5.3+); this makes 3.11 do the same. Call it before the event loop starts.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False  # 3.12+ already does, where the kernel allows
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False  # an older kernel, or a seccomp filter: keep the threaded watcher
    asyncio.get_event_loop_policy().set_child_watcher(asyncio.PidfdChildWatcher())
    return True


def track(pid: int) -> None:
    """Mark ``pid`` as a child someone else waits for (never reaped here)."""
    _tracked.add(pid)


def untrack(pid: int) -> None:
    _tracked.discard(pid)


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Hold the reaper off while a child is spawned and tracked (see the module docstring)."""
    global _spawns
    _spawns += 1
    try:
        yield
    finally:
        _spawns -= 1
        if _spawns == 0 and _reap_deferred:
            reap_orphans()


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
    global _reap_deferred
    if _spawns:
        _reap_deferred = True
        return []
    _reap_deferred = False
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
