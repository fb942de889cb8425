"""SKILL.md parsing: our spec verdict equals the Agent Skills reference validator's, always."""

from __future__ import annotations

from pathlib import Path

import pytest
from skills_ref.validator import validate as reference_validate

from aos.config import CHECKOUT
from aos.skills.manifest import load_skill

FIXTURES = Path(__file__).parent / "fixtures" / "skills"
CASES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
BUILTIN = sorted(p for p in (CHECKOUT / "skills").iterdir() if p.is_dir())


def reference_verdict(folder: Path) -> bool:
    try:
        return reference_validate(folder) == []
    except Exception:  # the reference crashes on some files (non-UTF-8): not valid
        return False


def test_the_corpus_is_large_and_mixed() -> None:
    verdicts = [reference_verdict(c) for c in CASES]
    assert len(CASES) >= 30 and verdicts.count(True) >= 10 and verdicts.count(False) >= 15


@pytest.mark.parametrize("folder", CASES, ids=[c.name for c in CASES])
def test_spec_verdict_matches_the_reference_validator(folder: Path) -> None:
    m = load_skill(folder)
    assert m.spec_valid == reference_verdict(folder), [d.message for d in m.diagnostics]
    if not m.spec_valid:
        assert m.diagnostics, "an invalid skill must say why"


@pytest.mark.parametrize("folder", BUILTIN, ids=[c.name for c in BUILTIN])
def test_builtin_skills_are_spec_valid(folder: Path) -> None:
    assert reference_verdict(folder)
    m = load_skill(folder)
    assert m.spec_valid and m.usable and not [d for d in m.diagnostics if d.level == "error"]


def test_usable_differs_from_spec_valid_only_for_the_service_key() -> None:
    differ = [c.name for c in CASES if load_skill(c).usable != load_skill(c).spec_valid]
    assert differ == ["invalid-service-key"]
    m = load_skill(FIXTURES / "invalid-service-key")
    assert m.usable and not m.spec_valid
    assert any("not part of the Agent Skills spec" in d.message for d in m.diagnostics)


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("invalid-binary", "binary file"),
        ("invalid-latin1", "not UTF-8"),
        ("invalid-no-skill-md", "no SKILL.md"),
        ("invalid-name-mismatch", "must equal the folder's name"),
        ("invalid-extra-field", "unexpected top-level fields: version"),
        ("invalid-flow-style", "not valid (strict) YAML"),
        ("invalid-description-1025", "longer than 1024"),
        ("Invalid-Uppercase", "must be lowercase"),
        ("invalid-unclosed", "not closed"),
        ("invalid-empty-file", "must start with YAML frontmatter"),
    ],
)
def test_diagnostics_say_what_is_wrong(case: str, text: str) -> None:
    messages = " | ".join(d.message for d in load_skill(FIXTURES / case).diagnostics)
    assert text in messages


def test_aos_settings_are_read_from_metadata(tmp_path: Path) -> None:
    m = load_skill(FIXTURES / "valid-aos-metadata")
    assert m.default_enabled is False and m.permissions == frozenset({"history.list", "content.put"})
    skill = tmp_path / "svc"
    skill.mkdir()
    (skill / "SKILL.md").write_text(
        "---\nname: svc\ndescription: d\nmetadata:\n  aos-service: service.py --flag\n---\n"
    )
    m = load_skill(skill)
    assert m.service is None and any("does not exist" in d.message for d in m.diagnostics)
    assert m.spec_valid and m.usable  # a missing service file is an AOS problem, not a spec one
    (skill / "service.py").write_text("print('hi')\n")
    assert load_skill(skill).service == "service.py --flag"
    (skill / "SKILL.md").write_text(
        "---\nname: svc\ndescription: d\nmetadata:\n  aos-service: ../escape.py\n---\n"
    )
    assert any("inside the skill's folder" in d.message for d in load_skill(skill).diagnostics)
