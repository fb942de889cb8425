"""Configuration: ``$AOS_HOME`` layout, ``aoscb.json`` (the system control block), environment.

``aoscb.json`` at the checkout root holds the defaults; ``$AOS_HOME/aoscb.json`` overrides any
of its keys (objects are merged key by key). Agent and session settings override both, later.
This module is imported by the CLI, so it must stay light: no pydantic, psycopg or litellm.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHECKOUT", "Config", "ConfigError", "Paths", "load_config", "load_dotenv"]

#: The source checkout (where the default ``aoscb.json``, ``skills/`` and ``.env`` live).
CHECKOUT = Path(__file__).resolve().parents[2]

DEFAULTS: dict[str, Any] = {
    "schema_version": 1,
    "model": "openrouter/openai/gpt-4o-mini",
    "model_params": {},
    # auto: OpenAI-compatible endpoints with an api_base are called directly; litellm: always litellm.
    "model_client": "auto",
    "skills": {"roots": ["skills", "$AOS_HOME/skills"], "disabled": [], "watch": True},
    "context": {"fold_bytes": 16384, "compact_at": 0.8, "keep_share": 0.3, "window": None},
    "a2a": {"max_hops": 4, "wait_s": 110},
    "limits": {
        "max_steps": 50,
        "bash_timeout_s": 120,
        "output_cap_bytes": 65536,
        "lease_ttl_s": 30,
        "recovery_scan_s": 1,
        "max_frame_bytes": 16 * 1024 * 1024,
        "max_in_flight": 64,
        "keepalive_s": 20,
        "drain_timeout_s": 10,
        "max_format_errors": 3,
        "model_retries": 3,
        "model_backoff_ms": 500,
        "service_wait_s": 30,
        "content_cap_bytes": 8 * 1024 * 1024,
    },
    "ui": {"port": 8765},
    # Among kernels sharing one database (docs/deployment.md): this kernel's stable name (default
    # host:home), and whether its workspaces folder is storage every kernel mounts at one path
    # (then its agents may run on any kernel; else on the kernel that holds their files).
    "kernel": {"name": None, "shared_workspaces": False},
    # Agent commands run under bubblewrap: auto (when it works), required, or off. See docs/sandbox.md.
    "sandbox": {
        "mode": "auto",
        "network": True,
        "limits": {"processes": 4096, "file_size_mb": 2048, "cpu_s": 600, "memory_mb": 0, "open_files": 4096},
    },
}


class ConfigError(ValueError):
    """``aoscb.json`` could not be read or has a value of the wrong type."""


@dataclass(frozen=True)
class Paths:
    """Where AOS keeps its files under ``$AOS_HOME``."""

    home: Path

    @classmethod
    def from_env(cls) -> Paths:
        """``$AOS_HOME``, or ``~/.aos``."""
        return cls(Path(os.environ.get("AOS_HOME") or "~/.aos").expanduser().absolute())

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def kernel_sock(self) -> Path:
        return self.run / "kernel.sock"

    @property
    def agent_sock(self) -> Path:
        return self.run / "agent.sock"

    @property
    def services(self) -> Path:
        return self.run / "services"

    @property
    def pidfile(self) -> Path:
        return self.run / "aos.pid"

    @property
    def pg(self) -> Path:
        return self.home / "pg"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "aos.log"

    @property
    def pg_log(self) -> Path:
        return self.logs / "postgres.log"

    @property
    def workspaces(self) -> Path:
        return self.home / "workspaces"

    @property
    def skills(self) -> Path:
        return self.home / "skills"

    @property
    def tools(self) -> Path:
        """``$AOS_HOME/bin``: ``aos-python``, the interpreter skill CLIs run with (on agents'
        ``PATH``, mounted read-only in their sandbox)."""
        return self.home / "bin"

    def agent_dir(self, name: str) -> Path:
        """An agent's private ``home`` and ``tmp`` (what its sandbox shows as ``HOME`` and ``/tmp``)."""
        return self.home / "agents" / name

    @property
    def pg_password(self) -> Path:
        """The embedded PostgreSQL's password (0600), made at initdb."""
        return self.home / "pg.password"

    @property
    def user_config(self) -> Path:
        return self.home / "aoscb.json"

    def ensure(self) -> None:
        """Create the folders. ``run/`` is private (0700): it holds the admin socket."""
        self.home.mkdir(parents=True, exist_ok=True)
        for d in (self.run, self.logs, self.workspaces, self.skills, self.services):
            d.mkdir(parents=True, exist_ok=True)
        self.run.chmod(0o700)


