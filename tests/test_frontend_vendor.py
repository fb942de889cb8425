"""aos-frontend's vendored browser code."""

from __future__ import annotations

from pathlib import Path


def test_vendored_browser_code_is_the_release_it_names() -> None:
    """Third-party browser code is vendored unmodified, with its licence, pinned by SHA-256."""
    import hashlib
    import re

    vendor = Path(__file__).parents[1] / "skills" / "aos-frontend" / "static" / "vendor"
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (vendor / "README.md").read_text(), re.M)
    assert rows, "vendor/README.md lists the vendored files"
    for name, digest in rows:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
        stem = name.removesuffix(".min.js").removesuffix(".js")
        assert (vendor / f"{stem}.LICENSE").exists(), f"{name} has its licence beside it"
    listed = {n for n, _ in rows} | {
        f"{n.removesuffix('.min.js').removesuffix('.js')}.LICENSE" for n, _ in rows
    }
    assert {p.name for p in vendor.iterdir()} == listed | {"README.md"}, "nothing unlisted"
