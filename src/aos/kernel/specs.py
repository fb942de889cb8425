"""How a dispatch is configured: its model, client, workspace, sandbox, skills and limits.

Each comes from the session's settings, then the agent's, then ``aoscb.json``; :meth:`Specs.spec`
gathers them into the :class:`~aos.loop.spec.UnitSpec` a unit runs with.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import Rejected

from ..loop.model import CLIENTS
from ..loop.sandbox import INSTALL_HINT, SandboxError, SandboxSettings, check_workspace
from ..loop.spec import UnitSpec
from ..skills.index import enabled

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Specs"]


class Specs:
    """The dispatch settings of one kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def limit(self, name: str, default: int) -> int:
        try:
            return self.kernel.config.limit(name)
        except KeyError:
            return default

    @property
    def ttl(self) -> float:
        """How long a lease lasts unless renewed (``limits.lease_ttl_s``)."""
        return float(self.limit("lease_ttl_s", 30))

    def model(self, agent: dict[str, Any], session: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        cfg = self.kernel.config.data
        model = (session["settings"] or {}).get("model") or agent["model"] or cfg.get("model")
        params: dict[str, Any] = {}
        for layer in (cfg, agent["settings"] or {}, session["settings"] or {}):
            p = layer.get("model_params")
            if isinstance(p, dict):
                params.update(p)
        return str(model), params

    def model_client(self, agent: dict[str, Any], session: dict[str, Any]) -> str:
        """The ``model_client`` setting (session, agent, then aoscb.json; default ``auto``).

        Raises:
            Rejected: a value other than ``auto`` or ``litellm``.
        """
        cfg = self.kernel.config.data
        for layer in (session["settings"] or {}, agent["settings"] or {}, cfg):
            value = layer.get("model_client")
            if value is not None:
                if value not in CLIENTS:
                    raise Rejected(
                        f"model_client must be one of {', '.join(CLIENTS)}, not {value!r}",
                        setting="model_client",
                    )
                return str(value)
        return "auto"

    def lenient_model_client(self, agent: dict[str, Any], session: dict[str, Any]) -> str:
        try:
            return self.model_client(agent, session)
        except Rejected:
            return "auto"  # a dispatch resumed after a restart keeps going

    def workspace(self, agent: dict[str, Any]) -> Path:
        if agent["workspace"]:
            return Path(str(agent["workspace"])).expanduser()
        return self.kernel.paths.workspaces / str(agent["name"])

    def sandbox_for(self, agent: dict[str, Any]) -> SandboxSettings | None:
        """The sandbox the agent's commands run in, or None for none (mode off, or auto where
        bubblewrap does not work).

        Raises:
            Rejected: invalid settings, a required sandbox that cannot run here, or a workspace
                that would put AOS's own files within the agent's reach.
        """
        try:
            settings = self.kernel.sandbox_settings(agent["settings"])
        except SandboxError as exc:
            raise Rejected(f"agent {agent['name']!r}: {exc}") from None
        probe = self.kernel.sandbox_probe
        if settings.mode == "off" or (settings.mode == "auto" and not probe.available):
            return None
        if not probe.available:
            raise Rejected(
                f"agent {agent['name']!r} requires the sandbox (sandbox.mode: required), but it cannot "
                f"run here: {probe.reason}. To fix: {INSTALL_HINT}",
                sandbox=probe.reason,
            )
        paths = self.kernel.paths
        from ..config import CHECKOUT

        protected = [paths.home, *self.kernel.skills.roots, CHECKOUT / "src", CHECKOUT / "sdk"]
        protected.append(Path(sys.prefix))
        try:
            check_workspace(self.workspace(agent), protected=protected, workspaces_root=paths.workspaces)
        except SandboxError as exc:
            raise Rejected(f"agent {agent['name']!r}: {exc}") from None
        return settings

    def catalog(self, agent: dict[str, Any], session: dict[str, Any]) -> list[dict[str, str]]:
        """The skills enabled for this session that agents see: name, description, where its
        SKILL.md is. A skill whose SKILL.md says ``metadata: aos-catalog: hidden`` (one that
        serves people or the kernel, such as the web UI) stays enabled but is left out."""
        return [s for s in self.enabled_skills(agent, session) if not s.get("hidden")]

    def enabled_skills(self, agent: dict[str, Any], session: dict[str, Any]) -> list[dict[str, str]]:
        """Every skill enabled for this session, hidden ones marked ``hidden`` (their CLIs are
        on the agent's PATH all the same; only the catalog in its prompt leaves them out)."""
        out, on_names = [], set()
        for sk in self.kernel.skills.all():
            on, _ = enabled(sk, self.kernel.config, agent["settings"], session["settings"])
            if not on:
                continue
            on_names.add(sk.name)
            entry = {"name": sk.name, "description": sk.description, "path": str(sk.path / "SKILL.md")}
            if sk.metadata.get("aos-catalog") == "hidden":
                entry["hidden"] = "true"
            out.append(entry)
        self.kernel.enabled_cache[session["id"]] = on_names
        return out

    def spec(
        self,
        dispatch_id: str,
        session: dict[str, Any],
        agent: dict[str, Any],
        epoch: int,
        model: str,
        params: dict[str, Any],
        sandbox: SandboxSettings | None = None,
    ) -> UnitSpec:
        return UnitSpec(
            sandbox=sandbox,
            dispatch_id=dispatch_id,
            session_id=session["id"],
            skills=self.enabled_skills(agent, session),
            agent=agent,
            epoch=epoch,
            model=model,
            model_params=params,
            model_client=self.lenient_model_client(agent, session),
            workspace=self.workspace(agent),
            max_steps=self.limit("max_steps", 50),
            bash_timeout_s=float(self.limit("bash_timeout_s", 120)),
            output_cap_bytes=self.limit("output_cap_bytes", 65536),
            max_format_errors=self.limit("max_format_errors", 3),
            model_retries=self.limit("model_retries", 3),
            model_backoff_s=self.limit("model_backoff_ms", 500) / 1000,
            service_wait_s=float(self.limit("service_wait_s", 30)),
            content_cap_bytes=self.limit("content_cap_bytes", 8 * 1024 * 1024),
        )
