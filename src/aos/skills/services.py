"""Skill services: one supervised subprocess per skill that declares one.

Each service gets its own socket, ``$AOS_HOME/run/services/<skill>.sock``: a connection there *is*
that skill. The service registers its hooks and commands (``service.register``) within
``register_timeout_s``; its hook handlers are then proxied over the connection, and any syscall
it makes is checked against its ``aos-permissions``. The process runs in its own process group,
with stdout and stderr in ``$AOS_HOME/logs/skills/<skill>.log``.

:class:`ServiceManager` runs a :class:`~aos.skills.runner.ServiceRunner` per skill (the socket,
process and registration of one service). Supervision follows :mod:`aos.skills.supervisor`: restarts with backoff, quarantine after
repeated crashes. While a service is down, its hooks stay registered and fail as they declared:
gates refuse (unless ``failure: open``), transforms are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ..logs import get_logger
from .manifest import SkillManifest
from .runner import SERVICE_ENV, ServiceRunner, service_env
from .supervisor import Policy, State

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

__all__ = ["SERVICE_ENV", "ServiceManager", "ServiceRunner", "service_env"]

log = get_logger("aos.services")


class ServiceManager:
    """Runs a :class:`ServiceRunner` for every usable skill that declares a service."""

    def __init__(self, kernel: Kernel, policy: Policy | None = None) -> None:
        self.kernel = kernel
        self.policy = policy or Policy()
        self.runners: dict[str, ServiceRunner] = {}
        self._generation = 0
        #: Skill name -> why its last hot reload was refused (the old version kept serving).
        self.reload_failures: dict[str, str] = {}
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Any) -> None:
        """Return once ``predicate()`` holds; re-checked after every change of the services."""
        while not predicate():
            self._changed.clear()
            if predicate():
                return
            await self._changed.wait()

    async def settle(self, skills: set[str], timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until none of ``skills``' services is still starting,
        so a dispatch right after ``aos start`` or a reload finds their hooks registered."""

        def settled() -> bool:
            return all(
                r.state.state not in (State.STARTING, State.STOPPED)
                for name, r in self.runners.items()
                if name in skills
            )

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_until(settled), timeout)

    def restarting(self, skills: Any) -> list[str]:
        """Those of ``skills`` whose service is down but coming back (starting or in backoff, or
        running with a process that has just died)."""
        out = []
        for name in dict.fromkeys(skills):
            r = self.runners.get(name)
            if r is None:
                continue
            died = r.proc is not None and r.proc.returncode is not None
            if r.state.state in (State.STARTING, State.BACKOFF) or (
                r.state.state == State.RUNNING and (died or r.conn is None)
            ):
                out.append(name)
        return out

    async def wait_running(self, skills: list[str], timeout: float) -> bool:
        """Wait until every one of ``skills`` runs again (registered); False on timeout or if one is
        quarantined or gone."""

        def settled() -> bool:
            return all(
                (r := self.runners.get(n)) is None
                or r.state.state in (State.QUARANTINED, State.STOPPED)
                or (r.state.state == State.RUNNING and r.conn is not None)
                for n in skills
            )

        try:
            await asyncio.wait_for(self.wait_until(settled), timeout)
        except TimeoutError:
            return False
        return all(
            (r := self.runners.get(n)) is not None and r.state.state == State.RUNNING and r.conn is not None
            for n in skills
        )

    def applies(self, skill: str) -> Any:
        def check(input_data: dict[str, Any]) -> bool:
            return self.kernel.skill_applies(skill, input_data)

        return check

    async def sync(self, changed: list[str] | None = None) -> None:
        """Start services of new skills, stop those of skills that are gone or unusable, and
        replace those whose skill ``changed`` (the new version must register first)."""
        wanted = {
            m.name: m
            for m in self.kernel.skills.skills.values()
            if m.usable and m.service and m.name not in self.kernel.globally_disabled()
        }
        for name in list(self.runners):
            if name not in wanted:
                await self.runners.pop(name).stop()
        for name, m in wanted.items():
            if name not in self.runners:
                self.runners[name] = self._launch(m)
            elif name in (changed or []) or m.service != self.runners[name].manifest.service:
                await self.replace(m)
        self._changed.set()

    def _launch(self, m: SkillManifest, generation: int = 0) -> ServiceRunner:
        runner = ServiceRunner(self, m, generation=generation)
        runner.task = asyncio.create_task(runner.supervise(), name=f"service-{m.name}-{generation}")
        return runner

    async def replace(self, m: SkillManifest) -> bool:
        """Start the new version beside the old; switch once it registered, else keep the old."""
        old = self.runners[m.name]
        self._generation += 1
        new = self._launch(m, self._generation)
        try:
            state = await asyncio.wait_for(
                new.wait_state(State.RUNNING, State.BACKOFF, State.QUARANTINED),
                self.policy.register_timeout_s + 2,
            )
        except TimeoutError:
            state = new.state.state
        if state != State.RUNNING:
            self.reload_failures[m.name] = new.state.last_error or state.value
            log.error(
                "service.reload_failed", skill=m.name, error=new.state.last_error, kept="the running version"
            )
            await new.stop()
            if old.state.state == State.RUNNING and old.conn is not None:
                # The failed newcomer unregistered only its own handlers; put the old ones back.
                old.reinstate()
            return False
        self.runners[m.name] = new
        self.reload_failures.pop(m.name, None)
        await old.stop()
        log.info("service.reloaded", skill=m.name)
        return True

    async def close(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
        self.runners.clear()
