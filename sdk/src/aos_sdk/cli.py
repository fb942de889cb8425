"""For a skill's ``bin/`` scripts: call the skill's service through the agent gateway.

A whole skill CLI can be one line::

    #!/usr/bin/env python3
    from aos_sdk.cli import main; main("notes")

``notes add buy milk`` then invokes the service command ``add`` with ``{"argv": ["buy", "milk"]}``
and prints the result: text as is, anything else as readable JSON (``--json``: compact JSON).
Exit codes: 0 ok, 1 the service or gateway refused (the reason on stderr), 2 usage, 3 not inside
a dispatch (no gateway or token).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .errors import AosError, Unavailable
from .syncclient import SyncClient

__all__ = ["invoke", "main", "run"]


def invoke(skill: str, command: str, args: dict[str, Any] | None = None) -> Any:
    """Invoke ``command`` of ``skill`` through ``$AOS_GATEWAY`` with ``$AOS_TOKEN``.

    Raises:
        Unavailable: not inside a dispatch.
        AosError: the gateway or the service refused.
    """
    path, token = os.environ.get("AOS_GATEWAY"), os.environ.get("AOS_TOKEN")
    if not path or not token:
        raise Unavailable("AOS_GATEWAY and AOS_TOKEN are not set: skill commands run inside an AOS dispatch")
    with SyncClient(path, headers={"X-AOS-Token": token}, timeout=130) as c:
        return c.call("command.invoke", {"skill": skill, "command": command, "args": args or {}})


def main(skill: str, argv: list[str] | None = None) -> None:
    """Run a skill CLI: ``<command> [words...] [--json]``; exits with the codes above."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: {skill} <command> [arguments...] [--json]", file=sys.stderr)
        raise SystemExit(2)
    run(skill, args[0], {"argv": args[1:]}, as_json=as_json)


def run(
    skill: str, command: str, args: dict[str, Any], *, as_json: bool = False, name: str | None = None
) -> None:
    """Invoke ``command`` and print its result (for CLIs that parse their own arguments, e.g.
    with argparse); exits 1 with the reason on stderr if refused, 3 outside a dispatch."""
    name = name or skill
    try:
        result = invoke(skill, command, args)
    except Unavailable as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        raise SystemExit(3) from None
    except AosError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    elif isinstance(result, str):
        print(result, end="" if result.endswith("\n") else "\n")
    elif result is not None:
        print(json.dumps(result, indent=2, ensure_ascii=False))
