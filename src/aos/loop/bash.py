"""Running one bash command for an agent.

- ``bash -c <command>`` in the agent's workspace, in a process group of its own;
- a clean environment: a fixed base, plus what the caller adds (``tool.env``, ``AOS_*``);
- stdout and stderr interleaved as the command writes them;
- output capped: the first and last halves of ``cap`` bytes are kept, the middle replaced by a
  marker; the output is also kept aside up to ``keep`` bytes (``RunResult.full``, head and tail
  likewise) so the caller can store it; memory stays bounded whatever a command prints;
- a timeout, or cancellation (an interrupt), kills the whole group; so does the command's end, so
  background jobs it left behind do not outlive it (``setsid`` detaches deliberately);
- if the daemon dies, bash gets SIGKILL (parent-death signal, set by util-linux's ``setpriv``
  where it exists, else by a ``preexec_fn``, which makes CPython fork the whole daemon), and the
  next daemon kills the rest of the group from its record in ``$AOS_HOME/run/commands/``;
- sandboxed commands (an ``argv`` from :mod:`aos.loop.sandbox`) need none of this: bubblewrap
  ends the whole sandbox with the command or the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..kernel import procs

__all__ = ["RunResult", "base_env", "kill_leftovers", "run_bash", "setpriv_path"]

_DRAIN_AFTER_EXIT_S = 0.2  # background jobs may hold the output pipe open after bash exits


def base_env() -> dict[str, str]:
    """The environment every command starts from (nothing of the daemon's leaks in)."""
    home = os.environ.get("HOME", "/root")
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": home,
        "USER": os.environ.get("USER", "root"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "SHELL": "/bin/bash",
        "PAGER": "cat",
        "GIT_PAGER": "cat",
    }


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None
    output: str  # visible: capped with a marker
    full: bytes | None  # the output (up to ``keep``) when it was capped or holds NUL bytes, else None
    size: int  # bytes the command wrote in all
    truncated: bool
    timed_out: bool
    duration_ms: float
    #: Stopped by the ``stop`` event (an interrupt): the output is what it printed until then.
    stopped: bool = False

    @property
    def outcome(self) -> str:
        return "interrupted" if self.stopped else "timeout" if self.timed_out else "ok"


class _HeadTail:
    """The first and last halves of ``cap`` bytes of a stream, and its size: memory stays bounded
    whatever the command prints."""

    def __init__(self, cap: int) -> None:
        self.half = max(1, cap // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.half:
                del self.tail[: len(self.tail) - self.half]

    @property
    def cut(self) -> bool:
        return self.size > len(self.head) + len(self.tail)

    def render(self) -> bytes:
        if not self.cut:
            return bytes(self.head) + bytes(self.tail)
        omitted = self.size - len(self.head) - len(self.tail)
        marker = f"\n… [{omitted} bytes omitted of {self.size}] …\n".encode()
        return bytes(self.head) + marker + bytes(self.tail)


class _Collector:
    """What the model sees (``cap``) and what is kept in content (``keep``), from one stream."""

    def __init__(self, cap: int, keep: int) -> None:
        self.visible = _HeadTail(cap)
        self.kept = _HeadTail(max(cap, keep))

    @property
    def size(self) -> int:
        return self.visible.size

    def feed(self, chunk: bytes) -> None:
        self.visible.feed(chunk)
        self.kept.feed(chunk)

    def result(self) -> tuple[str, bytes | None, bool]:
        data = self.visible.render()
        text = data.decode("utf-8", "replace")
        if not self.visible.cut:
            # Output with NUL bytes is shown escaped; its exact bytes are kept aside too.
            return text, data if b"\0" in data else None, False
        return text, self.kept.render(), True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _child_setup(marker: Path | None) -> Callable[[], None]:
    """What the child does between fork and exec: die with the daemon, and record its process
    group before the command can run (so a daemon killed at any moment leaves a record)."""
    path = None if marker is None else os.fsencode(marker)

    def setup() -> None:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)

    return setup


@functools.cache
def setpriv_path() -> str | None:
    """util-linux's ``setpriv``, if it can set a parent-death signal (2.33+), else None."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        help_text = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if "--pdeathsig" in help_text else None


def kill_leftovers(folder: Path) -> list[int]:
    """Kill the process groups of commands a dead daemon left running (``<folder>/*.pgid``)."""
    killed = []
    for f in folder.glob("*.pgid"):
        try:
            pgid = int(f.read_text().strip())
            os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)
        except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
            pass
        f.unlink(missing_ok=True)
    return killed


async def run_bash(
    command: str,
    *,
    cwd: str,
    env: dict[str, str],
    timeout: float,
    cap: int,
    track_dir: Path | None = None,
    argv: list[str] | None = None,
    stop: asyncio.Event | None = None,
    keep: int = 8 * 1024 * 1024,
    on_output: Callable[[bytes], None] | None = None,
) -> RunResult:
    """Run ``command``; see the module docstring. Cancelling kills the command's group.

    ``argv``, when given, runs the command instead of ``bash -c`` (the sandbox: it ends all the
    command's processes itself when its ``bash`` exits or the daemon dies, so no child set-up is
    needed and CPython can spawn with vfork). Otherwise, with ``track_dir``, the group id is kept
    in a file there while the command runs, so that a daemon restarted after a crash can kill what
    the dead one left running.

    ``keep`` bounds what is kept of the whole output (``RunResult.full``): past it, its first and
    last halves with a marker saying how much was left out. ``stop``, when set while the command
    runs, kills it like a timeout does, and the result keeps what it printed until then
    (``stopped``). ``on_output`` gets each chunk as the command prints it (live progress).
    """
    t0 = time.perf_counter()
    marker = None
    preexec = None
    if argv is None:
        marker = None if track_dir is None else track_dir / f"{uuid.uuid4().hex}.pgid"
        setpriv = setpriv_path()
        if setpriv is not None:
            # setpriv sets the parent-death signal and execs bash: no preexec_fn, so no fork of
            # the whole daemon. That bash records its group before the command runs (then execs
            # the command's own bash, same pid): written by the daemon after the spawn, the record
            # could come too late under load, and a daemon killed in between left the command's
            # background jobs running with nothing to find them by.
            bash = ["bash", "-c", command]
            if marker is not None:
                bash = ["bash", "-c", 'echo $$ > "$1" && exec bash -c "$2"', "bash", str(marker), command]
            argv = [setpriv, "--pdeathsig", "KILL", "--", *bash]
        else:
            argv, preexec = ["bash", "-c", command], _child_setup(marker)
    with procs.spawning():
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,  # None: CPython spawns with vfork instead of forking the daemon
        )
        procs.track(proc.pid)
    pgid = proc.pid
    out = _Collector(cap, keep)
    assert proc.stdout is not None
    stdout = proc.stdout

    async def pump() -> None:
        while chunk := await stdout.read(65536):
            out.feed(chunk)
            if on_output is not None:
                on_output(chunk)

    reader = asyncio.create_task(pump())
    timed_out = stopped = False
    try:
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            done, _ = await asyncio.wait(
                {waiter} if stopper is None else {waiter, stopper},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if stopper is not None:
                stopper.cancel()
        if waiter not in done:
            timed_out, stopped = not done, bool(done)
            _kill_group(pgid)
            await waiter
        # Background jobs may keep the pipe open: give them a moment, then end them.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), _DRAIN_AFTER_EXIT_S)
        _kill_group(pgid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 1)
    except BaseException:
        _kill_group(pgid)
        reader.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(proc.wait(), 5)
        raise
    finally:
        procs.untrack(proc.pid)
        if marker is not None:
            marker.unlink(missing_ok=True)
        if not reader.done():
            reader.cancel()
    text, full, truncated = out.result()
    return RunResult(
        exit_code=None if timed_out or stopped else proc.returncode,
        output=text,
        full=full,
        size=out.size,
        truncated=truncated,
        timed_out=timed_out,
        stopped=stopped,
        duration_ms=(time.perf_counter() - t0) * 1000,
    )
