"""``aos schedule``, ``aos alerts``, ``aos models``: a skill's own CLI, run by a person.

An agent runs ``schedule ...`` in its sandbox and reaches the skill's service through its
dispatch's gateway. A person runs the same program through ``aos``: it is started with
``$AOS_ADMIN_SOCKET`` (the kernel's socket, which only the daemon's user can open), so its calls
go through the ``skill.command`` syscall and the service sees a person as the caller. One
program, one parser, for both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from aos_sdk.errors import NotFound

from ..config import Paths

#: ``aos <word>`` -> (skill, the program in its bin/, words put before the person's).
SKILL_CLIS: dict[str, tuple[str, str, list[str], str]] = {
    "schedule": (
        "aos-schedule",
        "schedule",
        [],
        "agents' schedules: add, list, show, pause, resume, remove, run-now",
    ),
    "alerts": ("aos-schedule", "schedule", ["alerts"], "warnings and alerts from schedule runs"),
    "models": ("aos-router", "router", ["status"], "each model's health: healthy or resting, and why"),
}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for word, (skill, _, _, what) in SKILL_CLIS.items():
        x = sub.add_parser(
            word,
            help=f"{what} (skill {skill})",
            description=f"{what}. Runs the skill {skill}'s own CLI for a person; "
            f"`aos {word} --help` shows its commands.",
            add_help=False,
        )
        x.add_argument("rest", nargs=argparse.REMAINDER)
        x.set_defaults(func=cmd_skill_cli, skill_cli=word)


def cmd_skill_cli(args: argparse.Namespace, paths: Paths) -> int:
    skill, program, before, _ = SKILL_CLIS[args.skill_cli]
    # Found in the skill roots, not asked of the daemon: `--help` works while it is down.
    from ..config import load_config
    from ..skills.index import skill_roots

    found = [r / skill / "bin" / program for r in skill_roots(load_config(paths), paths)]
    exe = next((p for p in found if p.is_file()), None)
    if exe is None:
        raise NotFound(
            f"the skill {skill!r} is not installed: no {skill}/bin/{program} in the skill roots", skill=skill
        )
    env = {**os.environ, "AOS_ADMIN_SOCKET": str(paths.kernel_sock)}
    env.pop("AOS_TOKEN", None)  # a person's terminal inside a dispatch's is still a person's
    env.pop("AOS_GATEWAY", None)
    # The daemon's own Python runs it (it has aos_sdk), as aos-python does for agents.
    return subprocess.run([sys.executable, str(exe), *before, *args.rest], env=env, check=False).returncode
