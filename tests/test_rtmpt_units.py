"""rtmp.rtmpt (the sans-I/O RTMPT tunnel) without HTTP: fake sessions for the tunnel's
own rules, a real RtmpSession and a client RtmpConnection for the RTMP carried inside,
and a hypothesis fuzz test of arbitrary request sequences."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config
from gateway.consultation import Role
from gateway.service import Gateway
from rtmp.connection import RtmpConnection
from rtmp.events import MediaReceived, ResultReceived
from rtmp.rtmpt import (
    CLOSED_LINGER,
    EMPTY_POLLS_PER_STEP,
    POLL_DELAYS,
    Reply,
    RtmptTunnels,
    Tunnel,
)
from rtmp.session import RtmpSession, RtmpShared
from tests.fuzzing import examples


class FakeSession:
    """Records what the tunnel does to it; ``reply`` is written for every input."""

    def __init__(self, tunnel: Tunnel, reply: bytes = b"") -> None:
        self.tunnel = tunnel
        self.reply = reply
        self.received = bytearray()
        self.closed = False
        self.aborted: str | None = None
        self.lost = False
        self.ticks: list[float] = []

    def receive_data(self, data: bytes, now: float | None = None) -> None:
        self.received += data
        if self.reply:
            self.tunnel.write(self.reply)

    def tick(self, now: float) -> None:
        self.ticks.append(now)

    def abort(self, reason: str) -> None:
        self.aborted = reason
        self.closed = True
        self.tunnel.close_transport()

    def connection_lost(self) -> None:
        self.lost = True
        self.closed = True

    def close(self) -> None:
        self.closed = True
        self.tunnel.close_transport()


class FakeAdmission:
    def __init__(self, allow: int = 1000) -> None:
        self.allow = allow
        self.count = 0

    def admit(self, address: str, now: float) -> str | None:
        if self.count >= self.allow:
            return "too many connections from this address"
        self.count += 1
        return None

    def release(self, address: str) -> None:
        self.count -= 1


def make(
    reply: bytes = b"", *, max_pending: int = 1000, max_body: int = 5000, allow: int = 1000
) -> tuple[RtmptTunnels, list[FakeSession], FakeAdmission]:
    sessions: list[FakeSession] = []
    admission = FakeAdmission(allow)

    def factory(tunnel: Tunnel) -> FakeSession:
        session = FakeSession(tunnel, reply)
        sessions.append(session)
        return session

    tunnels = RtmptTunnels(
        factory,
        idle_timeout=10.0,
        max_pending=max_pending,
        max_body=max_body,
        admission=admission,
    )
    return tunnels, sessions, admission


def open_id(tunnels: RtmptTunnels, now: float = 0.0, transport: str = "rtmpt") -> str:
    reply = tunnels.open(peer="192.0.2.1", transport=transport, now=now)
    assert reply.status == 200
    assert reply.body.endswith(b"\n")
    return reply.body[:-1].decode()


# -- the protocol -----------------------------------------------------------------------------


def test_open_answers_an_unguessable_id_and_a_newline_without_polling_byte() -> None:
    tunnels, sessions, _ = make()
    ids = {open_id(tunnels) for _ in range(50)}
    assert len(ids) == 50
    for tunnel_id in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", tunnel_id)  # 128 random bits
    assert len(sessions) == 50 and len(tunnels) == 50


def test_send_feeds_the_session_and_answers_polling_byte_then_pending_bytes() -> None:
    tunnels, sessions, _ = make(reply=b"S0S1S2")
    tid = open_id(tunnels)
    reply = tunnels.send(tid, "0", b"C0C1", 1.0)
    assert reply == Reply(200, b"\x01S0S1S2")
    assert sessions[0].received == b"C0C1"
    # nothing pending now: just the byte
    assert tunnels.idle(tid, "1", 1.1) == Reply(200, b"\x01")


def test_polling_delay_grows_while_idle_up_to_0x21_and_resets_with_data() -> None:
    tunnels, _, _ = make(reply=b"x")
    tid = open_id(tunnels)
    seen = [tunnels.idle(tid, str(seq), seq * 0.05).body[0] for seq in range(40)]
    assert seen[0] == 0x01
    assert seen == sorted(seen), "never shrinks while idle"
    assert set(seen) == set(POLL_DELAYS)
    assert seen[-1] == 0x21
    assert seen.count(0x01) == EMPTY_POLLS_PER_STEP - 1
    # data either way brings it back to 0x01
    assert tunnels.send(tid, "40", b"abc", 3.0).body == b"\x01x"
    assert tunnels.idle(tid, "41", 3.1).body == b"\x01"


def test_idle_poll_with_nothing_pending_may_be_held_until_output_arrives() -> None:
    tunnels, sessions, _ = make()
    tid = open_id(tunnels)
    held = tunnels.idle_or_wait(tid, "0", 1.0)
    assert isinstance(held, Tunnel)
    woken: list[bool] = []
    held.waiter = lambda: woken.append(True)
    held.write(b"media")
    assert woken == [True] and held.waiter is None, "called once"
    assert tunnels.collect(held) == Reply(200, b"\x01media")
    # pending output: answered at once, no hold
    tunnels.tunnels[tid].write(b"more")
    assert tunnels.idle_or_wait(tid, "1", 1.1) == Reply(200, b"\x01more")
    # a held poll whose tunnel ends meanwhile is woken and gets 404
    held = tunnels.idle_or_wait(tid, "2", 1.2)
    assert isinstance(held, Tunnel)
    held.waiter = lambda: woken.append(True)
    assert tunnels.close(tid, "3", 1.2).status == 200
    assert len(woken) == 2
    assert tunnels.collect(held).status == 404
    # and one whose session closes with last words gets them
    tid = open_id(tunnels)
    held = tunnels.idle_or_wait(tid, "0", 2.0)
    assert isinstance(held, Tunnel)
    held.waiter = lambda: woken.append(True)
    held.write(b"bye")
    sessions[-1].abort("session ended")
    assert tunnels.collect(held) == Reply(200, b"\x01bye")
    assert tid not in tunnels.tunnels


def test_unknown_or_malformed_id_is_404() -> None:
    tunnels, _, _ = make()
    open_id(tunnels)
    for bad in ("0" * 32, "nonsense", "", "../../etc", "A" * 32, "f" * 33):
        assert tunnels.send(bad, "0", b"x", 1.0).status == 404
        assert tunnels.idle(bad, "0", 1.0).status == 404
        assert tunnels.close(bad, "0", 1.0).status == 404


def test_sequence_numbers_tolerated_as_clients_send_them_bad_ones_refused() -> None:
    tunnels, sessions, _ = make()
    tid = open_id(tunnels)
    # ffmpeg and librtmp count from 0 after /open/1; gaps (a lost request) are fine
    assert tunnels.send(tid, "0", b"a", 1.0).status == 200
    assert tunnels.idle(tid, "1", 1.0).status == 200
    assert tunnels.send(tid, "5", b"b", 1.0).status == 200
    for bad in ("5", "4", "-1", "x", "", "1e3", "99999999999", str(2**31), " 7", "٣"):
        reply = tunnels.send(tid, bad, b"EVIL", 1.0)
        assert reply.status == 400, bad
        assert b"sequence" in reply.body
    assert sessions[0].received == b"ab", "a refused request feeds nothing"
    assert tunnels.send(tid, "6", b"c", 1.0).status == 200
    assert sessions[0].received == b"abc"
    # an /idle carries no bytes: one that overtook a /send on another connection is fine
    assert tunnels.idle(tid, "3", 1.0).status == 200
    assert tunnels.idle(tid, "x", 1.0).status == 400
    assert tunnels.send(tid, "6", b"d", 1.0).status == 400, "still after 6"
    assert tunnels.send(tid, "7", b"d", 1.0).status == 200
    assert sessions[0].received == b"abcd"
    assert not sessions[0].closed


def test_body_over_the_cap_is_413_and_feeds_nothing() -> None:
    tunnels, sessions, _ = make(max_body=100)
    tid = open_id(tunnels)
    assert tunnels.send(tid, "0", b"x" * 101, 1.0).status == 413
    assert sessions[0].received == b""
    assert tunnels.send(tid, "1", b"x" * 100, 1.0).status == 200


def test_close_ends_the_session_and_forgets_the_tunnel() -> None:
    tunnels, sessions, admission = make()
    tid = open_id(tunnels)
    assert admission.count == 1
    assert tunnels.close(tid, "0", 1.0) == Reply(200, b"\x00")
    assert sessions[0].lost
    assert admission.count == 0
    assert tunnels.idle(tid, "1", 1.0).status == 404


def test_a_client_that_never_closes_is_ended_after_the_idle_timeout() -> None:
    tunnels, sessions, admission = make()
    tid = open_id(tunnels, now=0.0)
    tunnels.idle(tid, "0", 5.0)
    tunnels.tick(14.0)
    assert not sessions[0].closed and sessions[0].ticks == [14.0]
    tunnels.tick(15.5)
    assert sessions[0].aborted is not None and "idle" in sessions[0].aborted
    assert len(tunnels) == 0 and admission.count == 0
    assert tunnels.idle(tid, "1", 16.0).status == 404


def test_server_side_close_hands_over_the_last_bytes_then_404() -> None:
    tunnels, sessions, _ = make()
    tid = open_id(tunnels)
    tunnel = tunnels.tunnels[tid]
    tunnel.write(b"_error: rejected")
    sessions[0].abort("connect with an invalid token")
    reply = tunnels.idle(tid, "0", 1.0)
    assert reply == Reply(200, b"\x01_error: rejected")
    assert tunnels.idle(tid, "1", 1.1).status == 404


def test_server_side_close_without_last_bytes_is_a_clear_error() -> None:
    tunnels, sessions, _ = make()
    tid = open_id(tunnels)
    sessions[0].abort("handshake refused")
    reply = tunnels.send(tid, "0", b"garbage", 1.0)
    assert reply.status == 400 and b"closed by the server" in reply.body
    assert sessions[0].received == b"", "no bytes into a closed session"


def test_server_closed_tunnel_not_collected_is_forgotten_after_a_linger() -> None:
    tunnels, sessions, admission = make()
    open_id(tunnels)
    sessions[0].abort("session ended")
    tunnels.tick(1.0)
    assert len(tunnels) == 1
    tunnels.tick(1.0 + CLOSED_LINGER)
    assert len(tunnels) == 0 and admission.count == 0


def test_pending_output_is_bounded_a_client_that_stops_polling_is_closed() -> None:
    tunnels, sessions, admission = make(max_pending=1000)
    tid = open_id(tunnels)
    tunnel = tunnels.tunnels[tid]
    for _ in range(9):
        tunnel.write(b"m" * 100)
    assert tunnel.buffer_size() == 900  # what RtmpSession's players check
    tunnel.write(b"m" * 200)
    assert tunnel.buffer_size() == 900, "never more than the cap"
    tunnels.tick(1.0)
    assert sessions[0].aborted is not None and "pending" in sessions[0].aborted
    assert len(tunnels) == 0 and admission.count == 0


def test_overflow_during_a_poll_is_answered_503() -> None:
    tunnels, _, _ = make(reply=b"y" * 600, max_pending=1000)
    tid = open_id(tunnels)
    tunnels.tunnels[tid].write(b"z" * 600)
    reply = tunnels.send(tid, "0", b"x", 1.0)
    assert reply.status == 503
    assert len(tunnels) == 0


def test_admission_refuses_beyond_the_per_address_cap() -> None:
    tunnels, _, admission = make(allow=2)
    open_id(tunnels)
    open_id(tunnels)
    reply = tunnels.open(peer="192.0.2.1", transport="rtmpt", now=0.0)
    assert reply.status == 503 and b"too many" in reply.body
    assert len(tunnels) == 2 and admission.count == 2


def test_a_session_that_raises_is_aborted_not_the_server() -> None:
    tunnels, sessions, _ = make()
    tid = open_id(tunnels)

    def boom(data: bytes, now: float | None = None) -> None:
        raise RuntimeError("bug")

    sessions[0].receive_data = boom  # type: ignore[method-assign]
    reply = tunnels.send(tid, "0", b"x", 1.0)
    assert reply.status == 400
    assert sessions[0].aborted == "internal error"


def test_close_all_ends_every_session() -> None:
    tunnels, sessions, admission = make()
    for _ in range(3):
        open_id(tunnels)
    tunnels.close_all()
    assert all(s.closed for s in sessions)
    assert len(tunnels) == 0 and admission.count == 0


# -- the real RTMP session through the tunnel ----------------------------------------------


class TunnelledClient:
    """A client RtmpConnection whose bytes go through ``/send`` and ``/idle``."""

    def __init__(self, tunnels: RtmptTunnels, transport: str = "rtmpt") -> None:
        self.tunnels = tunnels
        self.id = open_id(tunnels, transport=transport)
        self.seq = 0
        self.conn = RtmpConnection(is_client=True)
        self.events: list[Any] = []

    def pump(self, now: float = 1.0) -> None:
        for _ in range(20):
            out = self.conn.data_to_send()
            if out:
                reply = self.tunnels.send(self.id, str(self.seq), out, now)
            else:
                reply = self.tunnels.idle(self.id, str(self.seq), now)
            self.seq += 1
            assert reply.status == 200, reply
            if reply.body[1:]:
                self.conn.receive_data(reply.body[1:])
                self.events.extend(self.conn.events())
            elif not out:
                return
        raise AssertionError("never quiet")

    def result(self, tid: float) -> ResultReceived:
        found = [
            e for e in self.events if isinstance(e, ResultReceived) and e.transaction_id == tid
        ]
        assert len(found) == 1, self.events
        return found[0]


def real_tunnels(gateway: Gateway) -> RtmptTunnels:
    shared = RtmpShared(gateway.config.limits)  # one for the tunnels' sessions

    def factory(tunnel: Tunnel) -> RtmpSession:
        return RtmpSession(
            gateway,
            shared=shared,
            transport=tunnel.transport,
            peer=tunnel.peer,
            write=tunnel.write,
            close=tunnel.close_transport,
            buffer_size=tunnel.buffer_size,
            now=0.0,
        )

    return RtmptTunnels(factory, idle_timeout=10.0, max_pending=1 << 20, max_body=1 << 20)


def test_rtmp_session_through_the_tunnel_connects_publishes_and_shows_via_rtmpts() -> None:
    gateway = Gateway.from_config(Config())
    consultation = gateway.directory.create()
    tunnels = real_tunnels(gateway)
    client = TunnelledClient(tunnels, transport="rtmpts")
    token = consultation.participants[Role.CUSTOMER].token
    tid = client.conn.connect("consult", "rtmpts://127.0.0.1/consult", token, object_encoding=3)
    client.pump()
    info = client.result(tid).args[0]
    assert info["code"] == "NetConnection.Connect.Success"
    customer = consultation.describe()["participants"]["customer"]
    assert customer["via"] == ["rtmps"]  # INTERFACE.md's word for secure Flash
    assert [c["kind"] for c in customer["connections"]] == ["rtmpts"]
    tid = client.conn.call("createStream")
    client.pump()
    sid = int(client.result(tid).args[0])
    client.conn.send_command(sid, "publish", 0.0, None, "customer", "live", csid=8)
    client.pump()
    assert consultation.streams[Role.CUSTOMER].live
    # the client goes away without /close: the idle timeout releases the stream and role
    tunnels.tick(12.0)
    assert not consultation.streams[Role.CUSTOMER].live
    assert consultation.describe()["participants"]["customer"]["connections"] == []
    assert len(tunnels) == 0


def _tunnelled_participant(
    tunnels: RtmptTunnels, token: str, command: str, name: str
) -> tuple[TunnelledClient, int]:
    client = TunnelledClient(tunnels)
    tid = client.conn.connect("consult", "rtmpt://127.0.0.1/consult", token)
    client.pump()
    assert client.result(tid).args[0]["code"] == "NetConnection.Connect.Success"
    tid = client.conn.call("createStream")
    client.pump()
    sid = int(client.result(tid).args[0])
    client.conn.send_command(sid, command, 0.0, None, name, csid=8)
    client.pump()
    return client, sid


def test_a_player_that_does_not_poll_loses_frames_its_pending_output_stays_bounded() -> None:
    """The TCP path's backpressure, through the tunnel: pending output is the player's
    "socket buffer"; above player_buffer_bytes frames drop until the next keyframe."""
    config = Config()
    config.limits.player_buffer_bytes = 64 * 1024
    gateway = Gateway.from_config(config)
    consultation = gateway.directory.create()
    tunnels = real_tunnels(gateway)
    publisher, pub_sid = _tunnelled_participant(
        tunnels, consultation.participants[Role.CUSTOMER].token, "publish", "customer"
    )
    player, _ = _tunnelled_participant(
        tunnels, consultation.participants[Role.ADVISOR].token, "play", "customer"
    )
    player_tunnel = tunnels.tunnels[player.id]
    frame = bytes(4000)
    for n in range(300):  # 1.2 MB of video while the player never polls
        payload = (b"\x17" if n % 50 == 0 else b"\x27") + b"\x01\x00\x00\x00" + frame
        publisher.conn.send_media(pub_sid, 9, n * 66, payload)
        publisher.pump(2)
        assert player_tunnel.buffer_size() <= 64 * 1024 + 8 * 1024
    assert not player_tunnel.overflow and player.id in tunnels.tunnels
    # the player polls again and gets a consistent stream: it parses, starts at a
    # keyframe, and what did not fit was dropped rather than queued
    player.pump()
    video = [e.payload for e in player.events if isinstance(e, MediaReceived) and e.type_id == 9]
    assert 0 < len(video) < 300, len(video)
    assert video[0][0] == 0x17
    assert player.id in tunnels.tunnels


def test_rejected_connect_reaches_the_client_before_the_tunnel_goes() -> None:
    gateway = Gateway.from_config(Config())
    tunnels = real_tunnels(gateway)
    client = TunnelledClient(tunnels)
    tid = client.conn.connect("consult", "rtmpt://127.0.0.1/consult", "wrong-token")
    out = client.conn.data_to_send()
    while out:
        reply = tunnels.send(client.id, str(client.seq), out, 1.0)
        client.seq += 1
        assert reply.status == 200
        client.conn.receive_data(reply.body[1:])
        client.events.extend(client.conn.events())
        out = client.conn.data_to_send()
    result = client.result(tid)
    assert result.error and result.args[0]["code"] == "NetConnection.Connect.Rejected"
    assert tunnels.idle(client.id, str(client.seq), 1.0).status == 404


# -- fuzz ---------------------------------------------------------------------------------------

_ops = st.one_of(
    st.tuples(st.just("open")),
    st.tuples(
        st.sampled_from(["send", "idle", "hold", "close"]),
        st.integers(0, 4),  # which tunnel (index into those opened, or an unknown id)
        st.one_of(st.integers(-3, 40).map(str), st.text(max_size=12), st.just(str(2**31))),
        st.binary(max_size=300),
    ),
    st.tuples(st.just("tick"), st.floats(0, 30, allow_nan=False)),
    st.tuples(st.just("write"), st.integers(0, 4), st.integers(0, 700)),
)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ops, max_size=40), st.binary(max_size=50))
def test_fuzz_any_request_sequence_keeps_the_invariants(
    ops: list[tuple[Any, ...]], session_reply: bytes
) -> None:
    tunnels, sessions, admission = make(reply=session_reply, max_pending=1000, max_body=200)
    opened: list[str] = []
    now = 0.0
    for op in ops:
        if op[0] == "open":
            opened.append(open_id(tunnels, now))
        elif op[0] == "tick":
            now += op[1]
            tunnels.tick(now)
        elif op[0] == "write":
            if op[1] < len(opened) and opened[op[1]] in tunnels.tunnels:
                tunnels.tunnels[opened[op[1]]].write(b"w" * op[2])
        else:
            name, which, seq, body = op
            tid = opened[which] if which < len(opened) else "f" * 32
            if name == "send":
                reply = tunnels.send(tid, seq, body, now)
            elif name == "idle":
                reply = tunnels.idle(tid, seq, now)
            elif name == "hold":
                result = tunnels.idle_or_wait(tid, seq, now)
                if isinstance(result, Tunnel):
                    assert not result.pending
                    result.write(body)  # output arriving while the poll is held
                    reply = tunnels.collect(result)
                else:
                    reply = result
            else:
                reply = tunnels.close(tid, seq, now)
            assert reply.status in (200, 400, 404, 413, 503)
            if reply.status == 200 and name != "close":
                assert reply.body[0] in POLL_DELAYS
            if reply.status != 200:
                assert reply.body.endswith(b"\n") and reply.body.isascii()
        for tunnel in tunnels:
            assert tunnel.buffer_size() <= tunnel.max_pending
        assert admission.count == len(tunnels)
    tunnels.close_all()
    assert all(s.closed for s in sessions)
    assert admission.count == 0


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3000), max_size=8))
def test_fuzz_garbage_rtmp_through_the_tunnel_never_raises(bodies: list[bytes]) -> None:
    gateway = Gateway.from_config(Config())
    tunnels = real_tunnels(gateway)
    tid = open_id(tunnels)
    for seq, body in enumerate(bodies):
        reply = tunnels.send(tid, str(seq), body, 1.0)
        assert reply.status in (200, 400, 404)
    tunnels.tick(100.0)
    assert len(tunnels) == 0
