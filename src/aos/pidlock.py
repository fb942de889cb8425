"""The daemon's pid file and lock (light: the CLI imports it for ``status`` and ``stop``)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["DaemonError", "PidLock", "pid_namespace"]


def pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[4026531836]``): pids mean something only inside one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


class DaemonError(RuntimeError):
    """The daemon cannot start; the message says why and what to do."""


class PidLock:
    """``$AOS_HOME/run/aos.pid``, locked with ``flock`` for the daemon's lifetime.

    The lock, not the file's existence, says whether a daemon runs: the kernel drops it when the
    process dies, however it dies. The file is never unlinked (unlinking a locked file lets a
    second daemon lock a fresh inode); it is emptied on a clean stop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid.

        Raises:
            DaemonError: another daemon holds it (the message names its pid).
        """
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the daemon's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            fh.close()
            raise DaemonError(f"aos is already running (pid {pid})") from None
        fh.seek(0)
        fh.truncate()
        # The pid, and the PID namespace it is a pid in: a daemon started in a namespace of its
        # own has pid 1 or 2 there, which means another process outside (`aos stop` checks).
        fh.write(f"{os.getpid()}\n{pid_namespace() or ''}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.close()
            self._fh = None

    @staticmethod
    def holder(path: Path) -> int | None:
        """The pid of the running daemon, or None when no daemon holds the lock."""
        got = PidLock.record(path)
        return None if got is None else got[0]

    @staticmethod
    def record(path: Path) -> tuple[int, str | None] | None:
        """The running daemon's pid (-1: unreadable) and PID namespace, or None when no daemon
        holds the lock."""
        try:
            fh = open(path)  # noqa: SIM115
        except FileNotFoundError:
            return None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                lines = fh.read().split("\n")
                pid = int(lines[0]) if lines[0].strip().isdigit() else -1
                return pid, (lines[1].strip() or None) if len(lines) > 1 else None
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None

    @staticmethod
    def wait_released(path: Path, timeout: float) -> bool:
        """Wait until no daemon holds the lock (it has exited); False on timeout."""
        import threading

        done = threading.Event()

        def wait() -> None:
            with open(path) as fh:
                fcntl.flock(fh, fcntl.LOCK_SH)  # blocks until the daemon's exclusive lock is gone
                done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)
