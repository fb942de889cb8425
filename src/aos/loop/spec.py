"""What a dispatch's unit is given when it starts (:class:`UnitSpec`), its usage tally, and how
it stops (:class:`Stop`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sandbox import SandboxSettings

__all__ = ["Stop", "UnitSpec", "Usage"]


@dataclass
class UnitSpec:
    """Everything a unit needs, fixed when the dispatch starts."""

    dispatch_id: str
    session_id: str
    agent: dict[str, Any]
    epoch: int
    model: str
    model_params: dict[str, Any]
    workspace: Path
    max_steps: int
    bash_timeout_s: float
    output_cap_bytes: int
    max_format_errors: int
    model_retries: int
    model_backoff_s: float
    #: How long a step waits for a restarting service whose hook it needs (a crashed aos-context).
    service_wait_s: float = 30.0
    #: How much of a command's whole output is kept in content (head and tail past it).
    content_cap_bytes: int = 8 * 1024 * 1024
    #: ``auto`` (straight to an OpenAI-compatible endpoint when possible) or ``litellm``.
    model_client: str = "auto"
    #: The skills enabled in the session (``name``, ``description``, ``path``); ``hidden`` ones
    #: put their CLIs on PATH but stay out of the prompt's catalog.
    skills: list[dict[str, str]] = field(default_factory=list)
    #: The sandbox commands run in; None: unsandboxed (mode off, or auto without bubblewrap).
    sandbox: SandboxSettings | None = None
    #: Set when the sandbox this dispatch needs cannot be had (after a restart): the unit stops.
    sandbox_refusal: str | None = None
    token: str = ""
    #: Who holds the lease (set when the unit is launched).
    owner: str = ""
    input_seq: int | None = None
    #: The input message's meta (None after a restart: read it from history).
    input_meta: dict[str, Any] | None = None
    steps: int = 0
    #: Idempotency keys taken before the unit starts (its journal goes on from there).
    key_counter: int = 0


@dataclass
class Usage:
    prompt: int = 0
    completion: int = 0
    cost: float | None = None
    calls: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        self.prompt += usage["prompt_tokens"]
        self.completion += usage["completion_tokens"]
        self.calls += 1
        if usage.get("cost") is not None:
            self.cost = (self.cost or 0.0) + usage["cost"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "cost": self.cost,
            "calls": self.calls,
        }


class Stop(Exception):
    """Ends the loop: ``status`` goes into the dispatch row and the ``dispatch.end`` fact."""

    def __init__(self, status: str, reason: str = "", **details: Any) -> None:
        super().__init__(reason or status)
        self.status = status
        self.reason = reason
        self.details = details
