"""aos_sdk: the bottom layer of AOS, for skill authors and clients.

Importing this package is cheap and pulls in neither the kernel (``aos``), psycopg nor litellm;
submodules are loaded on first use.

- :mod:`aos_sdk.errors` - the error tree with stable JSON-RPC codes
- :mod:`aos_sdk.protocol` - the sans-I/O JSON-RPC endpoint
- :mod:`aos_sdk.syncclient` - a fast blocking client for command-line tools
- :mod:`aos_sdk.connection` - the asyncio JSON-RPC connection (both directions)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AosError",
    "RpcConnection",
    "SyncClient",
    "aos_home",
    "define_service",
    "kernel_socket",
    "open_connection",
]

_LAZY = {
    "AosError": "aos_sdk.errors",
    "SyncClient": "aos_sdk.syncclient",
    "RpcConnection": "aos_sdk.connection",
    "open_connection": "aos_sdk.connection",
    "define_service": "aos_sdk.service",
}

if TYPE_CHECKING:
    from .connection import RpcConnection, open_connection
    from .errors import AosError
    from .service import define_service
    from .syncclient import SyncClient


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aos_sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def aos_home() -> Path:
    """``$AOS_HOME``, or ``~/.aos`` when unset."""
    return Path(os.environ.get("AOS_HOME") or Path.home() / ".aos").expanduser()


def kernel_socket() -> Path:
    """The administrator socket: ``$AOS_HOME/run/kernel.sock``."""
    return aos_home() / "run" / "kernel.sock"
