"""The model client: the direct path to OpenAI-compatible endpoints, litellm for the rest.

Every call goes over real HTTP to the scripted model server (OpenAI's chat-completions shape, or
Anthropic's Messages API for the ``anthropic/`` provider), as a provider would be reached.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.loop import openai_wire
from aos.loop.model import BASH_TOOL, ModelError, complete
from aos.loop.openai_wire import endpoint_for
from aos_sdk.connection import RpcConnection
from aos_sdk.errors import Rejected
from aos_sdk.testing import ScriptedModel

from .rpc import call

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "go"}]


@pytest.fixture(autouse=True)
async def close_connections() -> AsyncIterator[None]:
    yield
    await openai_wire.aclose()  # the daemon does this as it stops


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


def params(model: ScriptedModel, **extra: Any) -> dict[str, Any]:
    return {"api_base": model.url, "api_key": "test-key", **extra}


async def ask(model: ScriptedModel, name: str = "openai/scripted", **kw: Any) -> Any:
    kw.setdefault("params", params(model))
    return await complete(
        model=name, messages=MESSAGES, tools=[BASH_TOOL], retries=kw.pop("retries", 2), backoff_s=0.01, **kw
    )


# -- which path ------------------------------------------------------------------------------


def test_direct_path_only_where_nothing_needs_translating() -> None:
    base = {"api_base": "http://127.0.0.1:1/v1", "api_key": "k"}
    ep = endpoint_for("openai/llama-3", {**base, "temperature": 0.2, "extra_body": {"top_k": 5}})
    assert ep is not None
    assert ep.url == "http://127.0.0.1:1/v1/chat/completions" and ep.model == "llama-3"
    assert ep.body == {"temperature": 0.2, "top_k": 5} and ep.headers["Authorization"] == "Bearer k"
    assert endpoint_for("hosted_vllm/qwen", {"api_base": "http://h:8000/v1"}) is not None
    # litellm's: other providers, OpenAI's own API, its reasoning models, unknown parameters.
    assert endpoint_for("anthropic/claude-sonnet-4-5", base) is None
    assert endpoint_for("openai/gpt-4o", {"api_key": "k"}) is None
    assert endpoint_for("openai/o3-mini", base) is None
    assert endpoint_for("openai/gpt-5", base) is None
    assert endpoint_for("openai/x", {**base, "num_retries": 2}) is None
    assert endpoint_for("openai/x", {**base, "timeout": "soon"}) is None


async def test_direct_and_litellm_paths_give_the_same_reply(model: ScriptedModel) -> None:
    model.add({"bash": "ls"}, {"bash": "ls"})
    direct = await ask(model)
    through = await ask(model, client="litellm")
    assert [(c.name, c.arguments) for c in direct.tool_calls] == [
        (c.name, c.arguments) for c in through.tool_calls
    ]
    assert (direct.prompt_tokens, direct.completion_tokens) == (
        through.prompt_tokens,
        through.completion_tokens,
    )
    assert direct.finish_reason == through.finish_reason == "tool_calls"
    assert model.requests[0]["messages"] == model.requests[1]["messages"] == MESSAGES
    # The first went out as one plain POST, the second through litellm and the openai SDK.
    assert model.headers[0]["authorization"] == model.headers[1]["authorization"] == "Bearer test-key"
    assert not any(h.startswith("x-stainless") for h in model.headers[0])
    assert any(h.startswith("x-stainless") for h in model.headers[1])


async def test_parameters_and_headers_reach_the_endpoint(model: ScriptedModel) -> None:
    model.add({"text": "ok"})
    reply = await ask(
        model,
        params=params(
            model,
            temperature=0.1,
            max_tokens=99,
            extra_body={"top_k": 3},
            extra_headers={"X-Tenant": "t1"},
        ),
    )
    assert reply.text == "ok" and reply.tool_calls == []
    req = model.requests[0]
    assert (req["temperature"], req["max_tokens"], req["top_k"]) == (0.1, 99, 3)
    assert req["tools"] == [BASH_TOOL] and req["model"] == "scripted"
    assert model.headers[0]["x-tenant"] == "t1"


async def test_cost_comes_from_the_price_table_once_per_model(model: ScriptedModel) -> None:
    import litellm

    usage = {"prompt_tokens": 1000, "completion_tokens": 100}
    model.add({"text": "a", "usage": usage}, {"text": "b", "usage": usage})
    known = await ask(model, name="openai/gpt-4o-mini")
    price = litellm.model_cost["gpt-4o-mini"]
    expected = 1000 * price["input_cost_per_token"] + 100 * price["output_cost_per_token"]
    assert known.cost == pytest.approx(expected) and known.cost > 0
    unknown = await ask(model)
    assert unknown.cost is None  # a local model has no price


# -- errors -----------------------------------------------------------------------------------


async def test_transient_errors_are_retried(model: ScriptedModel) -> None:
    model.add({"status": 429, "error": "slow down"}, {"status": 503, "error": "busy"}, {"text": "ok"})
    reply = await ask(model)
    assert reply.text == "ok" and reply.attempts == 3


@pytest.mark.parametrize(
    ("step", "kind", "attempts"),
    [
        (
            {"status": 400, "error": "This model's maximum context length is 8192 tokens"},
            "ContextWindowExceededError",
            1,
        ),
        ({"status": 401, "error": "bad key"}, "AuthenticationError", 1),
        ({"status": 404, "error": "no such model"}, "NotFoundError", 1),
        ({"status": 500, "error": "boom"}, "InternalServerError", 3),
        ({"raw": {"not": "a completion"}}, "APIError", 3),
    ],
)
async def test_errors_read_like_litellms(
    model: ScriptedModel, step: dict[str, Any], kind: str, attempts: int
) -> None:
    model.add(*[step] * 3)
    with pytest.raises(ModelError) as err:
        await ask(model)
    assert err.value.kind == kind and err.value.attempts == attempts
    assert kind in err.value.message
    if "error" in step:
        assert step["error"] in err.value.message


async def test_an_unreachable_endpoint_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ModelError) as err:
            await complete(
                model="openai/x",
                messages=MESSAGES,
                params={"api_base": f"http://127.0.0.1:{port}/v1", "api_key": "k"},
                retries=1,
                backoff_s=0.01,
            )
    assert err.value.kind == "APIConnectionError" and err.value.attempts == 2
    assert f"127.0.0.1:{port}" in err.value.message


async def test_a_slow_endpoint_times_out(model: ScriptedModel) -> None:
    model.add({"delay": 2, "text": "late"})
    with pytest.raises(ModelError) as err:
        await ask(model, params=params(model, timeout=0.2), retries=0)
    assert err.value.kind == "Timeout"


# -- through a dispatch -------------------------------------------------------------------------


async def dispatch(rpc: RpcConnection, kernel: Any, agent: dict[str, Any]) -> list[dict[str, Any]]:
    await call(rpc, "agent.create", agent)
    sid = (await call(rpc, "session.create", {"agent": agent["name"]}))["id"]
    await call(rpc, "session.dispatch", {"session": sid, "message": "list the files"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
    return (await call(rpc, "history.list", {"session": sid}))["facts"]  # type: ignore[no-any-return]


async def test_a_dispatch_through_litellm_for_an_openai_compatible_endpoint(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    model.add({"bash": "echo hi"}, {"text": "done"})
    facts = await dispatch(
        rpc,
        kernel,
        {
            "name": "lite",
            "model": "openai/scripted",
            "workspace": str(tmp_path / "ws"),
            "settings": {"model_client": "litellm", "model_params": params(model)},
        },
    )
    assert facts[-1]["body"]["status"] == "done", facts[-1]
    assert [f["body"]["output"] for f in facts if f["kind"] == "tool.result"] == ["hi\n"]
    assert all(any(h.startswith("x-stainless") for h in hs) for hs in model.headers)


async def test_a_dispatch_to_an_anthropic_style_provider(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    model.add({"bash": "echo hi"}, {"text": "done"})
    facts = await dispatch(
        rpc,
        kernel,
        {
            "name": "claude",
            "model": "anthropic/claude-sonnet-4-5",
            "instructions": "Be brief.",
            "workspace": str(tmp_path / "ws"),
            "settings": {"model_params": {"api_base": f"http://127.0.0.1:{model.port}", "api_key": "k"}},
        },
    )
    assert facts[-1]["body"]["status"] == "done", facts[-1]
    first, second = model.requests
    # litellm converted the context: the system prompt out of the messages, the bash tool with an
    # input_schema, the command's result as a tool_result block answering the tool_use.
    assert "Be brief." in json.dumps(first["system"])
    assert all(m["role"] in ("user", "assistant") for m in first["messages"])
    assert first["tools"][0]["name"] == "bash" and "input_schema" in first["tools"][0]
    use = second["messages"][-2]["content"][-1]
    result = second["messages"][-1]["content"][-1]
    assert use["type"] == "tool_use" and use["input"] == {"command": "echo hi"}
    assert result["type"] == "tool_result" and result["tool_use_id"] == use["id"]
    assert "hi" in json.dumps(result["content"])
    assert model.headers[0]["x-api-key"] == "k"
    usage = next(f for f in facts if f["kind"] == "message" and f["role"] == "assistant")["meta"]["usage"]
    assert usage["cost"] is not None and usage["cost"] > 0  # litellm priced it from its table


async def test_a_bad_model_client_setting_is_refused(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    await call(
        rpc,
        "agent.create",
        {
            "name": "odd",
            "model": "openai/scripted",
            "workspace": str(tmp_path / "ws"),
            "settings": {"model_client": "fastest", "model_params": params(model)},
        },
    )
    sid = (await call(rpc, "session.create", {"agent": "odd"}))["id"]
    with pytest.raises(Rejected, match="model_client must be one of auto, litellm, not 'fastest'"):
        await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    assert (await call(rpc, "history.list", {"session": sid}))["facts"] == []


def test_windows_and_prices_are_read_without_importing_litellm() -> None:
    """The first step of the first dispatch after a start used to wait seconds for litellm's
    import, to learn the model's context window."""
    code = (
        "import sys\n"
        "from aos.loop import model_info\n"
        "assert model_info.context_window('openai/gpt-4o-mini') == 128000\n"
        "assert model_info.context_window('openrouter/openai/gpt-4o-mini') == 128000\n"
        "assert model_info.context_window('openai/scripted') is None\n"
        "assert model_info.prices('anthropic/claude-sonnet-4-5')[0] > 0\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
