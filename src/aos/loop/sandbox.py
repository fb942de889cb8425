"""The agent's sandbox: every command runs under bubblewrap (``bwrap``).

What a command sees (see ``docs/sandbox.md``):

- the system read-only (``/usr``, ``/etc``, ``/opt``, the ``/bin``-style links), with
  ``/etc/shadow`` and ``/etc/gshadow`` blanked;
- its agent's workspace read-write, and a private ``HOME`` and ``/tmp`` kept per agent under
  ``$AOS_HOME/agents/<name>/``;
- read-only: the Python that runs skill CLIs (``sys.prefix``, ``sys.base_prefix``, the SDK), and
  of each enabled skill only ``SKILL.md`` and its ``bin/``, ``scripts/``, ``references/`` and
  ``assets/`` folders (never its service code);
- the agent gateway socket at :data:`GATEWAY_PATH` and ``aos-python`` in :data:`TOOLS_PATH`, and
  nothing else of ``$AOS_HOME``;
- its own PID, IPC and UTS namespaces and ``/proc`` (the daemon, services and PostgreSQL do not
  exist there), a new session (no terminal to inject into), no capabilities;
- the network unless the agent's settings turn it off.

The command's ``bash`` is PID 1 of the sandbox (``--as-pid-1``): when it exits, the kernel kills
everything else in the namespace (``setsid``, ``nohup`` and double-forked children included), so
nothing outlives a command and a background job holding stdout open cannot delay its end.
``--die-with-parent`` does the same if the daemon dies. Resource limits are set with ``ulimit``
inside the sandbox before the command starts (no ``preexec_fn``: that would make CPython fork the
whole daemon instead of using vfork).

This module is pure set-up: it decides, probes and builds argv; :mod:`aos.loop.bash` runs it.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "GATEWAY_PATH",
    "MODES",
    "TOOLS_PATH",
    "Limits",
    "Probe",
    "SandboxError",
    "SandboxSettings",
    "build_argv",
    "check_workspace",
    "probe",
    "resolve_settings",
    "skill_mounts",
]

MODES = ("auto", "required", "off")
#: Where the agent gateway socket appears inside the sandbox.
GATEWAY_PATH = "/run/aos/agent.sock"
#: Where ``$AOS_HOME/bin`` (``aos-python``, what skill CLIs run with) appears inside the sandbox.
TOOLS_PATH = "/run/aos/bin"
_SYSTEM_DIRS = ("/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_BLANKED = ("/etc/shadow", "/etc/gshadow")
#: What of a skill folder an agent may read (the Agent Skills layout), never its service.
_SKILL_PARTS = ("SKILL.md", "bin", "scripts", "references", "assets")
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
)


class SandboxError(ValueError):
    """The sandbox settings are invalid, or a command cannot be sandboxed as asked."""


@dataclass(frozen=True)
class Limits:
    """Per-command resource limits (``ulimit`` inside the sandbox); 0 leaves one unlimited."""

    #: RLIMIT_NPROC: processes of the user (within the sandbox's user namespace where the kernel
    #: counts per namespace). Linux does not apply it to root.
    processes: int = 4096
    #: RLIMIT_FSIZE: the largest file a command may write, in MiB.
    file_size_mb: int = 2048
    #: RLIMIT_CPU: CPU seconds per process.
    cpu_s: int = 600
    #: RLIMIT_AS: address space per process, in MiB. Off by default: runtimes such as V8, the JVM
    #: and Go reserve far more address space than they use.
    memory_mb: int = 0
    #: RLIMIT_NOFILE: open files per process.
    open_files: int = 4096


@dataclass(frozen=True)
class SandboxSettings:
    """The sandbox for one agent: ``aoscb.json`` ``sandbox`` overlaid with the agent's settings."""

    mode: str = "auto"
    network: bool = True
    limits: Limits = field(default_factory=Limits)


