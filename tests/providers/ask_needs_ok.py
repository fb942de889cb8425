"""A test hook provider for daemon subprocesses: asks a human about commands marked NEEDS-OK."""

from __future__ import annotations

from typing import Any

from aos.kernel.hooks import HookBus, HookHandler


def ask(input_data: dict[str, Any], output_data: dict[str, Any]) -> Any:
    if "NEEDS-OK" in output_data["args"]["command"]:
        return {"verdict": "ask", "reason": "marked NEEDS-OK"}
    return output_data


def register(bus: HookBus) -> None:
    bus.register(HookHandler("tool.before", "test-asker", ask))
