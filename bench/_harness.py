"""What the benchmarks share: a private embedded PostgreSQL and a kernel on it, and percentiles."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aos.config import Config, Paths, load_config
from aos.db.embedded import EmbeddedPostgres
from aos.db.store import Store
from aos.kernel.kernel import DatabaseSettings, Kernel


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
