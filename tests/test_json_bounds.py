"""Deep or huge JSON on every JSON endpoint (issue 11 item 9): 400 problem+json (413 for
a size above the cap), never a 500 RecursionError, checked before parsing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.testkit.gwproc import GatewayProcess
from web.jsonbody import MAX_JSON_DEPTH, JsonRejected, nesting_exceeds, parse_json

DEEP = b"[" * 30_000 + b"]" * 30_000  # 60 KB: under the size cap, far over the depth
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path_factory.mktemp("json")).start()
    yield proc
    assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=3)
    ),
    max_leaves=40,
)


@given(json_values, st.integers(1, 8))
def test_nesting_check_agrees_with_the_parsed_depth(value: Any, limit: int) -> None:
    text = json.dumps(value)
    assert nesting_exceeds(text, limit) == (depth(value) > limit)


def test_deep_json_is_rejected_before_parsing() -> None:
    for body in (DEEP, DEEP_OBJECT):
        with pytest.raises(JsonRejected, match="nest at most"):
            parse_json(body, max_bytes=len(body))
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT, b"[" * 20 + b"]" * 20])
def test_deep_json_on_the_forms_endpoint_is_400(gw: GatewayProcess, body: bytes) -> None:
    session = gw.create_session()
    status, headers, answer = gw.request(
        "POST",
        f"/api/sessions/{session['id']}/forms",
        body,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400, answer
    assert headers["Content-Type"].startswith("application/problem+json")
    assert "nest" in json.loads(answer)["detail"]


def test_deep_json_creating_a_consultation_is_400(gw: GatewayProcess) -> None:
    status, _, answer = gw.request(
        "POST", "/api/sessions", DEEP, headers={"Content-Type": "application/json"}
    )
    assert status == 400, answer
    # an empty body still creates one
    assert gw.request("POST", "/api/sessions", b"")[0] == 201


def test_huge_json_is_413(gw: GatewayProcess) -> None:
    session = gw.create_session()
    body = json.dumps({"template": "x" * 100_000}).encode()
    status, _, answer = gw.request(
        "POST",
        f"/api/sessions/{session['id']}/forms",
        body,
        headers={"Content-Type": "application/json"},
    )
    assert status == 413, answer


def test_deep_json_on_the_events_socket_is_an_error_event(gw: GatewayProcess) -> None:
    session = gw.create_session()

    async def run() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(session["advisor"]["events_url"]) as ws,
        ):
            await ws.send_str("[" * 3000 + "]" * 3000)
            while True:
                event = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                if event["type"] == "error":
                    assert "nest" in event["detail"]
                    break
            # the socket still works
            await ws.send_str(json.dumps({"type": "chat", "text": "hallo"}))
            while json.loads((await asyncio.wait_for(ws.receive(), 5)).data)["type"] != "chat":
                pass

    asyncio.run(run())
    assert gw.get("/healthz")
