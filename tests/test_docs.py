"""The docs that are generated from code must match the code."""

from __future__ import annotations

from pathlib import Path

from aos.kernel.syscalls import SYSCALLS, render_into

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_syscall_reference_matches_the_kernel_table() -> None:
    doc = (DOCS / "syscalls.md").read_text()
    assert render_into(doc) == doc, (
        "docs/syscalls.md is stale: run `uv run python -m aos.kernel.syscalls --write`"
    )
    for name in SYSCALLS:
        assert f"`{name}`" in doc


def test_every_error_code_is_documented() -> None:
    from aos_sdk import errors

    doc = (DOCS / "syscalls.md").read_text()
    for cls in vars(errors).values():
        if (
            isinstance(cls, type)
            and issubclass(cls, errors.AosError)
            and cls not in (errors.AosError, errors.ProtocolError)
        ):
            assert f"| {cls.code} | `{cls.type}` | `{cls.__name__}` |" in doc, cls.__name__
