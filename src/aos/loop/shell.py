"""Where an agent's commands run: its environment, its sandbox, the spawn.

:class:`Shell` is the loop's environment. It knows the workspace, the agent's own ``HOME`` and
``/tmp`` (under ``$AOS_HOME/agents/<name>/``), the skills whose CLIs go on ``PATH``, the sandbox
settings and the gateway socket; it builds each command's environment and argv and runs it
(:func:`aos.loop.bash.run_bash`). Policy (which command, whether it may run) stays in the loop's
hooks.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bash import RunResult, base_env, run_bash
from .sandbox import GATEWAY_PATH, TOOLS_PATH, SandboxSettings, cached_prefix, command_argv, skill_mounts

__all__ = ["Shell", "write_tools"]

#: The one program AOS puts on an agent's PATH besides its skills' CLIs.
PYTHON_SHIM = "aos-python"


def write_tools(folder: Path) -> Path:
    """Write ``folder/aos-python``: a two-line script that runs the daemon's own Python (the one
    with ``aos_sdk``). Skill CLIs start with ``#!/usr/bin/env aos-python``; an agent's
    ``python3`` stays the system's, not AOS's. Rewritten at every start (the interpreter may
    have moved)."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / PYTHON_SHIM
    tmp = shim.with_suffix(".tmp")
    tmp.write_text(
        f'#!/bin/sh\n# Written by the AOS daemon: the Python that skill CLIs run with.\nexec {sys.executable} "$@"\n'
    )
    tmp.chmod(0o755)
    os.replace(tmp, shim)
    return shim


@dataclass
class Shell:
    workspace: Path
    #: ``$AOS_HOME/agents/<name>``: the agent's ``home`` and ``tmp`` in the sandbox.
    agent_dir: Path
    #: The enabled skills (``path`` of each ``SKILL.md``): their ``bin/`` goes on ``PATH``.
    skills: list[dict[str, str]]
    #: The agent gateway's socket on the host.
    gateway: Path
    #: Where unsandboxed commands' process groups are recorded (see :func:`run_bash`).
    track_dir: Path | None
    #: ``$AOS_HOME/bin`` (``aos-python``, see :func:`write_tools`).
    tools: Path
    #: The sandbox commands run in, and bubblewrap's path; either None: unsandboxed.
    sandbox: SandboxSettings | None = None
    bwrap: str | None = None
    _bins: list[str] | None = field(default=None, repr=False)
    _prefix: list[str] | None = field(default=None, repr=False)

    @property
    def sandboxed(self) -> bool:
        return self.sandbox is not None and self.bwrap is not None

    def env(self, extra: dict[str, Any] | None, identity: dict[str, str]) -> dict[str, str]:
        """The clean base, ``extra`` (from ``tool.env``), then ``identity`` (``AOS_*``, which wins)."""
        env = base_env()
        if extra:
            env.update({str(k): str(v) for k, v in extra.items()})
        if self._bins is None:  # a few stat calls, once per dispatch
            bins = [str(Path(s["path"]).parent / "bin") for s in self.skills]
            self._bins = [b for b in bins if Path(b).is_dir()]
        # Skill CLIs first, then aos-python (what they run with); the agent's python3 is the
        # system's, never the daemon's own.
        tools = TOOLS_PATH if self.sandbox is not None else str(self.tools)
        env["PATH"] = os.pathsep.join([*self._bins, tools, env["PATH"]])
        if self.sandbox is not None:
            env["HOME"] = str(self.agent_dir / "home")
        env.update(identity)
        env["AOS_GATEWAY"] = GATEWAY_PATH if self.sandbox is not None else str(self.gateway)
        return env

    def argv(self, command: str, cwd: str) -> list[str] | None:
        """How to run ``command`` in the agent's sandbox (None: run it as it is). Creates ``cwd``."""
        Path(cwd).mkdir(parents=True, exist_ok=True)
        if self.sandbox is None or self.bwrap is None:
            return None
        if self._prefix is None:  # the same for every command of the dispatch: built once
            home, tmp = self.agent_dir / "home", self.agent_dir / "tmp"
            for d in (home, tmp):
                d.mkdir(parents=True, exist_ok=True)
            self._prefix = cached_prefix(
                bwrap=self.bwrap,
                settings=self.sandbox,
                workspace=self.workspace,
                home=home,
                tmp=tmp,
                gateway=self.gateway,
                skill_paths=skill_mounts([Path(s["path"]) for s in self.skills]),
                tools=self.tools,
            )
        return command_argv(self._prefix, command, Path(cwd))

    async def run(
        self,
        command: str,
        cwd: str,
        env: dict[str, str],
        argv: list[str] | None,
        *,
        timeout: float,
        cap: int,
        keep: int,
        stop: asyncio.Event | None,
        on_output: Callable[[bytes], None] | None = None,
    ) -> RunResult:
        """Run ``command`` (with ``argv`` from :meth:`argv`, or unsandboxed)."""
        return await run_bash(
            command,
            cwd=cwd,
            env=env,
            timeout=timeout,
            cap=cap,
            track_dir=self.track_dir,
            argv=argv,
            stop=stop,
            keep=keep,
            on_output=on_output,
        )
