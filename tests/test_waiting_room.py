# ruff: noqa: F811  (pytest fixtures imported from tests.test_api are used by name)
"""The waiting room and the chat's typing indicator (issue 17, items 3 and 4), through
the API and the events WebSocket, and in the session core: the customer of a consultation
with a waiting room waits until the advisor lets them in; nothing of their media is
routed before; the advisor and the customer hear of it as ``admission`` events; "…
schreibt" reaches the other side at most once per interval."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.consultation import Connection, Directory, Role
from gateway.events import Admission
from tests.test_api import (  # noqa: F401  (fixtures used by name)
    ADVISOR_TOKEN,
    Client,
    assert_problem,
    bearer,
    client,
    create,
    gw,
    local,
    next_event,
    read_snapshot,
)
from web.advisor import lobby_message
from web.events import TYPING_INTERVAL

# Loaded at collection, outside the unit tests' no-process guard: aioice's ifaddr asks
# ldconfig for libc while being imported (the app loads the WebRTC front-end lazily).
import webrtc.frontend  # noqa: F401  isort: skip

SDP = {"Content-Type": "application/sdp"}


async def create_with_waiting_room(client: Client) -> dict[str, Any]:
    resp = await client.post(
        "/api/sessions", json={"waiting_room": True}, headers=bearer(ADVISOR_TOKEN)
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def admission_after_snapshot(ws: Any) -> dict[str, Any]:
    """A waiting-room consultation's snapshot ends with the customer's admission."""
    await read_snapshot(ws)
    event = await next_event(ws)
    assert event["type"] == "admission", event
    return event


async def no_event(ws: Any, wait: float = 0.3) -> None:
    msg = None
    try:
        msg = await ws.receive(timeout=wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {msg}")


# -- through the API ---------------------------------------------------------------------------


async def test_api_consultations_have_no_waiting_room_unless_asked(client: Client) -> None:
    body = await create(client)
    customer = await client.ws_connect(local(body["customer"]["events_url"]))
    snapshot = await read_snapshot(customer)
    # the snapshot is the one INTERFACE.md's clients know: no admission event in it
    assert all(e["type"] != "admission" for e in snapshot)
    await no_event(customer)
    resp = await client.post(
        local(body["customer"]["whip_url"]),
        data="v=0\r\n",
        headers={**SDP, **bearer(body["customer"]["token"])},
    )
    await assert_problem(resp, 400)  # past the waiting room: the offer itself is refused
    state = await (
        await client.get(f"/api/sessions/{body['id']}", headers=bearer(ADVISOR_TOKEN))
    ).json()
    assert state["participants"]["customer"]["admitted"] is True


async def test_waiting_customer_gets_no_media_until_the_advisor_lets_them_in(
    client: Client,
) -> None:
    body = await create_with_waiting_room(client)
    advisor = await client.ws_connect(local(body["advisor"]["events_url"]))
    assert await admission_after_snapshot(advisor) == {
        "type": "admission",
        "role": "customer",
        "admitted": False,
    }
    customer = await client.ws_connect(local(body["customer"]["events_url"]))
    assert (await admission_after_snapshot(customer))["admitted"] is False
    # WHIP and WHEP of the waiting customer are refused before the offer is read
    for key in ("whip_url", "whep_url"):
        resp = await client.post(
            local(body["customer"][key]),
            data="v=0\r\n",
            headers={**SDP, **bearer(body["customer"]["token"])},
        )
        problem = await assert_problem(resp, 409)
        assert "waiting room" in problem["detail"]
    # the waiting customer may write; the advisor reads it
    await customer.send_json({"type": "chat", "text": "Ich bin da."})
    seen = await next_event(advisor)
    while seen["type"] != "chat":
        seen = await next_event(advisor)
    assert seen["text"] == "Ich bin da."

    # only the owner lets in: the customer's own token cannot
    resp = await client.post(
        f"/api/sessions/{body['id']}/admission", headers=bearer(body["customer"]["token"])
    )
    await assert_problem(resp, 403)
    resp = await client.post(f"/api/sessions/{body['id']}/admission", headers=bearer(ADVISOR_TOKEN))
    assert resp.status == 200 and await resp.json() == {"admitted": True}
    for ws in (advisor, customer):
        event = await next_event(ws)
        while event["type"] != "admission":
            event = await next_event(ws)
        assert event == {"type": "admission", "role": "customer", "admitted": True}
    # again: nothing changes, nothing is sent
    resp = await client.post(f"/api/sessions/{body['id']}/admission", headers=bearer(ADVISOR_TOKEN))
    assert await resp.json() == {"admitted": True}
    # now the offer is read (and "v=0" refused as an offer)
    resp = await client.post(
        local(body["customer"]["whip_url"]),
        data="v=0\r\n",
        headers={**SDP, **bearer(body["customer"]["token"])},
    )
    await assert_problem(resp, 400)
    await advisor.close()
    await customer.close()


async def test_waiting_room_must_be_a_boolean(client: Client) -> None:
    resp = await client.post(
        "/api/sessions", json={"waiting_room": "yes"}, headers=bearer(ADVISOR_TOKEN)
    )
    problem = await assert_problem(resp, 400)
    assert "waiting_room" in problem["detail"]
    resp = await client.post("/api/sessions/nope/admission", headers=bearer(ADVISOR_TOKEN))
    await assert_problem(resp, 404)


async def test_typing_reaches_the_other_side_once_per_interval(client: Client) -> None:
    body = await create(client)
    advisor = await client.ws_connect(local(body["advisor"]["events_url"]))
    await read_snapshot(advisor)
    customer = await client.ws_connect(local(body["customer"]["events_url"]))
    await read_snapshot(customer)
    # the customer's arrival reaches the advisor first
    assert (await next_event(advisor))["type"] == "participant"
    for _ in range(5):  # one keystroke after the other
        await customer.send_json({"type": "typing"})
    assert await next_event(advisor) == {"type": "typing", "role": "customer"}
    await no_event(advisor)  # the four others fell within the interval
    await no_event(customer)  # nobody is told of their own typing
    await asyncio.sleep(TYPING_INTERVAL)
    await customer.send_json({"type": "typing"})
    assert await next_event(advisor) == {"type": "typing", "role": "customer"}
    await advisor.close()
    await customer.close()


# -- in the session core -----------------------------------------------------------------------


def test_nothing_of_a_waiting_customer_is_forwarded_until_let_in() -> None:
    consultation = Directory().create(waiting_room=True)
    stream = consultation.streams[Role.CUSTOMER]
    seen: list[Admission] = []
    consultation.listen(lambda e: seen.append(e) if isinstance(e, Admission) else None)
    consultation.attach(Role.CUSTOMER, Connection(kind="events", close=lambda: None))
    assert consultation.customer_state() == "lobby"
    consultation.set_media_state(Role.CUSTOMER, camera=True, microphone=True)
    assert not stream.video_enabled and not stream.audio_enabled
    assert consultation.admit(Role.CUSTOMER)
    assert stream.video_enabled and stream.audio_enabled
    assert consultation.customer_state() == "waiting"  # here, the advisor not yet
    assert not consultation.admit(Role.CUSTOMER)
    assert [e.admitted for e in seen] == [True]


def test_a_publisher_that_never_announces_is_held_until_let_in() -> None:
    # a phone leg or an encoder publishes without a media event: the gates decide
    consultation = Directory().create(waiting_room=True)
    stream = consultation.streams[Role.CUSTOMER]
    assert not stream.video_enabled and not stream.audio_enabled
    consultation.admit(Role.CUSTOMER)
    assert stream.video_enabled and stream.audio_enabled
    # without a waiting room nothing is held, as before
    plain = Directory().create().streams[Role.CUSTOMER]
    assert plain.video_enabled and plain.audio_enabled


def test_a_new_pin_sends_the_customer_back_to_the_waiting_room() -> None:
    directory = Directory()
    consultation = directory.create(waiting_room=True)
    consultation.admit(Role.CUSTOMER)
    directory.new_customer_access(consultation)
    assert not consultation.admitted(Role.CUSTOMER)
    # without a waiting room, a new PIN lets the holder in at once, as before
    plain = directory.create()
    directory.new_customer_access(plain)
    assert plain.admitted(Role.CUSTOMER)


def test_a_flash_customer_is_let_in_directly() -> None:
    consultation = Directory().create(waiting_room=True)
    consultation.attach(Role.CUSTOMER, Connection(kind="rtmpt", close=lambda: None))
    assert consultation.admitted(Role.CUSTOMER)


def test_the_overview_shows_what_a_waiting_customer_wrote() -> None:
    consultation = Directory().create(waiting_room=True)
    consultation.attach(Role.CUSTOMER, Connection(kind="events", close=lambda: None))
    assert lobby_message(consultation) is None
    consultation.chat(Role.ADVISOR, "Einen Moment bitte.")
    consultation.chat(Role.CUSTOMER, "Ich warte.")
    consultation.chat(Role.ADVISOR, "Gleich.")
    message = lobby_message(consultation)
    assert message is not None and message["text"] == "Ich warte."
    consultation.admit(Role.CUSTOMER)
    assert lobby_message(consultation) is None  # let in: nothing to show any more
