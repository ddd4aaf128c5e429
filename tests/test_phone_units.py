"""The telephone leg's pieces that need no process: RTP and DTMF parsing (fuzzed), the
phone code, the masked number, the audio taken from the page, aiosipua's seams."""

from __future__ import annotations

import itertools
import struct

import aiosipua
from hypothesis import given
from hypothesis import strategies as st

from gateway.consultation import Directory, Role
from gateway.media import AUDIO, MediaUnit, PublishedStream
from gateway.phone import seams
from gateway.phone.rtp import (
    DigitCollector,
    Packetiser,
    RtpPacket,
    parse_info_digit,
    parse_rtp,
    parse_telephone_event,
    sender_report,
)
from gateway.phonecall import group_code, mask_number, new_phone_code
from gateway.transcode.clips import encode_clip


@given(st.binary(max_size=300))
def test_rtp_parser_never_raises(data: bytes) -> None:
    packet = parse_rtp(data)
    if packet is not None:
        assert len(packet.payload) <= len(data)


@given(
    st.integers(0, 127).filter(lambda pt: not 72 <= pt <= 76),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=200),
    st.booleans(),
)
def test_rtp_round_trip(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool
) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker)
    assert parse_rtp(packet.serialize()) == packet


def test_rtp_with_csrc_extension_and_padding() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 8, 7, 160, 99)
    csrc = struct.pack("!I", 5)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4
    data = header + csrc + extension + b"abc" + b"\x00\x00\x03"
    packet = parse_rtp(data)
    assert packet is not None and packet.payload == b"abc"
    assert parse_rtp(header[:-1]) is None
    assert parse_rtp(struct.pack("!BBHII", 0x80, 200, 1, 2, 3)) is None  # RTCP SR (pt 72)


def _event(ts: int, digit: int, end: bool = False, duration: int = 160) -> RtpPacket:
    payload = struct.pack("!BBH", digit, (0x80 if end else 0) | 10, duration)
    return RtpPacket(101, 1, ts, 7, payload)


def test_one_digit_per_key_press_however_many_packets() -> None:
    collector = DigitCollector()
    got = [
        collector.feed(_event(1000, 5)),
        collector.feed(_event(1000, 5, duration=320)),
        collector.feed(_event(1000, 5, end=True)),
        collector.feed(_event(1000, 5, end=True)),  # the end is sent three times
        collector.feed(_event(1000, 5, end=True)),
        collector.feed(_event(2000, 5)),  # the same key again: a new timestamp
        collector.feed(_event(3000, 11)),  # '#'
        collector.feed(_event(4000, 16)),  # not a DTMF event
    ]
    assert [d for d in got if d] == ["5", "5", "#"]
    assert parse_telephone_event(b"\x01") is None


def test_sip_info_digits() -> None:
    assert parse_info_digit("application/dtmf-relay", "Signal=7\r\nDuration=160\r\n") == "7"
    assert parse_info_digit("application/dtmf-relay; x=y", "Signal= #\r\n") == "#"
    assert parse_info_digit("application/dtmf", "11") == "#"
    assert parse_info_digit("application/dtmf", "*") == "*"
    assert parse_info_digit("text/plain", "Signal=7") is None
    assert parse_info_digit("application/dtmf-relay", "Signal=77") is None


def test_packetiser_paces_20ms_and_reports() -> None:
    out = Packetiser(8)
    first = parse_rtp(out.packet(b"\xd5" * 160))
    second = parse_rtp(out.packet(b"\xd5" * 160))
    assert first is not None and second is not None
    assert first.marker and not second.marker
    assert (second.sequence - first.sequence) & 0xFFFF == 1
    assert (second.timestamp - first.timestamp) & 0xFFFFFFFF == 160
    report = sender_report(out, 3_900_000_000.5)
    assert report[1] == 200 and len(report) == 28


