"""rtmp.session.RtmpSession (the ``consult`` application) against a real Gateway, with
fake transports: the peer is a client RtmpConnection pumped by hand, so every rule of
INTERFACE.md's RTMP section is checked without a socket or an event loop."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.config import Config
from gateway.consultation import Consultation, Role
from gateway.media import PublishedStream
from gateway.service import Gateway
from rtmp import messages as m
from rtmp.chunk import ChunkReader
from rtmp.connection import RtmpConnection
from rtmp.events import (
    CommandReceived,
    DataReceived,
    MediaReceived,
    ResultReceived,
    RtmpEvent,
)
from rtmp.messages import Message
from rtmp.session import PING_INTERVAL, RtmpSession, RtmpShared

S0S1S2 = 1 + 2 * 1536
UMLAUT_TEXT = "Grüße aus Köln – 10 € 😀"

# Tiny FLV tag bodies (FLV spec E.4.2/E.4.3). The trailing counter makes each unique so
# a test can tell which frame arrived.
AVC_CONFIG = b"\x17\x00\x00\x00\x00" + b"\x01\x64\x00\x1f\xff\xe1\x00\x04avcC"
AAC_CONFIG = b"\xaf\x00\x12\x10"


def keyframe(n: int) -> bytes:
    return b"\x17\x01\x00\x00\x00" + b"\x00\x00\x00\x05\x65KEY" + bytes([n])


def inter(n: int) -> bytes:
    return b"\x27\x01\x00\x00\x00" + b"\x00\x00\x00\x05\x41INT" + bytes([n])


def aac(n: int) -> bytes:
    return b"\xaf\x01" + b"\x21AAC" + bytes([n])


# --- fakes and helpers --------------------------------------------------------------------

# The RtmpShared of each test's gateway (the gateway is kept with it, so its id is not
# reused by a later test's gateway).
_SHARED: dict[int, tuple[Gateway, RtmpShared]] = {}


def shared_of(gateway: Gateway) -> RtmpShared:
    entry = _SHARED.get(id(gateway))
    if entry is None:
        entry = _SHARED[id(gateway)] = (gateway, RtmpShared(gateway.config.limits))
    return entry[1]


class Peer:
    """An RTMP client wired to an RtmpSession through a fake transport.

    ``write`` appends to a bytearray, ``close`` sets a flag, ``buffer_size`` reports
    ``self.buffered``; :meth:`pump` moves bytes both ways until both sides are quiet.
    Everything the session sends is also parsed into :attr:`raw` for checks on the wire.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        transport: str = "rtmp",
        shared: RtmpShared | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.written = bytearray()
        self.writes = 0  # calls of the transport's write
        self.transport_closed = False
        self.buffered = 0
        self.now = 0.0
        self.session = RtmpSession(
            gateway,
            # as the composition root does: one per gateway, for all its sessions
            shared=shared or shared_of(gateway),
            transport=transport,
            peer="198.51.100.7:50123",
            write=self._write,
            close=self._close,
            buffer_size=lambda: self.buffered,
            now=0.0,
            clock=clock,
        )
        self.client = RtmpConnection(is_client=True)
        self.events: list[RtmpEvent] = []
        self.raw: list[Message] = []
        self._tap = ChunkReader()
        self._handshake_left = S0S1S2

    def _write(self, data: bytes) -> None:
        self.writes += 1
        self.written.extend(data)

    def _close(self) -> None:
        self.transport_closed = True

    def pump(self) -> None:
        for _ in range(50):
            out = self.client.data_to_send()
            if out and not self.session.closed:
                self.session.receive_data(out, now=self.now)
            data = bytes(self.written)
            self.written.clear()
            if data:
                self._watch(data)
                self.client.receive_data(data)
                self.events.extend(self.client.events())
            if not out and not data:
                return
        raise AssertionError("client and session never went quiet")

    def _watch(self, data: bytes) -> None:
        skip = min(self._handshake_left, len(data))
        self._handshake_left -= skip
        if len(data) > skip:
            self.raw.extend(self._tap.feed(data[skip:]))

    # -- NetConnection / NetStream, as Flash Player does it ---------------------------------
    def connect(
        self,
        *extra: Any,
        app: str = "consult",
        tc_url: str = "rtmp://127.0.0.1:1935/consult",
        object_encoding: int = 3,
    ) -> Any:
        """``connect``; returns the ``_result``/``_error`` info object."""
        tid = self.client.connect(app, tc_url, *extra, object_encoding=object_encoding)
        self.pump()
        result = self.result(tid)
        return result.args[0] if result.args else None

    def call(self, name: str, *args: Any) -> ResultReceived:
        tid = self.client.call(name, *args)
        self.pump()
        return self.result(tid)

    def result(self, tid: float) -> ResultReceived:
        found = [e for e in self.events if isinstance(e, ResultReceived)]
        found = [e for e in found if e.transaction_id == tid]
        assert len(found) == 1, f"expected one answer to transaction {tid}: {self.events}"
        return found[0]

    def create_stream(self) -> int:
        result = self.call("createStream")
        assert not result.error
        return int(result.args[0])

    def publish(self, name: str) -> int:
        sid = self.create_stream()
        self.client.send_command(sid, "publish", 0.0, None, name, "live", csid=8)
        self.pump()
        return sid

    def play(self, name: str) -> int:
        sid = self.create_stream()
        self.client.send_command(sid, "play", 0.0, None, name, -2000.0, csid=8)
        self.client.send(m.user_control(m.UC_SET_BUFFER_LENGTH, sid, 1000))
        self.pump()
        return sid

    def send_media(self, sid: int, type_id: int, timestamp: int, payload: bytes) -> None:
        self.client.send_media(sid, type_id, timestamp, payload)
        self.pump()

    # -- what arrived ----------------------------------------------------------------------
    def statuses(self) -> list[str]:
        return [
            e.args[0]["code"]
            for e in self.events
            if isinstance(e, CommandReceived) and e.name == "onStatus"
        ]

    def calls(self, name: str) -> list[CommandReceived]:
        return [e for e in self.events if isinstance(e, CommandReceived) and e.name == name]

    def media(self) -> list[tuple[int, bytes]]:
        return [(e.type_id, e.payload) for e in self.events if isinstance(e, MediaReceived)]

    def take_media(self) -> list[tuple[int, bytes]]:
        """Media received so far; forgets it so the next call shows only what is new."""
        media = self.media()
        self.events = [e for e in self.events if not isinstance(e, MediaReceived)]
        return media


