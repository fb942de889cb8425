"""The daemon's pid file and lock (light: the CLI imports it for ``status`` and ``stop``)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["DaemonError", "PidLock"]


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
        fh.write(f"{os.getpid()}\n")
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
        try:
            fh = open(path)  # noqa: SIM115
        except FileNotFoundError:
            return None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = fh.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None
