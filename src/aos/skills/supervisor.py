"""The service supervisor's state machine: pure, clock passed in, no processes.

States::

    stopped ──start──► starting ──registered──► running
                          │                        │
                          └──exited/timeout──► backoff ──(delay passed)──► starting
                                                   │
                              5 crashes in 60 s ──► quarantined (until reload or manual start)
    any ──stop──► stopping ──exited──► stopped

Backoff after the n-th crash in a row: 0.5 s doubling to 30 s, with ±20 % jitter (the random
factor is passed in, so tests are exact). A service that stays up for 60 s resets the count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Policy", "ServiceState", "State"]


class State(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    QUARANTINED = "quarantined"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Policy:
    register_timeout_s: float = 10.0
    backoff_first_s: float = 0.5
    backoff_max_s: float = 30.0
    jitter: float = 0.2
    crash_window_s: float = 60.0
    crash_limit: int = 5
    stable_after_s: float = 60.0
    stop_grace_s: float = 5.0


@dataclass
class ServiceState:
    """One service's supervision state; every method takes ``now`` (monotonic seconds)."""

    name: str
    policy: Policy = field(default_factory=Policy)
    state: State = State.STOPPED
    since: float = 0.0
    crashes: list[float] = field(default_factory=list)
    streak: int = 0
    restarts: int = 0
    next_start: float | None = None
    last_error: str | None = None

    def _go(self, state: State, now: float) -> None:
        self.state, self.since = state, now

    def start(self, now: float) -> None:
        """Spawn requested (first start, manual restart, or reload)."""
        if self.state == State.QUARANTINED:
            self.crashes.clear()
            self.streak = 0
        self._go(State.STARTING, now)
        self.next_start = None

    def registered(self, now: float) -> None:
        if self.state == State.STARTING:
            self._go(State.RUNNING, now)
            self.last_error = None

    def register_deadline(self) -> float:
        return self.since + self.policy.register_timeout_s

    def exited(self, now: float, reason: str, jitter_factor: float | None = None) -> None:
        """The process ended (crash, failed registration) while not being stopped.

        ``jitter_factor`` is a random number in [0, 1] (None: no jitter).
        """
        if self.state in (State.STOPPING, State.STOPPED):
            self._go(State.STOPPED, now)
            return
        if self.state == State.RUNNING and now - self.since >= self.policy.stable_after_s:
            self.streak = 0
        self.last_error = reason
        self.crashes = [t for t in self.crashes if now - t < self.policy.crash_window_s] + [now]
        self.streak += 1
        if len(self.crashes) >= self.policy.crash_limit:
            self._go(State.QUARANTINED, now)
            self.next_start = None
            return
        delay = min(self.policy.backoff_first_s * 2 ** (self.streak - 1), self.policy.backoff_max_s)
        factor = 1.0 if jitter_factor is None else 1.0 + self.policy.jitter * (2 * jitter_factor - 1)
        self._go(State.BACKOFF, now)
        self.next_start = now + delay * factor
        self.restarts += 1

    def due(self, now: float) -> bool:
        """Whether a backoff has run out and the service should be started again."""
        return self.state == State.BACKOFF and self.next_start is not None and now >= self.next_start

    def stop(self, now: float) -> None:
        if self.state in (State.STOPPED, State.QUARANTINED):
            self._go(State.STOPPED, now)
        else:
            self._go(State.STOPPING, now)
        self.next_start = None
