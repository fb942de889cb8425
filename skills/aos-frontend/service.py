"""aos-frontend: the web UI, served by this skill's service on 127.0.0.1.

On start it reads ``ui.port`` from ``aoscb.json`` (0: any free port), binds 127.0.0.1 only,
and serves the Starlette app of :mod:`web` with uvicorn in the service's own event loop. The
sign-in link (a one-time token) is kept in ``$AOS_HOME/run/ui.json`` (private to the daemon's
user; never mounted into an agent's sandbox), where ``aos ui`` reads it; the secret that signs
the session cookies in ``$AOS_HOME/ui.secret``. A port that is taken is
reported there, in this skill's log and (through ``service.report``) by ``aos skills``; the
service keeps running without a UI.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Any

from web import UI, Auth, Hub, load_secret, write_link  # this skill's module (its folder is on sys.path)

from aos_sdk import define_service

DEFAULT_PORT = 8765


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


#: Kernel events the UI passes on to open pages (rare ones: not every step's).
EVENTS = {
    "approval.requested": "approval",
    "approval.resolved": "approval",
    "dispatch.after": "dispatch",
    # Rare, and what the Skills page shows: a folder dropped in or removed, a service's state.
    **{f"skill.{e}": "skill" for e in ("loaded", "removed", "started", "stopped", "crashed")},
}
FIELDS = ("agent_id", "session_id", "dispatch_id", "approval_id", "decision", "status", "skill")


@define_service
def service() -> dict[str, Any]:
    hub = Hub()

    def forward(event: str) -> Any:
        def handler(input_data: dict[str, Any], output_data: Any) -> None:
            hub.publish(event, {k: input_data[k] for k in FIELDS if k in input_data})

        return handler

    async def start() -> None:
        import uvicorn

        assert service.kernel is not None
        config = (await service.kernel.call("system.config", {}))["config"]
        port = int((config.get("ui") or {}).get("port", DEFAULT_PORT))
        home = Path(os.environ["AOS_HOME"])
        link_file = home / "run" / "ui.json"
        try:
            sock = _bind(port)
        except OSError as exc:
            why = (
                "is taken by another program"
                if exc.errno == errno.EADDRINUSE
                else f"cannot be used ({exc.strerror})"
            )
            message = f"the web UI is off: port {port} on 127.0.0.1 {why}; set ui.port in aoscb.json"
            print(message, file=sys.stderr, flush=True)
            write_link(link_file, port, error=message)("")
            await service.report(message)  # aos skills shows it beside the service's state
            return
        port = sock.getsockname()[1]
        auth = Auth(load_secret(home / "ui.secret"), write_link(link_file, port))
        ui = UI(service.kernel.call, os.environ["AOS_SOCKET"], port, auth, hub)
        server = uvicorn.Server(
            uvicorn.Config(
                ui.app(), log_level="warning", access_log=False, lifespan="off", proxy_headers=False
            )
        )
        print(
            f"web UI on http://127.0.0.1:{port}/ (aos ui prints the sign-in link)",
            file=sys.stderr,
            flush=True,
        )
        try:
            await server.serve(sockets=[sock])
        finally:
            link_file.unlink(missing_ok=True)

    return {"start": start, "hooks": {name: forward(event) for name, event in EVENTS.items()}}
