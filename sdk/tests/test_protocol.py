"""The sans-I/O JSON-RPC endpoint and the error codes, without any socket."""

from __future__ import annotations

import json
import pickle

import pytest

from aos_sdk import errors
from aos_sdk.protocol import Endpoint, ErrorResponse, Notification, Request, Response


def test_request_and_response_round_trip() -> None:
    client, server = Endpoint(), Endpoint()
    rid, frame = client.request("agent.get", {"agent": "alice"})
    [req] = server.receive(frame)
    assert req == Request(rid, "agent.get", {"agent": "alice"})
    [resp] = client.receive(Endpoint.result(req.id, {"name": "alice"}))
    assert resp == Response(rid, {"name": "alice"})
    assert client.data_to_send() == [] and server.data_to_send() == []


def test_ids_increase() -> None:
    ep = Endpoint()
    assert [ep.request("x")[0] for _ in range(3)] == [1, 2, 3]


def test_notification_has_no_id() -> None:
    frame = Endpoint.notification("history.fact", {"seq": 1})
    assert "id" not in json.loads(frame)
    assert Endpoint().receive(frame) == [Notification("history.fact", {"seq": 1})]


def test_errors_cross_as_their_class() -> None:
    exc = errors.SessionBusy("session se_1 is busy", session="se_1")
    [event] = Endpoint().receive(Endpoint.error(5, exc))
    assert isinstance(event, ErrorResponse)
    assert isinstance(event.error, errors.SessionBusy)
    assert event.error.message == "session se_1 is busy"
    assert event.error.details == {"session": "se_1"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{", -32700),
        ("[]", -32600),
        ('"text"', -32600),
        ('{"id": 1, "method": "x"}', -32600),
        ('{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600),
        ('{"jsonrpc": "2.0", "id": 1, "method": "x", "params": "p"}', -32600),
        ('{"jsonrpc": "2.0", "id": [1], "method": "x"}', -32600),
        ('{"jsonrpc": "2.0", "id": 1}', -32600),
    ],
)
def test_malformed_frames_queue_an_error_and_produce_no_event(frame: str, code: int) -> None:
    ep = Endpoint()
    assert ep.receive(frame) == []
    [out] = ep.data_to_send()
    assert json.loads(out)["error"]["code"] == code
    assert ep.data_to_send() == []


def test_size_limit() -> None:
    ep = Endpoint(max_message_bytes=10)
    assert ep.receive('{"jsonrpc": "2.0", "id": 1, "method": "x"}') == []
    err = json.loads(ep.data_to_send()[0])["error"]
    assert err["code"] == -32600 and err["data"]["limit"] == 10


def test_every_code_maps_back_to_its_class_and_pickles() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.AosError)]
    codes = {c.code for c in classes if c not in (errors.AosError, errors.ProtocolError)}
    for code in codes:
        cls = errors.lookup(code)
        assert cls.code == code
        exc = cls("boom", x=1)
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is cls and back.details == {"x": 1}
        assert isinstance(errors.from_error(exc.to_error()), cls)


def test_unknown_code_keeps_its_number() -> None:
    exc = errors.from_error({"code": -31999, "message": "custom"})
    assert type(exc) is errors.AosError and exc.code == -31999
