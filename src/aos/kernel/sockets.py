"""Private Unix-socket servers (the kernel's, the gateway's, each service's)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, unix_serve

__all__ = ["serve_private"]


async def serve_private(handler: Any, path: Path, **kwargs: Any) -> Server:
    """A WebSocket server on a Unix socket only our user can open (mode 0600; a stale socket file
    is replaced). Compression is always off.

    The socket's folder is made 0700 first, so nobody else can reach the socket in the moment
    before its own mode is set. The process umask is never touched: it is process-wide, and
    changing it around an ``await`` would leak into every other task (files agents create).
    """
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = await unix_serve(handler, str(path), compression=None, **kwargs)
    os.chmod(path, 0o600)
    return server
