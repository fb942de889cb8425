"""``python -m aos_sdk.runner <service.py>``: load a service file and serve the kernel.

The file is executed (not as ``__main__``), the service it declared with ``define_service`` is
loaded, and it serves until the kernel closes its socket. A file that declares none is an error
the supervisor shows in ``aos skills``.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from .service import registry


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aos_sdk.runner <service.py>", file=sys.stderr)
        return 2
    path = Path(argv[0]).resolve()
    sys.path.insert(0, str(path.parent))
    runpy.run_path(str(path), run_name="__aos_service__")
    services = registry()
    if not services:
        print(f"{path} declares no service: decorate a function with @define_service", file=sys.stderr)
        return 2
    services[-1].load()
    services[-1].run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