def test_phone_codes_unique_long_and_gone_with_the_consultation() -> None:
    directory = Directory(phone_code_digits=10)
    made = [directory.create() for _ in range(200)]
    codes = {c.phone_code for c in made}
    assert len(codes) == 200
    assert all(code and len(code) == 10 and code[0] != "0" for code in codes)
    first = made[0]
    assert first.phone_code is not None
    assert directory.by_phone_code(first.phone_code) is first
    directory.end(first.id)
    assert directory.by_phone_code(first.phone_code) is None
    assert Directory().create().phone_code is None  # no telephone leg, no codes

    class TakenThrice:  # the first three codes drawn are taken: a fourth is drawn
        def __init__(self) -> None:
            self.asked: list[object] = []

        def __contains__(self, code: object) -> bool:
            self.asked.append(code)
            return len(self.asked) <= 3

    taken = TakenThrice()
    code = new_phone_code(8, taken)
    assert len(taken.asked) == 4 and code == taken.asked[-1] and len(code) == 8
    assert group_code("1234567890") == "1234 5678 90"


def test_numbers_are_masked() -> None:
    assert mask_number("sip:+4930123456734@pbx.example") == "+49 … 34"
    assert mask_number("004930123456734") == "+49 … 34"
    assert mask_number("030123456734") == "0 … 34"
    assert mask_number("<sip:anonymous@x>") == "…"
    assert mask_number(None) == "…"


class _Sink:
    def __init__(self) -> None:
        self.units: list[MediaUnit] = []

    def deliver(self, unit: MediaUnit) -> bool:
        self.units.append(unit)
        return True

    def stream_started(self, stream: PublishedStream) -> None:
        pass

    def stream_stopped(self, stream: PublishedStream) -> None:
        pass


def test_the_phone_takes_the_customers_audio_from_the_page() -> None:
    stream = PublishedStream("c/customer")
    sink = _Sink()
    stream.add_receiver(sink)
    stream.start("webrtc")
    stream.set_gates(video=False, audio=False)  # the page's microphone is off
    page = MediaUnit(AUDIO, "opus", 0, b"page")
    phone = MediaUnit(AUDIO, "alaw", 0, b"phone")
    leg = object()
    stream.take_audio(leg)
    stream.push(page)
    stream.push_taken_audio(object(), phone)  # not the leg that took it
    stream.push_taken_audio(leg, phone)
    assert [u.payload for u in sink.units] == [b"phone"]
    stream.release_audio(leg)
    stream.set_gates(video=False, audio=True)
    stream.push(page)
    stream.push_taken_audio(leg, phone)
    assert [u.payload for u in sink.units] == [b"phone", b"page"]


def test_prompt_clips_encode_for_every_phone_codec() -> None:
    pcm = b"\x00\x10" * 1600  # 100 ms at 16 kHz
    assert len(encode_clip(pcm, 16000, "alaw")) == 800
    assert len(encode_clip(pcm, 16000, "mulaw")) == 800
    assert len(encode_clip(pcm, 16000, "g722")) == 800  # 64 kbit/s


def test_aiosipua_seams_are_where_we_use_them() -> None:
    """Fails loudly when an aiosipua upgrade moves a private place (gateway/phone/seams.py)."""
    transport = aiosipua.UdpSipTransport(local_addr=("127.0.0.1", 0))
    uas = aiosipua.SipUAS(transport)
    assert "INVITE" in uas._handlers and "INFO" not in uas._handlers
    seams.add_method(uas, "INFO", lambda request, addr: None)
    assert "INFO" in uas._handlers
    assert isinstance(uas._calls, dict) and seams.call_count(uas) == 0
    seams.forget_call(uas, "nothing")
    assert callable(uas._send_error)
    assert hasattr(transport, "_udp_transport") and hasattr(transport, "_dispatch")
    assert Role.CUSTOMER.other is Role.ADVISOR


def test_statistics_note_only_that_a_phone_was_used() -> None:
    from gateway.consultation import Connection
    from gateway.stats import aggregate, client_kind, row_for

    consultation = Directory().create()
    consultation.attach(Role.CUSTOMER, Connection("webrtc", close=lambda: None))
    consultation.attach(Role.CUSTOMER, Connection("phone", close=lambda: None))
    consultation.end()
    row = row_for(consultation)
    assert row.customer_client == "phone+webrtc"
    assert aggregate([row])["clients"]["phone"] == 1
    assert client_kind({"phone"}) == "phone"
    assert "+49" not in str(row.describe())


