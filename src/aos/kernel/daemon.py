"""The daemon process: one asyncio loop that owns the database, the sockets and the children.

Start-up, in order: ``$AOS_HOME`` folders, the pid-file lock (a second daemon stops here), child
subreaper, PostgreSQL (embedded unless ``AOS_DB_URL``), migrations, the durability check, the
kernel, the kernel socket, then "ready" on the readiness pipe (``aos start`` waits for it).

Stop (SIGTERM or SIGINT; ``aos stop`` sends SIGTERM): stop accepting connections, let in-flight
requests finish (``limits.drain_timeout_s``), close connections, flush the runtime log, close the
pool, stop PostgreSQL. A second signal skips the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

from aos_sdk.errors import AosError

from .. import __version__
from ..config import Config, ConfigError, Paths, load_config, load_dotenv
from ..db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from ..db.store import Store, redact_dsn
from ..logs import configure, get_logger
from ..pidlock import DaemonError, PidLock
from ..redact import refresh_secret_values
from . import procs
from .kernel import DatabaseSettings, Kernel
from .server import serve_kernel_socket

__all__ = ["DaemonError", "PidLock", "run_daemon"]

log = get_logger("aos.daemon")

DB_NAME = "aos"


class _Ready:
    """The readiness pipe from ``aos start``: one line, ``ready`` or ``error: ...``."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, line: str) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, (line.rstrip("\n") + "\n").encode())
            os.close(self.fd)
        self.fd = None


def run_daemon(
    *, unsafe_durability: bool = False, ready_fd: int | None = None, foreground: bool = True
) -> int:
    """Run the daemon until it is told to stop; returns the process exit code."""
    ready = _Ready(ready_fd)
    paths = Paths.from_env()
    try:
        paths.ensure()
        load_dotenv(paths)
        refresh_secret_values()
        config = load_config(paths)
    except (ConfigError, OSError) as exc:
        ready.send(f"error: {exc}")
        print(f"aos: {exc}", file=sys.stderr)
        return 2
    lock = PidLock(paths.pidfile)
    try:
        lock.acquire()
    except DaemonError as exc:
        ready.send(f"error: {exc}")
        print(f"aos: {exc}", file=sys.stderr)
        return 1
    try:
        procs.become_subreaper()
        procs.wait_children_by_pidfd()
        configure(paths.log_file, level=os.environ.get("AOS_LOG_LEVEL", "info"), also_stderr=foreground)
        for warning in config.warnings:
            log.warning("config.unknown_key", detail=warning)
        try:
            return asyncio.run(_main(paths, config, unsafe_durability, ready))
        except DaemonError as exc:
            log.error("aos.start_failed", error=str(exc))
            ready.send(f"error: {exc}")
            print(f"aos: {exc}", file=sys.stderr)
            return 1
    finally:
        ready.send("error: the daemon exited during start-up (see the log)")
        lock.release()


async def _main(paths: Paths, config: Config, unsafe_durability: bool, ready: _Ready) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hurry = asyncio.Event()
    signals = 0

    def on_signal(signame: str) -> None:
        nonlocal signals
        signals += 1
        log.info("aos.signal", signal=signame, count=signals)
        stop.set()
        if signals > 1:
            hurry.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    loop.add_signal_handler(signal.SIGCHLD, procs.reap_orphans)

    pg: EmbeddedPostgres | None = None
    failed: list[str] = []  # why the daemon stops on its own (the embedded database is gone)
    url = os.environ.get("AOS_DB_URL")
    try:
        if url:
            dsn, kind = url, "external"
        else:
            pg = EmbeddedPostgres(paths.pg, paths.pg_log)
            try:
                # Started from the main thread on purpose: the parent-death signal the server
                # gets is tied to the thread that forked it.
                pg.start()
            except EmbeddedPostgresError as exc:
                raise DaemonError(str(exc)) from exc
            assert pg.proc is not None
            procs.track(pg.proc.pid)
            try:
                await Store.ensure_database(pg.dsn("postgres"), DB_NAME)
            except AosError as exc:
                raise DaemonError(f"cannot create the database: {exc.message}") from exc
            dsn, kind = pg.dsn(DB_NAME), "embedded"
        restarted: list[Any] = []  # what to do once a restarted server is back
        supervisor = (
            None if pg is None else asyncio.create_task(_supervise_postgres(pg, stop, failed, restarted))
        )
        try:
            code = await _serve(paths, config, dsn, kind, unsafe_durability, ready, stop, hurry, restarted)
        finally:
            if supervisor is not None:
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
        if failed:
            log.error("aos.stopped_on_its_own", reason="; ".join(failed))
            return 1
        return code
    finally:
        if pg is not None:
            pg_code = pg.stop()
            if pg.proc is None and pg_code is not None:
                log.info("postgres.stopped", code=pg_code)
        log.info("aos.stopped")


_PG_RESTARTS = 3  # within _PG_RESTART_WINDOW_S; one more death stops the daemon
_PG_RESTART_WINDOW_S = 60.0


