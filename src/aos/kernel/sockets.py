"""Private Unix-socket servers (the kernel's, the gateway's, each service's)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, unix_serve

__all__ = ["serve_private"]


async def serve_private(handler: Any, path: Path, **kwargs: Any) -> Server:
    """A WebSocket server on a Unix socket only our user can open (mode 0600, made so from the
    start by the umask; a stale socket file is replaced). Compression is always off."""
    os.makedirs(path.parent, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    old = os.umask(0o177)
    try:
        server = await unix_serve(handler, str(path), compression=None, **kwargs)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server