def _layer(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = {"mode": raw}
    if not isinstance(raw, dict):
        raise SandboxError(f"{where}: sandbox must be a mode ({', '.join(MODES)}) or an object")
    known = {"mode", "network", "limits"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SandboxError(
            f"{where}: unknown sandbox key(s) {', '.join(unknown)} (known: mode, network, limits)"
        )
    return raw


def resolve_settings(system: Any, agent: Any = None) -> SandboxSettings:
    """Merge ``aoscb.json``'s ``sandbox`` with an agent's ``settings.sandbox`` (the agent wins).

    Raises:
        SandboxError: an unknown mode, key or limit, or a value of the wrong type.
    """
    merged: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for raw, where in ((system, "aoscb.json"), (agent, "agent settings")):
        layer = _layer(raw, where)
        for key, value in layer.items():
            if key == "limits":
                if not isinstance(value, dict):
                    raise SandboxError(f"{where}: sandbox.limits must be an object")
                limits.update({str(k): (v, where) for k, v in value.items()})
            else:
                merged[key] = (value, where)
    mode, where = merged.get("mode", ("auto", "defaults"))
    if mode not in MODES:
        raise SandboxError(f"{where}: sandbox mode must be one of {', '.join(MODES)}, got {mode!r}")
    network, where = merged.get("network", (True, "defaults"))
    if not isinstance(network, bool):
        raise SandboxError(f"{where}: sandbox.network must be true or false, got {network!r}")
    fields = Limits.__dataclass_fields__
    values: dict[str, int] = {}
    for name, (value, where) in limits.items():
        if name not in fields:
            raise SandboxError(
                f"{where}: unknown sandbox limit {name!r} (known: {', '.join(sorted(fields))})"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SandboxError(f"{where}: sandbox.limits.{name} must be an integer >= 0, got {value!r}")
        values[name] = value
    return SandboxSettings(mode=str(mode), network=network, limits=Limits(**values))


@dataclass(frozen=True)
class Probe:
    """Whether bubblewrap works on this machine, as this user."""

    available: bool
    reason: str
    bwrap: str | None = None
    version: str | None = None


def probe(timeout: float = 10.0) -> Probe:
    """Run a minimal sandbox once (``true`` with the namespaces every command uses)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Probe(False, f"bwrap was not found on PATH: {INSTALL_HINT}")
    try:
        version = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=timeout, check=False
        ).stdout.strip()
        res = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", *_NAMESPACES, "--proc", "/proc", "--dev", "/dev", "true"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, f"bwrap could not be run: {exc}", bwrap)
    if res.returncode != 0:
        why = res.stderr.strip() or f"exit code {res.returncode}"
        hint = ""
        if "namespace" in why.lower() or "permission" in why.lower():
            hint = (
                " (unprivileged user namespaces may be disabled: sysctl kernel.unprivileged_userns_clone,"
                " or an AppArmor profile for bwrap on Ubuntu 24.04+)"
            )
        return Probe(False, f"bwrap failed: {why}{hint}", bwrap, version or None)
    return Probe(True, "bubblewrap works", bwrap, version or None)


_NAMESPACES = (
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--new-session",
    "--die-with-parent",
    "--as-pid-1",
)


#: Where a command's own options go in a prefix (no real argument can hold a NUL byte).
_COMMAND_SLOT = "\0command\0"


def _is_under(path: Path, parent: Path) -> bool:
    """``path`` is ``parent`` or inside it (both absolute and normalised: compared as text,
    which is what ``Path.parents`` would say, at a fraction of its cost on the spawn path)."""
    p, q = str(path), str(parent)
    return p == q or p.startswith(q if q.endswith("/") else q + "/")


def check_workspace(workspace: Path, *, protected: list[Path], workspaces_root: Path) -> None:
    """Refuse a workspace that would put something of AOS within the agent's reach.

    A workspace may not contain, nor lie inside, a protected path (``$AOS_HOME``, skill roots, the
    AOS code and its Python environment); only ``$AOS_HOME/workspaces`` is open for workspaces.

    Raises:
        SandboxError: saying which protected path is at stake.
    """
    ws = workspace.resolve()
    root = workspaces_root.resolve()
    if ws == Path("/") or str(ws) in _SYSTEM_DIRS:
        raise SandboxError(f"the workspace {ws} is a system folder; give the agent a folder of its own")
    for p in protected:
        p = p.resolve()
        if _is_under(p, ws):
            raise SandboxError(
                f"the workspace {ws} contains {p}, which agents must not reach; give the agent a "
                "folder that holds no AOS files"
            )
        if _is_under(ws, p) and not _is_under(ws, root) and ws != root:
            raise SandboxError(
                f"the workspace {ws} lies inside {p}, which agents must not reach; use a folder "
                f"under {root} or outside AOS"
            )


def skill_mounts(skill_md_paths: list[Path]) -> list[Path]:
    """The parts of each enabled skill an agent may read (see module docstring)."""
    out = []
    for md in skill_md_paths:
        for part in _SKILL_PARTS:
            p = md.parent / part
            if p.exists():
                out.append(p)
    return out


@functools.cache
def _runtime_paths() -> tuple[Path, ...]:
    """What skill CLIs need to run: the interpreter, its environment, the SDK (fixed for the
    daemon's life: looked up once)."""
    paths = [Path(sys.prefix), Path(sys.base_prefix)]
    try:
        import aos_sdk

        sdk_root = Path(aos_sdk.__file__).resolve().parent.parent
        paths.append(sdk_root)
    except ImportError:  # pragma: no cover - the SDK is a dependency
        pass
    exe = Path(sys.executable)
    if exe.is_symlink():
        paths.append(exe.resolve().parent.parent)
    return tuple(paths)


def _ulimit_prelude(limits: Limits) -> str:
    """``ulimit`` settings (soft and hard), never above the daemon's own hard limits."""
    spec = (
        ("-u", resource.RLIMIT_NPROC, limits.processes, 1),
        ("-f", resource.RLIMIT_FSIZE, limits.file_size_mb, 1024),  # bash counts 1 KiB blocks
        ("-t", resource.RLIMIT_CPU, limits.cpu_s, 1),
        ("-v", resource.RLIMIT_AS, limits.memory_mb, 1024),  # KiB
        ("-n", resource.RLIMIT_NOFILE, limits.open_files, 1),
    )
    parts = []
    for flag, res_id, value, scale in spec:
        if not value:
            continue
        amount = value * scale
        hard = resource.getrlimit(res_id)[1]
        if hard != resource.RLIM_INFINITY:
            # RLIMIT_FSIZE and RLIMIT_AS are bytes to the kernel; bash's units are KiB.
            unit = 1024 if res_id in (resource.RLIMIT_FSIZE, resource.RLIMIT_AS) else 1
            amount = min(amount, hard // unit)
        parts.append(f"ulimit -SH {flag} {amount}")
    return " && ".join(parts)


def build_argv(
    command: str,
    *,
    bwrap: str,
    settings: SandboxSettings,
    workspace: Path,
    cwd: Path,
    home: Path,
    tmp: Path,
    gateway: Path | None,
    skill_paths: list[Path],
) -> list[str]:
    """The full argv that runs ``command`` with ``bash -c`` inside the sandbox."""
    prefix = sandbox_prefix(
        bwrap=bwrap,
        settings=settings,
        workspace=workspace,
        home=home,
        tmp=tmp,
        gateway=gateway,
        skill_paths=skill_paths,
    )
    return command_argv(prefix, command, cwd)


#: How long a built prefix is reused: it reads the host's filesystem (which system folders
#: exist, where /etc/resolv.conf points), so a change there shows within this many seconds.
PREFIX_REUSE_S = 60.0


def cached_prefix(
    *,
    bwrap: str,
    settings: SandboxSettings,
    workspace: Path,
    home: Path,
    tmp: Path,
    gateway: Path | None,
    skill_paths: list[Path],
    tools: Path | None = None,
) -> list[str]:
    """:func:`sandbox_prefix`, reused across dispatches with the same inputs (an agent's every
    dispatch asks for the same one) for up to :data:`PREFIX_REUSE_S` seconds."""
    window = int(time.monotonic() // PREFIX_REUSE_S)
    return list(
        _prefix_for(bwrap, settings, workspace, home, tmp, gateway, tuple(skill_paths), tools, window)
    )


@functools.lru_cache(maxsize=256)
def _prefix_for(
    bwrap: str,
    settings: SandboxSettings,
    workspace: Path,
    home: Path,
    tmp: Path,
    gateway: Path | None,
    skill_paths: tuple[Path, ...],
    tools: Path | None,
    window: int,
) -> tuple[str, ...]:
    return tuple(
        sandbox_prefix(
            bwrap=bwrap,
            settings=settings,
            workspace=workspace,
            home=home,
            tmp=tmp,
            gateway=gateway,
            skill_paths=list(skill_paths),
            tools=tools,
        )
    )


def sandbox_prefix(
    *,
    bwrap: str,
    settings: SandboxSettings,
    workspace: Path,
    home: Path,
    tmp: Path,
    gateway: Path | None,
    skill_paths: list[Path],
    tools: Path | None = None,
) -> list[str]:
    """Everything of the argv that does not depend on the command (the same for all of a
    dispatch's commands: built once, see :class:`aos.loop.shell.Shell`)."""
    args = [bwrap, "--tmpfs", "/"]
    for d in _SYSTEM_DIRS:
        p = Path(d)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), d]
        elif p.is_dir():
            args += ["--ro-bind", d, d]
    for f in _BLANKED:
        if Path(f).exists():
            args += ["--ro-bind", "/dev/null", f]
    # /etc/resolv.conf may point into /run (systemd-resolved): bring its target along.
    resolv = Path("/etc/resolv.conf")
    if resolv.is_symlink():
        target = resolv.resolve()
        if target.exists() and not _is_under(target, Path("/etc")):
            args += ["--ro-bind", str(target), str(target)]
    args += ["--proc", "/proc", "--dev", "/dev", *_NAMESPACES]
    if not settings.network:
        args.append("--unshare-net")
    ro: list[Path] = []
    for p in [*_runtime_paths(), *skill_paths]:
        if any(_is_under(p, Path(d)) for d in _SYSTEM_DIRS) or any(_is_under(p, q) for q in ro):
            continue
        ro.append(p)
    # Parents before children (by where they appear), so a deeper mount lands on top.
    mounts = [(p, p, "--ro-bind") for p in ro]
    mounts += [(workspace, workspace, "--bind"), (home, home, "--bind"), (tmp, Path("/tmp"), "--bind")]
    mounts.sort(key=lambda m: len(m[1].parts))
    for source, target, how in mounts:
        args += [how, str(source), str(target)]
    if gateway is not None:
        args += ["--ro-bind", str(gateway), GATEWAY_PATH]
    if tools is not None:
        args += ["--ro-bind", str(tools), TOOLS_PATH]
    # The skeleton the mounts hang on is read-only too: nothing can be written outside them.
    args += ["--remount-ro", "/", "--setenv", "HOME", str(home)]
    prelude = _ulimit_prelude(settings.limits)
    run = 'exec -a bash /bin/bash -c "$1"'
    script = f"{prelude} && {run}" if prelude else run
    # The command's own part (--chdir, its text) goes between these two halves.
    return [*args, _COMMAND_SLOT, "--", "/bin/bash", "--noprofile", "--norc", "-c", script, "aos-sandbox"]


def command_argv(prefix: list[str], command: str, cwd: Path) -> list[str]:
    """The argv for ``command`` in ``cwd``, from a :func:`sandbox_prefix`."""
    cut = prefix.index(_COMMAND_SLOT)
    return [*prefix[:cut], "--chdir", str(cwd), *prefix[cut + 1 :], command]