async def _supervise_postgres(
    pg: EmbeddedPostgres, stop: asyncio.Event, failed: list[str], restarted: list[Any]
) -> None:
    """Restart the embedded server if it dies (it then recovers from its WAL, as after a crash).

    Woken by the server's pidfd, not by polling. A server that keeps dying, or cannot be started
    again, stops the daemon with a clear log line: serving without a database would only hang.
    """
    loop = asyncio.get_running_loop()
    deaths: list[float] = []
    while not stop.is_set():
        assert pg.proc is not None
        proc = pg.proc
        died = asyncio.Event()
        fd = os.pidfd_open(proc.pid)
        loop.add_reader(fd, died.set)
        try:
            await died.wait()
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        code = proc.poll()  # reaps it: no zombie
        procs.untrack(proc.pid)
        if stop.is_set():
            return
        now = time.monotonic()
        deaths = [t for t in deaths if now - t < _PG_RESTART_WINDOW_S] + [now]
        if len(deaths) > _PG_RESTARTS:
            failed.append(f"PostgreSQL died {len(deaths)} times within {_PG_RESTART_WINDOW_S:g} s")
            log.error("postgres.gave_up", code=code, deaths=len(deaths), action="stopping the daemon")
            stop.set()
            return
        log.error("postgres.died", code=code, action="restarting it")
        try:
            # In the loop's thread on purpose (the parent-death signal is tied to the forking
            # thread); the server's crash recovery runs meanwhile, and nothing can use the
            # database until it is back anyway.
            await _restart(pg)
        except EmbeddedPostgresError as exc:
            failed.append(f"PostgreSQL could not be restarted: {exc}")
            log.error("postgres.restart_failed", error=str(exc), action="stopping the daemon")
            stop.set()
            return
        assert pg.proc is not None
        procs.track(pg.proc.pid)
        log.info("postgres.restarted", pid=pg.proc.pid)
        for callback in restarted:
            try:
                await callback()
            except Exception:
                log.exception("postgres.after_restart_failed")


async def _restart(pg: EmbeddedPostgres) -> None:
    """Start the server again; its old backends may hold its shared memory for a moment."""
    pg.proc = None
    for attempt in range(5):
        try:
            pg.start()
            return
        except EmbeddedPostgresError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * 2**attempt)  # old backends notice their postmaster's death


def _warm_up_model_client() -> None:
    """Import litellm off the critical path (seconds of imports), so the first dispatch is fast.

    A daemon thread: stopping never waits for it. The first dispatch waits on litellm's import
    lock if it comes before the warm-up is done.
    """

    def run() -> None:
        from ..loop.model import warm_up

        try:
            log.info("model.warmed_up", seconds=round(warm_up(), 2))
        except Exception as exc:  # never fatal: the first dispatch will report a real problem
            log.warning("model.warm_up_failed", error=str(exc))

    threading.Thread(target=run, name="model-warm-up", daemon=True).start()


async def _serve(
    paths: Paths,
    config: Config,
    dsn: str,
    kind: str,
    unsafe_durability: bool,
    ready: _Ready,
    stop: asyncio.Event,
    hurry: asyncio.Event,
    restarted: list[Any],
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(Store.open(dsn))
        except AosError as exc:
            raise DaemonError(f"cannot connect to the database {redact_dsn(dsn)}: {exc.message}") from exc
        applied = await store.migrate()
        if applied:
            log.info("db.migrated", versions=applied)
        settings = await store.durability()
        unsafe = [f"{k}={v}" for k, v in settings.items() if v == "off"]
        if unsafe and not unsafe_durability:
            raise DaemonError(
                f"the database runs with {', '.join(unsafe)}: acknowledged writes could be lost in a crash. "
                "Turn it on, or start with --unsafe-durability to accept that."
            )
        db = DatabaseSettings(kind=kind, url=redact_dsn(dsn), unsafe_durability=bool(unsafe))
        kernel = await stack.enter_async_context(Kernel.running(store, config, paths, db))

        async def after_database_restart() -> None:
            await store.drop_stale_connections()
            await kernel.dispatcher.recover()  # leases that units could not give back meanwhile

        restarted.append(after_database_restart)

        def request_stop(who: str) -> None:
            log.info("aos.stop_requested", by=who)
            stop.set()

        kernel.request_stop = request_stop
        server = await stack.enter_async_context(
            serve_kernel_socket(
                kernel,
                paths.kernel_sock,
                max_frame_bytes=config.limit("max_frame_bytes"),
                max_in_flight=config.limit("max_in_flight"),
                keepalive_s=config.limit("keepalive_s"),
            )
        )
        log.info(
            "aos.started", version=__version__, pid=os.getpid(), db=db.url, socket=str(paths.kernel_sock)
        )
        ready.send("ready")
        await stop.wait()
        log.info("aos.stopping")
        left = await server.shutdown(config.limit("drain_timeout_s"), hurry)
        if left:
            log.warning("aos.drain_incomplete", requests=left)
    return 0