@dataclass(frozen=True)
class Config:
    """The merged system control block plus where it came from."""

    data: dict[str, Any]
    sources: list[str] = field(default_factory=list)
    #: Keys that look misspelt (see :func:`unknown_keys`): said at start, never fatal.
    warnings: list[str] = field(default_factory=list)

    def get(self, dotted: str) -> Any:
        """A value by dotted path, e.g. ``limits.max_frame_bytes``."""
        cur: Any = self.data
        for part in dotted.split("."):
            cur = cur[part]
        return cur

    def limit(self, name: str) -> int:
        """An integer from ``limits``."""
        value = self.data["limits"][name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"limits.{name} must be a positive integer, got {value!r}")
        return value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object")
    return data


#: Sections whose keys AOS knows in full: any other key there is a mistake.
_CLOSED = ("limits", "skills", "context", "a2a", "ui", "kernel", "sandbox", "sandbox.limits")


def unknown_keys(data: dict[str, Any], where: str) -> list[str]:
    """Warnings for keys of ``data`` (one file's ``aoscb.json``) that AOS does not read.

    Inside the sections AOS owns (``limits``, ``sandbox``, …) every unknown key is one. At the
    top level only a near miss of a known key is (``"modle"``): other top-level keys may belong
    to a skill, which reads its own section through ``system.config``.
    """
    import difflib

    out = []
    for key in data:
        if key not in DEFAULTS:
            near = difflib.get_close_matches(key, list(DEFAULTS), n=1, cutoff=0.8)
            if near:
                out.append(f"{where}: unknown key {key!r} (did you mean {near[0]!r}?)")
    for section in _CLOSED:
        have: Any = data
        known: Any = DEFAULTS
        for part in section.split("."):
            have = have.get(part) if isinstance(have, dict) else None
            known = known.get(part) if isinstance(known, dict) else None
        if not isinstance(have, dict) or not isinstance(known, dict):
            continue
        for key in have:
            if key not in known:
                near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else f"; known: {', '.join(known)}"
                out.append(f"{where}: unknown key {section}.{key!r}{hint}")
    return out


def load_config(paths: Paths) -> Config:
    """Defaults, then the checkout's ``aoscb.json``, then ``$AOS_HOME/aoscb.json``, then env."""
    data = dict(DEFAULTS)
    sources = ["defaults"]
    warnings: list[str] = []
    for path in (CHECKOUT / "aoscb.json", paths.user_config):
        if path.exists():
            layer = _read(path)
            warnings += unknown_keys(layer, str(path))
            data = _merge(data, layer)
            sources.append(str(path))
    if os.environ.get("AOS_MODEL"):
        data["model"] = os.environ["AOS_MODEL"]
        sources.append("AOS_MODEL")
    level = os.environ.get("AOS_LOG_LEVEL", "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"AOS_LOG_LEVEL must be debug, info, warning or error, not {level!r}")
    cfg = Config(data, sources, warnings)
    for name in DEFAULTS["limits"]:
        cfg.limit(name)
    kernel = data.get("kernel") or {}
    name = kernel.get("name")
    if name is not None and (
        not isinstance(name, str) or not name or any(c.isspace() for c in name) or name in ("any", "here")
    ):
        raise ConfigError(f"kernel.name must be a word without spaces, other than any and here, got {name!r}")
    if not isinstance(kernel.get("shared_workspaces", False), bool):
        raise ConfigError(
            f"kernel.shared_workspaces must be true or false, got {kernel['shared_workspaces']!r}"
        )
    if data.get("model_client") not in ("auto", "litellm"):
        raise ConfigError(f"model_client must be auto or litellm, got {data.get('model_client')!r}")
    from .loop.sandbox import SandboxError, resolve_settings

    try:
        resolve_settings(data.get("sandbox"))
    except SandboxError as exc:
        raise ConfigError(str(exc)) from exc
    return cfg


def load_dotenv(paths: Paths | None = None) -> None:
    """Read ``$AOS_HOME/.env``, then the checkout's ``.env``; a variable already set (in the
    environment, or by the first file) is never overridden."""
    for env in ((paths or Paths.from_env()).home / ".env", CHECKOUT / ".env"):
        if env.is_file():
            from dotenv import load_dotenv as _load

            _load(env, override=False)