@pytest.fixture
def gateway() -> Gateway:
    return Gateway.from_config(Config())


@pytest.fixture
def consultation(gateway: Gateway) -> Consultation:
    return gateway.directory.create()


def token(consultation: Consultation, role: Role) -> str:
    return consultation.participants[role].token


def connections(consultation: Consultation, role: Role) -> list[dict[str, Any]]:
    participant: dict[str, Any] = consultation.describe()["participants"][str(role)]
    return list(participant["connections"])


def publishing_customer(gateway: Gateway, consultation: Consultation) -> tuple[Peer, int]:
    customer = Peer(gateway)
    assert customer.connect(token(consultation, Role.CUSTOMER))["code"].endswith("Success")
    sid = customer.publish("customer")
    assert customer.statuses()[-1] == "NetStream.Publish.Start"
    return customer, sid


def playing_advisor(gateway: Gateway, consultation: Consultation) -> tuple[Peer, int]:
    advisor = Peer(gateway)
    assert advisor.connect(token(consultation, Role.ADVISOR))["code"].endswith("Success")
    sid = advisor.play("customer")
    assert "NetStream.Play.Start" in advisor.statuses()
    return advisor, sid


# --- connect and authorisation ------------------------------------------------------------


def test_connect_with_token_as_first_argument_binds_the_participant(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    assert connections(consultation, Role.CUSTOMER) == []

    info = peer.connect(token(consultation, Role.CUSTOMER))

    assert info["code"] == "NetConnection.Connect.Success"
    assert info["objectEncoding"] == 3.0
    (conn,) = connections(consultation, Role.CUSTOMER)
    assert conn["kind"] == "rtmp"
    assert consultation.describe()["participants"]["customer"]["present"] is True
    assert connections(consultation, Role.ADVISOR) == []
    assert not peer.transport_closed


def test_connect_with_token_query_on_the_app_name(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    info = peer.connect(app=f"consult?token={token(consultation, Role.ADVISOR)}")

    assert info["code"] == "NetConnection.Connect.Success", "the query is not part of the app"
    (conn,) = connections(consultation, Role.ADVISOR)
    assert conn["kind"] == "rtmp"


def test_connect_with_token_query_on_the_tc_url(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    tc_url = f"rtmp://127.0.0.1:1935/consult?token={token(consultation, Role.CUSTOMER)}"
    info = peer.connect(tc_url=tc_url)

    assert info["code"] == "NetConnection.Connect.Success"
    assert [c["kind"] for c in connections(consultation, Role.CUSTOMER)] == ["rtmp"]


@pytest.mark.parametrize("app", ["live", "consultation", "other?token=x"])
def test_connect_to_another_application_is_rejected(gateway: Gateway, app: str) -> None:
    peer = Peer(gateway)
    info = peer.connect(app=app)
    assert info["code"] == "NetConnection.Connect.Rejected"
    assert peer.transport_closed


def test_connect_without_token_is_accepted_and_publish_brings_the_token(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    assert peer.connect()["code"] == "NetConnection.Connect.Success"
    assert connections(consultation, Role.CUSTOMER) == [], "nobody to bind to yet"

    peer.publish(f"customer?token={token(consultation, Role.CUSTOMER)}")

    assert peer.statuses() == ["NetStream.Publish.Start"]
    assert consultation.streams[Role.CUSTOMER].live
    assert [c["kind"] for c in connections(consultation, Role.CUSTOMER)] == ["rtmp"]
    assert not peer.transport_closed


def test_wrong_token_at_connect_is_rejected_with_a_description_then_closed(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    tid = peer.client.connect("consult", "rtmp://127.0.0.1:1935/consult", "not-a-token")
    peer.pump()

    result = peer.result(tid)
    assert result.error
    assert result.args[0]["code"] == "NetConnection.Connect.Rejected"
    assert "token" in result.args[0]["description"]
    assert peer.transport_closed and peer.session.closed
    assert connections(consultation, Role.CUSTOMER) == []


def test_ended_consultation_token_is_rejected_at_connect(
    gateway: Gateway, consultation: Consultation
) -> None:
    customer_token = token(consultation, Role.CUSTOMER)
    gateway.directory.end(consultation.id)
    peer = Peer(gateway)
    assert peer.connect(customer_token)["code"] == "NetConnection.Connect.Rejected"
    assert peer.transport_closed


def test_publishing_the_other_roles_name_is_bad_name_then_closed(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    peer.connect(token(consultation, Role.CUSTOMER))
    peer.publish("advisor")

    assert peer.statuses() == ["NetStream.Publish.BadName"]
    assert peer.transport_closed
    assert not consultation.streams[Role.ADVISOR].live
    assert not consultation.streams[Role.CUSTOMER].live


def test_publish_with_a_wrong_token_in_the_stream_name_is_bad_name(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    peer.connect()
    peer.publish("customer?token=wrong")
    assert peer.statuses() == ["NetStream.Publish.BadName"]
    assert peer.transport_closed
    assert not consultation.streams[Role.CUSTOMER].live


def test_play_with_a_wrong_token_fails_then_closes(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    peer.connect()
    peer.play("customer?token=wrong")
    assert peer.statuses() == ["NetStream.Play.Failed"]
    assert peer.transport_closed
    assert consultation.streams[Role.CUSTOMER].receivers == []


def test_playing_ones_own_stream_fails(gateway: Gateway, consultation: Consultation) -> None:
    peer = Peer(gateway)
    peer.connect(token(consultation, Role.CUSTOMER))
    peer.play("customer")
    assert peer.statuses() == ["NetStream.Play.Failed"]


# --- hostile but well-formed commands: one closed connection, never an exception -------------


def test_seventeenth_stream_closes_the_connection_instead_of_raising(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    peer.connect(token(consultation, Role.CUSTOMER))
    sids = [peer.create_stream() for _ in range(16)]
    assert sorted(sids) == list(range(1, 17))

    peer.client.call("createStream")
    peer.pump()  # must not raise out of RtmpSession.receive_data

    assert peer.transport_closed and peer.session.closed
    assert connections(consultation, Role.CUSTOMER) == []


@pytest.mark.parametrize("stream_id", [math.inf, -math.inf, math.nan, 1e300])
def test_delete_stream_with_an_absurd_stream_id_is_harmless(
    gateway: Gateway, consultation: Consultation, stream_id: float
) -> None:
    peer = Peer(gateway)
    peer.connect(token(consultation, Role.CUSTOMER))
    peer.client.call("deleteStream", stream_id)
    peer.pump()  # must not raise
    assert not peer.session.closed
    assert not peer.call("createStream").error


def test_connect_with_non_finite_codec_capabilities_is_accepted(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    tid = peer.client.connect(
        "consult",
        "rtmp://127.0.0.1:1935/consult",
        token(consultation, Role.CUSTOMER),
        video_codecs=math.inf,
        audio_codecs=math.nan,
    )
    peer.pump()  # must not raise
    assert not peer.result(tid).error
    assert not peer.session.supports_h264 and not peer.session.supports_aac


# --- publish and play ------------------------------------------------------------------------


def test_publish_starts_the_stream(gateway: Gateway, consultation: Consultation) -> None:
    customer, sid = publishing_customer(gateway, consultation)
    assert customer.statuses() == ["NetStream.Publish.Start"]
    begin = [x for x in customer.raw if x.type_id == m.USER_CONTROL]
    assert (m.UC_STREAM_BEGIN, (sid,)) in [m.parse_user_control(x.payload) for x in begin]
    stream = consultation.describe()["streams"]["customer"]
    assert stream["live"] is True and stream["via"] == "rtmp"


def test_play_before_publish_waits_for_publish_notify_and_gets_unpublish_notify(
    gateway: Gateway, consultation: Consultation
) -> None:
    advisor, _ = playing_advisor(gateway, consultation)
    assert advisor.statuses() == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    assert not advisor.transport_closed, "playing a stream nobody publishes yet waits"

    customer, csid = publishing_customer(gateway, consultation)
    advisor.pump()
    assert advisor.statuses()[2:] == ["NetStream.Play.PublishNotify"]

    customer.send_media(csid, m.VIDEO, 0, AVC_CONFIG)
    customer.send_media(csid, m.VIDEO, 0, keyframe(1))
    advisor.pump()
    assert advisor.media() == [(m.VIDEO, AVC_CONFIG), (m.VIDEO, keyframe(1))]

    customer.call("FCUnpublish", "customer")
    advisor.pump()
    assert advisor.statuses()[3:] == ["NetStream.Play.UnpublishNotify"]
    assert "NetStream.Unpublish.Success" in customer.statuses()

    # and again, as a live stream does when its publisher comes back
    customer.client.send_command(csid, "publish", 0.0, None, "customer", "live", csid=8)
    customer.pump()
    advisor.pump()
    assert advisor.statuses()[4:] == ["NetStream.Play.PublishNotify"]


def test_late_player_gets_metadata_then_avc_and_aac_headers_then_gop_from_its_keyframe(
    gateway: Gateway, consultation: Consultation
) -> None:
    customer, sid = publishing_customer(gateway, consultation)
    customer.client.send_data(
        sid, ["@setDataFrame", "onMetaData", {"width": 320.0, "videocodecid": 7.0}]
    )
    customer.send_media(sid, m.VIDEO, 0, AVC_CONFIG)
    customer.send_media(sid, m.AUDIO, 0, AAC_CONFIG)
    customer.send_media(sid, m.VIDEO, 0, inter(0))  # before any keyframe: useless to a player
    customer.send_media(sid, m.VIDEO, 40, keyframe(1))
    customer.send_media(sid, m.AUDIO, 46, aac(1))
    customer.send_media(sid, m.VIDEO, 80, inter(2))
    customer.send_media(sid, m.AUDIO, 69, aac(2))
    assert not customer.transport_closed

    advisor, _ = playing_advisor(gateway, consultation)

    assert "NetStream.Play.PublishNotify" not in advisor.statuses(), "it was live already"
    metadata = [e for e in advisor.events if isinstance(e, DataReceived)]
    # @setDataFrame is the publisher's wrapper: the player gets plain onMetaData
    assert metadata[-1].values == ["onMetaData", {"width": 320.0, "videocodecid": 7.0}]
    arrived = [
        (e.type_id, e.payload) if isinstance(e, MediaReceived) else "onMetaData"
        for e in advisor.events
        if isinstance(e, MediaReceived) or e is metadata[-1]
    ]
    assert arrived == [
        "onMetaData",
        (m.VIDEO, AVC_CONFIG),
        (m.AUDIO, AAC_CONFIG),
        (m.VIDEO, keyframe(1)),
        (m.AUDIO, aac(1)),
        (m.VIDEO, inter(2)),
        (m.AUDIO, aac(2)),
    ]
    timestamps = [e.timestamp for e in advisor.events if isinstance(e, MediaReceived)]
    assert timestamps[2:] == [40, 46, 80, 69], "cached frames keep their timestamps"


def test_live_frames_reach_a_player_in_order(gateway: Gateway, consultation: Consultation) -> None:
    advisor, _ = playing_advisor(gateway, consultation)
    customer, sid = publishing_customer(gateway, consultation)
    sent = [
        (m.VIDEO, AVC_CONFIG),
        (m.AUDIO, AAC_CONFIG),
        (m.VIDEO, keyframe(1)),
        (m.AUDIO, aac(1)),
        (m.VIDEO, inter(2)),
        (m.VIDEO, inter(3)),
    ]
    for i, (type_id, payload) in enumerate(sent):
        customer.send_media(sid, type_id, i * 20, payload)
    advisor.pump()
    assert advisor.media() == sent


@pytest.mark.parametrize("same_gateway_state", [True, False])
def test_one_read_of_the_publisher_is_one_write_to_a_player(
    gateway: Gateway, consultation: Consultation, same_gateway_state: bool
) -> None:
    """The write batch is the gateway's RtmpShared, passed to every session: the
    messages one read of a publisher completes reach a player sharing it in one write
    (not one per message); a session given a state of its own writes per message."""
    own = None if same_gateway_state else RtmpShared(gateway.config.limits)
    advisor = Peer(gateway, shared=own)
    assert advisor.connect(token(consultation, Role.ADVISOR))["code"].endswith("Success")
    advisor.play("customer")
    customer, sid = publishing_customer(gateway, consultation)
    customer.send_media(sid, m.VIDEO, 0, AVC_CONFIG)
    advisor.pump()
    sent = [(m.VIDEO, keyframe(1)), (m.VIDEO, inter(2)), (m.VIDEO, inter(3))]
    for i, (type_id, payload) in enumerate(sent):
        customer.client.send_media(sid, type_id, 20 + i * 20, payload)
    before = advisor.writes
    customer.session.receive_data(customer.client.data_to_send())  # one read, three frames
    assert advisor.writes - before == (1 if same_gateway_state else 3)
    advisor.pump()
    assert advisor.media()[-3:] == sent


def test_a_player_backlog_is_asked_once_per_publisher_read(
    gateway: Gateway, consultation: Consultation
) -> None:
    """Issue 14: the socket backlog (a system call on a real transport) is asked once per
    player and publisher read, not once per message: what a read gives the player waits
    in its output until the read ends, so the backlog cannot change in between. A message
    outside a read (a transcoder's output) is checked on its own."""
    advisor = Peer(gateway)
    asked = [0]

    def backlog() -> int:
        asked[0] += 1
        return advisor.buffered

    advisor.session.buffer_size = backlog
    assert advisor.connect(token(consultation, Role.ADVISOR))["code"].endswith("Success")
    advisor.play("customer")
    customer, sid = publishing_customer(gateway, consultation)
    customer.send_media(sid, m.VIDEO, 0, AVC_CONFIG)
    advisor.pump()
    sent = [(m.VIDEO, keyframe(1)), (m.AUDIO, aac(1)), (m.VIDEO, inter(2)), (m.VIDEO, inter(3))]
    for i, (type_id, payload) in enumerate(sent):
        customer.client.send_media(sid, type_id, 20 + i * 20, payload)
    before = asked[0]
    customer.session.receive_data(customer.client.data_to_send())  # one read, four messages
    assert asked[0] - before == 1
    advisor.pump()
    assert advisor.media()[-4:] == sent
    # a player already over its byte limit in this read still gets nothing of it
    advisor.buffered = gateway.config.limits.player_buffer_bytes + 1
    for i in range(2):
        customer.client.send_media(sid, m.VIDEO, 100 + i * 20, inter(4 + i))
    customer.session.receive_data(customer.client.data_to_send())
    advisor.pump()
    assert advisor.media()[-4:] == sent


def test_slow_player_drops_without_stalling_the_publisher_and_resumes_at_a_keyframe(
    gateway: Gateway, consultation: Consultation
) -> None:
    customer, sid = publishing_customer(gateway, consultation)
    advisor, _ = playing_advisor(gateway, consultation)
    stream: PublishedStream = consultation.streams[Role.CUSTOMER]
    limit = gateway.config.limits.player_buffer_bytes

    for type_id, payload in [(m.VIDEO, AVC_CONFIG), (m.AUDIO, AAC_CONFIG), (m.VIDEO, keyframe(1))]:
        customer.send_media(sid, type_id, 0, payload)
    advisor.pump()
    assert advisor.take_media()[-1] == (m.VIDEO, keyframe(1))

    # The player's socket buffer is full: nothing may be queued for it.
    advisor.buffered = limit + 1
    units_before = stream.stats.units_in
    slow = [(m.VIDEO, inter(2)), (m.AUDIO, aac(2)), (m.VIDEO, keyframe(3)), (m.VIDEO, inter(4))]
    for i, (type_id, payload) in enumerate(slow):
        customer.send_media(sid, type_id, 100 + i * 20, payload)
    assert advisor.written == bytearray(), "nothing written to a player over its limit"
    # inter(2) and keyframe(3) were offered and refused; after a refusal the stream waits
    # for a keyframe, so aac(2) and inter(4) were not even offered.
    assert stream.stats.dropped == 2
    assert stream.stats.units_in == units_before + len(slow), "the publisher never waits"
    assert not customer.call("createStream").error, "the publisher's session still answers"

    # The buffer drains: the next frames wait for a keyframe, then everything flows.
    advisor.buffered = 0
    drained = [
        (m.VIDEO, inter(5)),
        (m.AUDIO, aac(5)),
        (m.VIDEO, keyframe(6)),
        (m.AUDIO, aac(6)),
        (m.VIDEO, inter(7)),
    ]
    for i, (type_id, payload) in enumerate(drained):
        customer.send_media(sid, type_id, 300 + i * 20, payload)
    advisor.pump()
    assert advisor.take_media() == [(m.VIDEO, keyframe(6)), (m.AUDIO, aac(6)), (m.VIDEO, inter(7))]
    assert stream.stats.dropped == 2
    assert not advisor.transport_closed, "a slow player is not disconnected"


def test_player_behind_live_by_more_than_max_lag_drops_on_the_sessions_clock(
    gateway: Gateway, consultation: Consultation
) -> None:
    """Time behind live (player_max_lag) on a fake clock, no sleeps: a player whose bytes
    sit unread gets frames until the oldest unread byte is older than max_lag, then drops
    until it has caught up and a keyframe comes."""
    t = [0.0]
    customer, sid = publishing_customer(gateway, consultation)
    advisor = Peer(gateway, clock=lambda: t[0])
    assert advisor.connect(token(consultation, Role.ADVISOR))["code"].endswith("Success")
    advisor.play("customer")
    stream: PublishedStream = consultation.streams[Role.CUSTOMER]
    max_lag = gateway.config.limits.player_max_lag
    for type_id, payload in [(m.VIDEO, AVC_CONFIG), (m.VIDEO, keyframe(1))]:
        customer.send_media(sid, type_id, 0, payload)
    advisor.pump()
    advisor.take_media()

    def send(ts: int, payload: bytes) -> None:
        customer.send_media(sid, m.VIDEO, ts, payload)
        advisor.buffered = len(advisor.written)  # the player reads nothing: all unread

    send(40, inter(2))  # written at t=0
    t[0] = max_lag - 0.1
    send(80, inter(3))  # the oldest unread byte waits max_lag - 0.1: still sent
    assert stream.stats.dropped == 0
    t[0] = max_lag + 0.1
    send(120, inter(4))  # now it waits longer than max_lag: dropped, bytes are not
    assert stream.stats.dropped == 1
    assert advisor.session.output.lag(advisor.buffered, t[0]) == pytest.approx(max_lag + 0.1)
    advisor.buffered = 0
    advisor.pump()  # the player reads everything: no lag, the next keyframe flows
    send(160, keyframe(5))
    advisor.pump()
    assert advisor.take_media() == [
        (m.VIDEO, inter(2)),
        (m.VIDEO, inter(3)),
        (m.VIDEO, keyframe(5)),
    ]


# --- consultation RPC -------------------------------------------------------------------------


@pytest.mark.parametrize("object_encoding", [0, 3])
def test_chat_reaches_the_other_participant_as_on_chat_with_utf8_intact(
    gateway: Gateway, consultation: Consultation, object_encoding: int
) -> None:
    customer = Peer(gateway)
    customer.connect(token(consultation, Role.CUSTOMER), object_encoding=object_encoding)
    advisor = Peer(gateway)
    advisor.connect(token(consultation, Role.ADVISOR), object_encoding=object_encoding)
    seen: list[dict[str, Any]] = []
    consultation.subscribe(seen.append)

    result = customer.call("chat", UMLAUT_TEXT)
    advisor.pump()

    assert not result.error and result.args == [True]
    (on_chat,) = advisor.calls("onChat")
    sender, text, ts = on_chat.args
    assert (sender, text) == ("customer", UMLAUT_TEXT)
    assert isinstance(ts, float) and ts > 1.6e9
    assert on_chat.amf3 is (object_encoding == 3)
    assert customer.calls("onChat") == [], "the sender's client shows its own message"
    chats = [e for e in seen if e["type"] == "chat"]
    assert chats == [{"type": "chat", "from": "customer", "text": UMLAUT_TEXT, "ts": ts}]


def test_chat_that_is_too_long_is_a_call_error(
    gateway: Gateway, consultation: Consultation
) -> None:
    customer = Peer(gateway)
    customer.connect(token(consultation, Role.CUSTOMER))
    result = customer.call("chat", "x" * (gateway.config.limits.chat_max_chars + 1))
    assert result.error and result.args[0]["code"] == "NetConnection.Call.Failed"
    assert not customer.transport_closed


def test_media_call_closes_the_gates_and_stops_forwarding_video(
    gateway: Gateway, consultation: Consultation
) -> None:
    customer, sid = publishing_customer(gateway, consultation)
    advisor, _ = playing_advisor(gateway, consultation)
    seen: list[dict[str, Any]] = []
    consultation.subscribe(seen.append)
    stream = consultation.streams[Role.CUSTOMER]
    customer.send_media(sid, m.VIDEO, 0, AVC_CONFIG)
    customer.send_media(sid, m.VIDEO, 0, keyframe(1))
    advisor.pump()
    assert advisor.take_media()[-1] == (m.VIDEO, keyframe(1))

    result = customer.call("media", False, False)

    assert not result.error
    assert stream.video_enabled is False and stream.audio_enabled is False
    (media_event,) = [e for e in seen if e["type"] == "media"]
    assert media_event["role"] == "customer"
    assert (media_event["camera"], media_event["microphone"]) == (False, False)
    advisor.pump()
    notices = [c.args[0] for c in advisor.calls("onSessionEvent")]
    assert [n for n in notices if n["type"] == "media"] == [media_event], "the other side hears"

    customer.send_media(sid, m.VIDEO, 40, keyframe(2))
    customer.send_media(sid, m.VIDEO, 80, inter(3))
    customer.send_media(sid, m.AUDIO, 90, aac(3))
    advisor.pump()
    assert advisor.take_media() == [], "a closed gate forwards nothing"

    customer.call("media", True, True)
    customer.send_media(sid, m.VIDEO, 120, inter(4))
    customer.send_media(sid, m.VIDEO, 160, keyframe(5))
    advisor.pump()
    assert advisor.take_media() == [(m.VIDEO, keyframe(5))], "reopened video starts at a keyframe"


# --- timers ---------------------------------------------------------------------------------------


def test_handshake_timeout_closes(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    peer = Peer(gateway)
    c0c1 = peer.client.data_to_send()
    peer.session.receive_data(c0c1[:100], now=1.0)  # a client that stalls mid-handshake
    timeout = gateway.config.limits.handshake_timeout

    peer.session.tick(timeout - 0.5)
    assert not peer.transport_closed
    with caplog.at_level(logging.WARNING, logger="rtmp"):
        peer.session.tick(timeout + 0.5)
    assert peer.transport_closed and peer.session.closed
    assert "handshake timeout" in caplog.text


def test_idle_timeout_closes_and_traffic_postpones_it(
    gateway: Gateway, consultation: Consultation, caplog: pytest.LogCaptureFixture
) -> None:
    peer = Peer(gateway)
    peer.connect(token(consultation, Role.CUSTOMER))
    idle = gateway.config.limits.idle_timeout

    peer.now = idle - 10
    peer.call("createStream")  # traffic at idle - 10
    peer.session.tick(idle + 5)
    assert not peer.transport_closed
    with caplog.at_level(logging.WARNING, logger="rtmp"):
        peer.session.tick(2 * idle - 10 + 0.5)
    assert peer.transport_closed
    assert "idle timeout" in caplog.text
    assert connections(consultation, Role.CUSTOMER) == []


def test_a_ping_request_is_sent_every_30_seconds(
    gateway: Gateway, consultation: Consultation
) -> None:
    peer = Peer(gateway)
    peer.connect(token(consultation, Role.CUSTOMER))

    def pings() -> list[int]:
        peer.pump()
        controls = [m.parse_user_control(x.payload) for x in peer.raw if x.type_id == 4]
        return [values[0] for event, values in controls if event == m.UC_PING_REQUEST]

    assert PING_INTERVAL == 30.0
    for now in (1.0, 15.0, 29.9):
        peer.session.tick(now)
    assert pings() == []
    peer.session.tick(30.0)
    assert pings() == [30_000]
    peer.session.tick(45.0)
    peer.session.tick(59.0)
    assert pings() == [30_000]
    peer.session.tick(60.0)
    peer.session.tick(90.5)
    assert pings() == [30_000, 60_000, 90_500]
    assert not peer.transport_closed


# --- closing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "connection_lost"])
def test_closing_the_publishers_session_stops_the_stream_and_detaches_the_participant(
    gateway: Gateway, consultation: Consultation, how: str
) -> None:
    customer, _ = publishing_customer(gateway, consultation)
    advisor, _ = playing_advisor(gateway, consultation)
    stream = consultation.streams[Role.CUSTOMER]
    assert stream.live and connections(consultation, Role.CUSTOMER)

    getattr(customer.session, how)()

    assert stream.live is False
    assert connections(consultation, Role.CUSTOMER) == []
    assert consultation.describe()["participants"]["customer"]["present"] is False
    assert customer.transport_closed is (how == "close")
    advisor.pump()
    assert advisor.statuses()[-1] == "NetStream.Play.UnpublishNotify"
    assert connections(consultation, Role.ADVISOR), "the other participant stays"


def test_ending_the_consultation_tells_the_client_and_closes(
    gateway: Gateway, consultation: Consultation
) -> None:
    customer, _ = publishing_customer(gateway, consultation)

    gateway.directory.end(consultation.id)

    customer.pump()
    notices = [c.args[0]["type"] for c in customer.calls("onSessionEvent")]
    assert notices[-1] == "session_ended"
    assert customer.transport_closed
    assert not consultation.streams[Role.CUSTOMER].live


def test_publishing_without_announcing_devices_counts_as_camera_and_microphone_on() -> None:
    """An encoder (ffmpeg) never calls media(): its publishing is the switch; a client
    that announces (the Flash client, the pages) is taken at its word."""
    from gateway.config import Config
    from gateway.consultation import Role
    from gateway.service import Gateway

    gateway = Gateway.from_config(Config())
    consultation = gateway.directory.create()
    events: list[dict[str, object]] = []
    consultation.subscribe(events.append)
    stream = consultation.streams[Role.CUSTOMER]
    stream.start("rtmp")
    customer = consultation.participants[Role.CUSTOMER]
    assert customer.camera and customer.microphone
    assert events[-1]["camera"] is True
    stream.stop()
    assert not customer.camera and not customer.microphone
    consultation.set_media_state(Role.CUSTOMER, False, True)
    stream.start("webrtc")
    assert not customer.camera and customer.microphone
    assert not stream.video_enabled and stream.audio_enabled
