"""The supervisor's state machine with a fake clock: backoff, quarantine, recovery."""

from __future__ import annotations

import pytest

from aos.skills.supervisor import Policy, ServiceState, State


def test_start_register_run() -> None:
    s = ServiceState("svc")
    s.start(0)
    assert s.state == State.STARTING and s.register_deadline() == 10
    s.registered(0.2)
    assert s.state == State.RUNNING and s.last_error is None


def test_backoff_doubles_to_the_cap() -> None:
    s = ServiceState("svc", Policy(crash_limit=100))
    delays = []
    t = 0.0
    for _ in range(9):
        s.start(t)
        s.exited(t, "boom")
        delays.append(s.next_start - t)  # type: ignore[operator]
        assert s.state == State.BACKOFF and not s.due(t) and s.due(s.next_start)  # type: ignore[arg-type]
        t = s.next_start  # type: ignore[assignment]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize(("r", "factor"), [(0.0, 0.8), (0.5, 1.0), (1.0, 1.2)])
def test_jitter_is_plus_minus_twenty_percent(r: float, factor: float) -> None:
    s = ServiceState("svc")
    s.start(0)
    s.exited(0, "boom", jitter_factor=r)
    assert s.next_start == pytest.approx(0.5 * factor)


def test_five_crashes_in_sixty_seconds_quarantine() -> None:
    s = ServiceState("svc")
    for i in range(4):
        s.start(i)
        s.exited(i, "crash")
        assert s.state == State.BACKOFF
    s.start(4)
    s.exited(4, "crash")
    assert s.state == State.QUARANTINED and not s.due(1000)
    s.start(1000)  # an explicit start (reload) lets it try again, with a clean record
    assert s.state == State.STARTING and s.crashes == [] and s.streak == 0


def test_crashes_spread_out_do_not_quarantine_and_stability_resets_backoff() -> None:
    s = ServiceState("svc")
    for i in range(10):
        t = i * 61.0
        s.start(t)
        s.registered(t)
        s.exited(t + 60.5, "crash after a long run")
        assert s.state == State.BACKOFF
        assert s.next_start - (t + 60.5) == 0.5  # type: ignore[operator]


def test_stop_is_not_a_crash() -> None:
    s = ServiceState("svc")
    s.start(0)
    s.registered(0)
    s.stop(1)
    assert s.state == State.STOPPING
    s.exited(1.5, "terminated")
    assert s.state == State.STOPPED and s.crashes == [] and s.restarts == 0