# -- the consultation's audio to the phone: sent as it comes (gateway/phone/leg.py) --------


class _Wire:
    """A datagram transport that keeps what the leg sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False


def _joined_leg() -> tuple[object, _Wire]:
    import asyncio

    from gateway.phone.leg import PhoneLeg
    from gateway.phone.prompts import Prompts

    leg = PhoneLeg(
        codec="alaw", payload_type=8, dtmf_payload_type=101, remote_rtp=("127.0.0.1", 9),
        prompts=Prompts({}), pool=None, masked_number="+49 … 00", code_digits=10, tries=3,
        rtp_timeout=30, code_timeout=60, check_code=lambda leg, code: ("wrong", None),
        hang_up_sip=lambda: None, on_end=lambda leg, outcome: None,
    )  # fmt: skip
    wire = _Wire()
    leg._transport = wire  # type: ignore[assignment]
    leg._pacer = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
    leg._next_at = asyncio.get_running_loop().time()
    leg.state = "joined"
    return leg, wire


def _unit(payload: bytes) -> MediaUnit:
    import time

    unit = MediaUnit(AUDIO, "alaw", 0, payload)
    unit.arrived = time.perf_counter()
    return unit


async def test_the_advisors_audio_leaves_when_a_packet_is_whole_not_at_the_next_slot() -> None:
    """A whole 20 ms packet goes out the moment it is transcoded; the resampler's short
    first output is put behind silence, so later packets end where units end (before:
    a standing part held every unit's tail back a slot, p50 21 ms in bench/phone.py)."""
    import asyncio

    from gateway.phone.leg import TICK

    leg, wire = _joined_leg()
    leg.queue_audio(_unit(b"\x11" * 144))  # type: ignore[attr-defined]
    assert len(wire.sent) == 1 and wire.sent[0][12:].endswith(b"\x11" * 144)
    for n in range(5):
        await asyncio.sleep(TICK)  # the source's pace
        leg.queue_audio(_unit(bytes([n]) * 160))  # type: ignore[attr-defined]
        assert len(wire.sent) == 2 + n  # at once, not at the pacer's next slot
        assert wire.sent[-1][12:] == bytes([n]) * 160
    assert leg.outgoing == b""  # type: ignore[attr-defined]


async def test_a_standing_queue_behind_a_burst_is_dropped() -> None:
    """Input and output run at the same rate, so what a burst queued never drains: a
    whole packet waiting for STANDING_S without a break is dropped (counted), and the
    packets after it leave as they come."""
    import asyncio

    from gateway.phone.leg import SEND_AHEAD, STANDING_S, TICK

    leg, wire = _joined_leg()
    burst = int(SEND_AHEAD / TICK) + 3  # more than may be sent ahead
    for n in range(burst):
        leg.queue_audio(_unit(bytes([n]) * 160))  # type: ignore[attr-defined]
    waiting = len(leg.outgoing)  # type: ignore[attr-defined]
    assert waiting >= 160 and len(wire.sent) < burst
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 <= STANDING_S + 0.05:  # a unit every slot, the queue stands
        leg._next_at = loop.time() + SEND_AHEAD  # the pacer's slots stay filled ahead
        leg.queue_audio(_unit(b"\x7f" * 160))  # type: ignore[attr-defined]
        await asyncio.sleep(TICK)
    assert leg.trimmed_ms >= 20  # type: ignore[attr-defined]
    assert len(leg.outgoing) < 160  # type: ignore[attr-defined]
    before = len(wire.sent)
    leg.queue_audio(_unit(b"\x22" * 160))  # type: ignore[attr-defined]
    assert len(wire.sent) == before + 1 and wire.sent[-1][12:] == b"\x22" * 160


# -- comfort noise (RFC 3389): negotiated when offered, heard in the phone's pauses ---------

OFFER_WITH_CN = """v=0
o=- 1 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/AVP 8 0 13 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:13 CN/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
"""


def test_comfort_noise_is_answered_when_offered_and_only_then() -> None:
    from gateway.phone.server import accept_comfort_noise

    offer = aiosipua.parse_sdp(OFFER_WITH_CN)
    answer, chosen = aiosipua.negotiate_sdp(offer, "192.0.2.1", 30000, supported_codecs=[8, 0])
    assert chosen == 8
    assert accept_comfort_noise(offer, answer) == 13
    text = aiosipua.serialize_sdp(answer)
    assert "a=rtpmap:13 CN/8000" in text
    m_line = next(line for line in text.splitlines() if line.startswith("m=audio"))
    assert m_line.split()[3:] == ["8", "101", "13"]
    plain = aiosipua.parse_sdp(
        OFFER_WITH_CN.replace(" 13 101", " 101").replace("a=rtpmap:13 CN/8000\n", "")
    )
    answer, _ = aiosipua.negotiate_sdp(plain, "192.0.2.1", 30000, supported_codecs=[8, 0])
    assert accept_comfort_noise(plain, answer) is None
    assert "CN/8000" not in aiosipua.serialize_sdp(answer)


class _Stream:
    def __init__(self) -> None:
        self.units: list[MediaUnit] = []

    def push_taken_audio(self, owner: object, unit: MediaUnit) -> None:
        self.units.append(unit)


def _rms_dbov(alaw: bytes) -> float:
    import math

    import av

    ctx = av.CodecContext.create("pcm_alaw", "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"  # type: ignore[attr-defined]
    samples = []
    for frame in ctx.decode(av.Packet(alaw)):  # type: ignore[attr-defined]
        samples += list(
            struct.unpack(f"<{frame.samples}h", bytes(frame.planes[0])[: 2 * frame.samples])
        )
    rms = math.sqrt(sum(x * x for x in samples) / len(samples))
    return 20 * math.log10(rms / 32767)


async def test_the_phones_pauses_are_filled_with_its_described_noise() -> None:
    """Speech, then a CN packet (level 40 -dBov), then nothing for 100 ms, then speech:
    the consultation gets the speech, a noise frame at once and one per 20 ms at about
    -40 dBov with RTP-continuous timestamps, and no noise once speech is back."""
    import asyncio

    from gateway.phone.leg import TICK

    leg, _ = _joined_leg()
    stream = _Stream()
    leg._stream = stream  # type: ignore[attr-defined]
    leg.cn_payload_type = 13  # type: ignore[attr-defined]
    speech = RtpPacket(8, 1, 1000, 7, b"\x55" * 160)
    leg.rtp_received(speech.serialize(), ("127.0.0.1", 9))  # type: ignore[attr-defined]
    assert [u.payload for u in stream.units] == [b"\x55" * 160]
    cn = RtpPacket(13, 2, 1160, 7, bytes([40]))
    leg.rtp_received(cn.serialize(), ("127.0.0.1", 9))  # type: ignore[attr-defined]
    assert len(stream.units) == 2
    await asyncio.sleep(5 * TICK)
    leg._fill_noise(asyncio.get_running_loop().time())  # what the pacer does every slot
    noise = stream.units[1:]
    assert 5 <= len(noise) <= 7
    assert all(len(u.payload) == 160 and u.payload != b"\xd5" * 160 for u in noise)
    assert all(abs(_rms_dbov(u.payload) + 40) < 3 for u in noise)
    stamps = [u.timestamp for u in stream.units]
    assert all(b - a == 20 for a, b in itertools.pairwise(stamps))  # 160 samples = 20 ms
    speech = RtpPacket(8, 3, 1160 + 160 * len(noise), 7, b"\x66" * 160)
    leg.rtp_received(speech.serialize(), ("127.0.0.1", 9))  # type: ignore[attr-defined]
    count = len(stream.units)
    await asyncio.sleep(3 * TICK)
    leg._fill_noise(asyncio.get_running_loop().time())  # type: ignore[attr-defined]
    assert len(stream.units) == count and stream.units[-1].payload == b"\x66" * 160
