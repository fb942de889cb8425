"""Importing the SDK must stay light: no kernel, no database driver, no LLM client."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["aos_sdk", "aos_sdk.errors", "aos_sdk.protocol", "aos_sdk.syncclient", "aos_sdk.connection"],
)
def test_sdk_import_pulls_in_no_kernel_psycopg_or_litellm(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('aos', 'psycopg', 'litellm'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_status_path_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from aos.cli import main\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('psycopg', 'litellm', 'pydantic', 'websockets', 'structlog'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
