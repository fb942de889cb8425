"""Runs last (by name): every syscall in the kernel's table had a round trip in this run."""

from __future__ import annotations

import pytest

from aos.kernel.syscalls import SYSCALLS

from .rpc import COVERED

ROUND_TRIP_MODULES = {"test_syscalls.py", "test_dispatch.py", "test_skills.py"}


def test_every_syscall_has_a_round_trip(request: pytest.FixtureRequest) -> None:
    ran = {item.path.name for item in request.session.items}
    if not ran >= ROUND_TRIP_MODULES or request.session.testsfailed:
        pytest.skip("only meaningful when the whole suite runs and passes")
    assert set(SYSCALLS) - COVERED == set()
