"""Shared fixtures: one real embedded PostgreSQL per test run, a fresh database per test.

- ``pg``: the server, started once (session scope) in a temporary folder.
- ``db_url``: a new database cloned from a migrated template (fast: no migrations per test).
- ``kernel``: an in-process kernel serving a real Unix socket on that database.
- ``rpc``: an async JSON-RPC client connected to that socket.
- ``daemon_env``: environment for running ``aos`` as a subprocess against the same server.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aos.config import Config, Paths, load_config
from aos.db.embedded import EmbeddedPostgres
from aos.db.store import Store, redact_dsn
from aos.kernel.kernel import DatabaseSettings, Kernel
from aos.kernel.server import KernelServer, serve_kernel_socket
from aos_sdk.connection import RpcConnection, open_connection

TEMPLATE = "aos_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    # A short base path: Unix socket paths are limited to ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="aos-test-pg-"))
    server = EmbeddedPostgres(base / "pg", base / "postgres.log")
    server.start()
    try:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')

        async def migrate() -> None:
            async with Store.open(server.dsn(TEMPLATE), min_size=1, max_size=1) as store:
                await store.migrate()

        asyncio.run(migrate())
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def db_url(pg: EmbeddedPostgres) -> str:
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return pg.dsn(name)


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Not tmp_path: its long name would push socket paths past the Unix limit.
    d = Path(tempfile.mkdtemp(prefix="aos-home-"))
    # The built-in guard would hold some test commands for approval, and services nobody uses
    # cost every test a process: their own tests turn them on (kernel param "enable").
    (d / "aoscb.json").write_text(
        '{"skills": {"disabled": ["aos-guard", "aos-skill", "aos-a2a", "aos-frontend", "aos-budget", "aos-router", "aos-schedule"]}}'
    )
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def paths(home: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    monkeypatch.setenv("AOS_HOME", str(home))
    p = Paths(home)
    p.ensure()
    return p


@pytest.fixture
def config(paths: Paths) -> Config:
    return load_config(paths)


@dataclass
class KernelUnderTest:
    kernel: Kernel
    server: KernelServer
    paths: Paths
    store: Store
    db_url: str


@pytest.fixture
async def kernel(
    db_url: str, paths: Paths, config: Config, request: pytest.FixtureRequest
) -> AsyncIterator[KernelUnderTest]:
    limits: dict[str, Any] = dict(getattr(request, "param", {}) or {})
    # Hot reload is off unless a test asks for it: explicit skill.reload calls stay deterministic.
    watch = bool(limits.pop("watch", False))
    enable = set(limits.pop("enable", []))
    if limits.pop("guard", False):
        enable.add("aos-guard")
    skills = {**config.data["skills"], "watch": watch}
    skills["disabled"] = [x for x in skills.get("disabled", []) if x not in enable]
    data = {**config.data, "limits": {**config.data["limits"], **limits}, "skills": skills}
    cfg = Config(data, config.sources)
    async with Store.open(db_url) as store:
        db = DatabaseSettings(kind="external", url=redact_dsn(db_url), unsafe_durability=False)
        async with (
            Kernel.running(store, cfg, paths, db) as k,
            serve_kernel_socket(
                k,
                paths.kernel_sock,
                max_frame_bytes=cfg.limit("max_frame_bytes"),
                max_in_flight=cfg.limit("max_in_flight"),
            ) as server,
        ):
            yield KernelUnderTest(k, server, paths, store, db_url)


@pytest.fixture
async def rpc(kernel: KernelUnderTest) -> AsyncIterator[RpcConnection]:
    async with open_connection(kernel.paths.kernel_sock) as conn:
        yield conn


@pytest.fixture
def own_pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to stop and start (a database restart under daemons)."""
    base = Path(tempfile.mkdtemp(prefix="aos-rs-"))
    server = EmbeddedPostgres(base / "pg", base / "pg.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def daemon_env(home: Path, db_url: str) -> dict[str, str]:
    """Environment for an ``aos`` subprocess using this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env.update({"AOS_HOME": str(home), "AOS_DB_URL": db_url})
    return env


def run_aos(
    *args: str, env: dict[str, str], timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``aos`` CLI as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "aos", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


@pytest.fixture
def aos(daemon_env: dict[str, str]) -> Iterator[Any]:
    """``aos(*args)`` runs the CLI against this test's home; the daemon is stopped afterwards."""

    def call(*args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_aos(*args, env=daemon_env, timeout=timeout, input=input)

    yield call
    run_aos("stop", env=daemon_env)
