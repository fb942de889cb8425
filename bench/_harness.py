"""What the benchmarks share: a private embedded PostgreSQL and a kernel on it, and percentiles."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aos.config import Config, Paths, load_config
from aos.db.embedded import EmbeddedPostgres
from aos.db.store import Store
from aos.kernel.kernel import DatabaseSettings, Kernel

AOS = [sys.executable, "-m", "aos"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def scripted_model(*args: str) -> Iterator[str]:
    """The scripted model server in its own process (``python -m aos_sdk.testing <args>``);
    yields the ``api_base`` to give an agent."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aos_sdk.testing", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "scripted model on …": it serves
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


@contextmanager
def aos_daemon(home: Path, **env: str) -> Iterator[dict[str, str]]:
    """A real daemon (``aos start``) in ``home``, stopped afterwards; yields its environment
    (``env`` adds to it, ``AOS_DB_URL`` for a server of the benchmark's own, say)."""
    full = {**os.environ, "AOS_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env}
    subprocess.run([*AOS, "start"], env=full, check=True, capture_output=True)
    try:
        yield full
    finally:
        subprocess.run([*AOS, "stop"], env=full, capture_output=True)


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (nearest rank)."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


@dataclass
class Bench:
    kernel: Kernel
    store: Store
    paths: Paths
    base: Path


@asynccontextmanager
async def running_kernel(
    prefix: str,
    *,
    config: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    prepare: Callable[[Paths], None] | None = None,
    **store_options: Any,
) -> AsyncIterator[Bench]:
    """A kernel with its services, on a fresh embedded PostgreSQL in a temporary folder.

    ``config`` may change the loaded ``aoscb.json`` data; ``prepare`` runs on the new home before
    the kernel starts (to drop skills in, say). Everything is removed afterwards.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(base / "pg", base / "pg.log")
    pg.start()
    try:
        await Store.ensure_database(pg.dsn("postgres"), "aos")
        paths = Paths(base / "home")
        paths.ensure()
        os.environ["AOS_HOME"] = str(paths.home)
        if prepare is not None:
            prepare(paths)
        cfg = load_config(paths)
        if config is not None:
            cfg = Config(config(cfg.data), cfg.sources)
        async with Store.open(pg.dsn("aos"), **store_options) as store:
            await store.migrate()
            async with Kernel.running(store, cfg, paths, DatabaseSettings("embedded", "-", False)) as k:
                yield Bench(k, store, paths, base)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def one_invocation(client: Any, sock: Path, agent_id: str) -> None:
    """One invocation through a real daemon, as the benchmarks count it: a fresh session, the
    dispatch, and its facts followed until ``dispatch.end`` (which must say ``done``)."""
    from aos_sdk.syncclient import SyncClient

    sid = client.call("session.create", {"agent": agent_id})["id"]
    with SyncClient(sock, timeout=60) as follow:
        follow.call("history.subscribe", {"session": sid})
        client.call("session.dispatch", {"session": sid, "message": "go"})
        for note in follow.notifications():
            if note.params["fact"]["kind"] == "dispatch.end":
                assert note.params["fact"]["body"]["status"] == "done", note.params
                return
