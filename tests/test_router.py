"""aos-router: a failing model moves the call to the agent's next model, rests, and comes back;
through real dispatches, two scripted model servers and the router's real service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from aos_sdk.connection import RpcConnection
from aos_sdk.testing import ScriptedModel

from .rpc import call

pytestmark = pytest.mark.parametrize(
    "kernel", [{"enable": ["aos-router"], "model_retries": 1, "model_backoff_ms": 10}], indirect=True
)

REST_S = 0.5  # the primary's first rest in these tests


@pytest.fixture
def primary() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
def fallback() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


async def routed_agent(
    rpc: RpcConnection, name: str, primary: ScriptedModel, fallback: ScriptedModel, **router: Any
) -> str:
    """An agent on ``primary`` with the router on and ``fallback`` as its one fallback; returns a
    session of it."""
    fallbacks = [{"model": "openai/fallback", "model_params": {"api_base": fallback.url}}]
    settings = {
        "model_params": {"api_base": primary.url, "api_key": "k"},
        "skills": {"enabled": ["aos-router"]},
        "router": {"fallbacks": fallbacks, **router},
    }
    await call(rpc, "agent.create", {"name": name, "model": "openai/primary", "settings": settings})
    return str((await call(rpc, "session.create", {"agent": name}))["id"])


async def run(rpc: RpcConnection, kernel: Any, sid: str, text: str) -> list[dict[str, Any]]:
    started = await call(rpc, "session.dispatch", {"session": sid, "message": text})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    return list((await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"])


async def test_a_failing_model_moves_to_the_fallback_rests_and_comes_back(
    rpc: RpcConnection, kernel: Any, primary: ScriptedModel, fallback: ScriptedModel
) -> None:
    sid = await routed_agent(rpc, "ada", primary, fallback, cooldowns_s=[REST_S, 60])
    # The primary fails (a 500 after its retries): the same step is answered by the fallback.
    primary.add({"status": 500, "error": "the primary is down"}, {"status": 500, "error": "still down"})
    fallback.add({"bash": "echo via fallback"}, {"text": "answered by the fallback"})
    facts = await run(rpc, kernel, sid, "hello")
    assert facts[-1]["body"]["status"] == "done"
    assert len(primary.requests) == 2 and len(fallback.requests) == 2, (
        "the rest of the run kept to the fallback"
    )
    answers = [f for f in facts if f["kind"] == "message" and f["role"] == "assistant"]
    assert [a["meta"]["usage"]["model"] for a in answers] == ["fallback", "fallback"]
    # The failover is in history, on the answer that followed it.
    assert answers[0]["meta"]["failed_over"] == [
        {"model": "openai/primary", "kind": "InternalServerError", "status": 500}
    ]
    assert "failed_over" not in answers[1]["meta"]
    # While the primary rests, the next run goes straight to the fallback.
    fallback.add({"bash": "router status"}, {"text": "still the fallback"})
    facts = await run(rpc, kernel, sid, "again")
    assert facts[-1]["body"]["status"] == "done" and len(primary.requests) == 2
    shown = next(f for f in facts if f["kind"] == "tool.result")["body"]["output"]
    assert (
        "openai/primary: resting" in shown
        and "1 failures in a row; last error InternalServerError (500) after " in shown
    )
    # Its rest over, the primary is tried first again, and a success ends its failures.
    await asyncio.sleep(REST_S)  # the rest runs out: here time passing is the scenario itself
    primary.add({"text": "the primary is back"})
    facts = await run(rpc, kernel, sid, "and now?")
    assert facts[-2]["body"]["text"] == "the primary is back" and len(primary.requests) == 3


async def test_without_a_fallback_left_the_run_fails_naming_every_model_tried(
    rpc: RpcConnection, kernel: Any, primary: ScriptedModel, fallback: ScriptedModel
) -> None:
    sid = await routed_agent(rpc, "bo", primary, fallback)
    primary.add({"status": 503, "error": "overloaded"}, {"status": 503, "error": "overloaded"})
    fallback.add({"status": 429, "error": "slow down"}, {"status": 429, "error": "slow down"})
    facts = await run(rpc, kernel, sid, "hello")
    error = next(f for f in facts if f["kind"] == "error")["body"]
    assert facts[-1]["body"]["status"] == "failed"
    assert error["models"] == ["openai/primary", "openai/fallback"] and error["kind"] == "RateLimitError"
    # A bad request is not the model's fault: no failover, no rest.
    primary.add({"status": 400, "error": "context too long"})
    facts = await run(rpc, kernel, sid, "again")
    assert next(f for f in facts if f["kind"] == "error")["body"]["models"] == ["openai/primary"]


async def test_light_work_goes_to_the_cheap_model_first(
    rpc: RpcConnection, kernel: Any, primary: ScriptedModel, fallback: ScriptedModel
) -> None:
    """Runs in sessions marked light (aos-schedule's) and summaries go to ``router.light``;
    the agent's own sessions keep its model."""
    cheap = {"model": "openai/light", "model_params": {"api_base": fallback.url}}
    sid = await routed_agent(rpc, "cy", primary, fallback, light=cheap)
    light = (await call(rpc, "session.create", {"agent": "cy", "settings": {"light": True}}))["id"]
    fallback.add({"text": "cheap answer"})
    facts = await run(rpc, kernel, light, "a scheduled check")
    assert facts[-2]["meta"]["usage"]["model"] == "light" and primary.requests == []
    primary.add({"text": "the agent's own model"})
    facts = await run(rpc, kernel, sid, "a question")
    assert facts[-2]["meta"]["usage"]["model"] == "primary"
    fallback.add({"text": "a summary"})
    messages = [{"role": "user", "content": "sum this up"}]
    got = await call(rpc, "compute.complete", {"session": sid, "messages": messages, "purpose": "summary"})
    assert got["text"] == "a summary" and got["model"] == "light"
    primary.add({"text": "not light"})
    got = await call(rpc, "compute.complete", {"session": sid, "messages": messages})
    assert got["model"] == "primary", "other compute calls keep the agent's model"
