"""A skill author's test, in a few lines: the guide's notes skill on a throwaway daemon."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aos_sdk.testing import ScriptedModel, ThrowawayKernel

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "first-skill.md"


@pytest.fixture
def notes_skill(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    for name, text in re.findall(r"<!-- guide:(\S+) -->\n```\w*\n(.*?)```", GUIDE.read_text(), flags=re.S):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "bin" / "notes").chmod(0o755)
    return folder


@pytest.mark.slow
def test_a_skill_tested_in_a_few_lines(notes_skill: Path) -> None:
    with (
        ScriptedModel([{"bash": "notes add hi"}, {"text": "done"}]) as model,
        ThrowawayKernel([notes_skill]) as aos,
    ):
        aos.wait_service("notes")
        facts = aos.dispatch(aos.new_session(model), "take a note")
        assert facts[-1]["body"]["status"] == "done"
        assert (
            next(f["body"]["output"] for f in facts if f["kind"] == "tool.result")
            == "noted (1 in this session)\n"
        )
