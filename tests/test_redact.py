"""Scrubbing text that arrives in pieces (live command output, a model's streamed text): a secret
split across two pieces never shows, not even in part, and what is not a secret still shows as
soon as its line (or word) is complete."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from aos.redact import StreamScrubber, refresh_secret_values, scrub_values

ENV_SECRET = "zq9 daemon secret 0123456789"  # a password may hold spaces
SHAPED = "sk-" + "proj-abcdefghijklmnopqrstuvwxyz012345"
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQUJDREVGR0hJSktMTU5P\n-----END OPENSSH PRIVATE KEY-----"


@pytest.fixture(autouse=True)
def env_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AOS_TEST_PASSWORD", ENV_SECRET)
    refresh_secret_values()
    yield
    monkeypatch.delenv("AOS_TEST_PASSWORD")
    refresh_secret_values()


def pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def shown(parts: list[str]) -> list[str]:
    s = StreamScrubber()
    return [s.feed(p) for p in parts] + [s.flush()]


@pytest.mark.parametrize("secret", [ENV_SECRET, SHAPED, PEM], ids=["env value", "key shape", "private key"])
def test_a_secret_split_anywhere_never_shows_in_part(secret: str) -> None:
    text = f"before it\nthe key: {secret} and after\nlast line\n"
    start = text.index(secret)
    tell = secret.replace("\n", "")[:6] if secret is not PEM else "b3Blbn"
    for a in range(start, start + len(secret) + 1):
        for b in (a, min(a + 5, len(text)), min(a + 17, len(text))):
            out = shown(pieces(text, sorted({a, b})))
            assert "".join(out) == scrub_values(text), (a, b)
            assert not any(tell in piece for piece in out), (a, b, out)


def test_lines_show_as_soon_as_they_end_and_words_as_soon_as_they_are_whole() -> None:
    s = StreamScrubber()
    assert s.feed("hello wor") == "hello "
    assert s.feed("ld\nnext") == "world\n"
    assert s.feed(" line\r") == "next line\r"  # a progress bar's carriage return ends a line too
    assert s.flush() == ""


def test_an_endless_run_without_whitespace_is_held_back_only_at_its_tail() -> None:
    s = StreamScrubber()
    blob = "x" * 10_000
    out = s.feed(blob)
    assert out == "x" * (10_000 - StreamScrubber.HOLD_TAIL)
    assert s.flush() == "x" * StreamScrubber.HOLD_TAIL


def test_a_certificate_block_waits_for_its_end_then_shows_whole() -> None:
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    s = StreamScrubber()
    assert s.feed(cert[:30]) == ""
    assert s.feed(cert[30:]) == cert
