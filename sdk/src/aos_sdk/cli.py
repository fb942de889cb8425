"""For a skill's ``bin/`` scripts: call the skill's service through the agent gateway.

A whole skill CLI can be one line::

    #!/usr/bin/env aos-python
    from aos_sdk.cli import main; main("notes")

``notes add buy milk`` then invokes the service command ``add`` with ``{"argv": ["buy", "milk"]}``
and prints the result: text as is, anything else as readable JSON (``--json``: compact JSON).
Exit codes: 0 ok, 1 the service or gateway refused (the reason on stderr), 2 usage, 3 not inside
a dispatch (no gateway or token).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .errors import AosError, Unavailable
from .syncclient import SyncClient

__all__ = ["command_parser", "invoke", "main", "parse_and_run", "run"]


def invoke(skill: str, command: str, args: dict[str, Any] | None = None) -> Any:
    """Invoke ``command`` of ``skill`` through ``$AOS_GATEWAY`` with ``$AOS_TOKEN`` (an agent), or,
    outside a dispatch, through ``$AOS_ADMIN_SOCKET`` (a person: the ``skill.command`` syscall).

    Raises:
        Unavailable: not inside a dispatch.
        AosError: the gateway or the service refused.
    """
    path, token = os.environ.get("AOS_GATEWAY"), os.environ.get("AOS_TOKEN")
    admin = os.environ.get("AOS_ADMIN_SOCKET")
    if (not path or not token) and admin:
        # A person (``aos schedule ...`` sets this): the kernel's own socket, which agents'
        # sandboxes never see; the command is told its caller is a person.
        with SyncClient(admin, timeout=130) as c:
            got = c.call("skill.command", {"skill": skill, "command": command, "args": args or {}})
            return got["result"]
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


def command_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, Callable[..., Any]]:
    """An argparse parser with subcommands, ``--json`` accepted before or after the command.

    Returns ``(parser, add)``; ``add(name, help=...)`` adds a subcommand's parser
    (``intermixed=True``: its positionals may come before and after its options, as in
    ``add bob --every 5m "the message"``).
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser = argparse.ArgumentParser(prog=prog, description=description, parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    subs: dict[str, argparse.ArgumentParser] = {}
    parser.set_defaults(_aos_subs=subs)

    def add(name: str, *, intermixed: bool = False, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], prog=f"{prog} {name}", **kwargs)
        if intermixed:
            subs[name] = sub
        return sub

    return parser, add


def parse_and_run(skill: str, parser: argparse.ArgumentParser, name: str | None = None) -> None:
    """Parse ``sys.argv`` with a :func:`command_parser` parser and invoke the command it names
    with the other arguments (those left unset are not sent; ``--json`` is sent as ``as_json``,
    so the service may answer with data rather than text)."""
    argv = sys.argv[1:]
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    subs = parser.get_default("_aos_subs") or {}
    if at is not None and argv[at] in subs:
        # argparse's subcommands cannot mix positionals and options: parse this one on its own.
        args = vars(subs[argv[at]].parse_intermixed_args(argv[:at] + argv[at + 1 :]))
        args["command"] = argv[at]
    else:
        args = vars(parser.parse_args(argv))
    args.pop("_aos_subs", None)
    command, as_json = args.pop("command"), bool(args.pop("json", False))
    sent = {k: v for k, v in args.items() if v is not None}
    if as_json:
        sent["as_json"] = True
    run(skill, command, sent, as_json=as_json, name=name or parser.prog)


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
