"""Contract tests: the private aiortc/aioice seams webrtc/ relies on (docs/architecture.md,
"Facts the code relies on"; docs/webrtc.md). Each failure here means an upgrade moved a
seam: read the named aiortc code again before touching the pin (``aiortc>=1.16,<1.17``)."""

from __future__ import annotations

import asyncio
import fractions
import inspect
import threading
import time

import aioice.ice
import aiortc
import aiortc.rtcrtpreceiver
import av
import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcicetransport import RTCIceGatherer
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
)

from webrtc import seams

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)


def test_pinned_minor_version() -> None:
    assert aiortc.__version__.startswith("1.16"), aiortc.__version__


def test_receiver_decoder_seam() -> None:
    # decoder_worker looks get_decoder up in its module's globals at every codec change
    assert callable(aiortc.rtcrtpreceiver.get_decoder)
    assert "get_decoder" in aiortc.rtcrtpreceiver.decoder_worker.__code__.co_names
    params = list(inspect.signature(aiortc.rtcrtpreceiver.decoder_worker).parameters)
    assert params == ["loop", "input_q", "output_q", "decode_error"]
    # the decoder thread is stored on the receiver before it starts (we match on it)
    source = inspect.getsource(RTCRtpReceiver.receive)
    assert source.index("self.__decoder_thread = threading.Thread(") < source.index(
        "self.__decoder_thread.start()"
    )


def test_decoder_thread_dispatch() -> None:
    """Our get_decoder gives PacketDecoder only on a registered receiver's thread."""
    seams.install()
    assert aiortc.rtcrtpreceiver.get_decoder is seams.get_decoder
    assert not isinstance(seams.get_decoder(VP8), seams.PacketDecoder)

    class FakeReceiver:
        pass

    receiver = FakeReceiver()
    seams.register_passthrough(receiver)  # type: ignore[arg-type]
    chosen: list[object] = []

    def worker() -> None:
        chosen.append(seams.get_decoder(VP8))

    thread = threading.Thread(target=worker)
    setattr(receiver, seams.DECODER_THREAD_ATTR, thread)
    thread.start()
    thread.join()
    assert isinstance(chosen[0], seams.PacketDecoder)


def test_packet_decoder_output() -> None:
    decoder = seams.PacketDecoder(VP8)
    (packet,) = decoder.decode(JitterFrame(b"\x10\x02\x00\x9d\x01\x2a", timestamp=3000))
    assert isinstance(packet, av.Packet)
    assert packet.pts == 3000 and packet.time_base == fractions.Fraction(1, 90000)
    assert packet.is_keyframe and packet.opaque.codec == "vp8"
    assert 0 <= time.perf_counter() - packet.opaque.left_jitter_buffer < 1
    (inter,) = decoder.decode(JitterFrame(b"\x11\x02\x00", timestamp=6000))
    assert not inter.is_keyframe
    (audio,) = seams.PacketDecoder(OPUS).decode(JitterFrame(b"\xfc\xff", timestamp=960))
    assert audio.time_base == fractions.Fraction(1, 48000) and audio.opaque.codec == "opus"
    h264 = seams.PacketDecoder(
        RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=99)
    )
    (idr,) = h264.decode(JitterFrame(b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x65\x88", 0))
    (p,) = h264.decode(JitterFrame(b"\x00\x00\x00\x01\x41\x9a", 3000))
    assert idr.is_keyframe and not p.is_keyframe
    assert decoder.decode(JitterFrame(b"", 0)) == []


async def test_receiver_private_attributes() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("video").receiver
        assert hasattr(receiver, seams.DECODER_THREAD_ATTR)
        mapper = getattr(receiver, seams.TIMESTAMP_MAPPER_ATTR)
        assert mapper.map(1000) == 0 and mapper._origin == 1000
        assert seams.rtp_origin(receiver) == 1000
        # PLI towards a publishing browser (RFC 4585 §6.3.1)
        assert list(inspect.signature(receiver._send_rtcp_pli).parameters) == ["media_ssrc"]
        assert inspect.iscoroutinefunction(RTCRtpReceiver._send_rtcp_pli)
        # SRs reach the receiver through its (instance-patchable) RTCP handler
        assert inspect.iscoroutinefunction(RTCRtpReceiver._handle_rtcp_packet)
        sr = RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(1 << 32, 90000, 1, 100))
        assert (sr.sender_info.ntp_timestamp, sr.sender_info.rtp_timestamp) == (1 << 32, 90000)
    finally:
        await pc.close()


def test_transport_dispatches_rtcp_through_instances() -> None:
    from aiortc import rtcdtlstransport

    source = inspect.getsource(rtcdtlstransport.RTCDtlsTransport)
    assert "await recipient._handle_rtcp_packet(packet)" in source


def test_sender_feedback_seams() -> None:
    assert callable(RTCRtpSender._send_keyframe)
    handler = RTCRtpSender._handle_rtcp_packet
    assert inspect.iscoroutinefunction(handler)
    names = handler.__code__.co_names
    assert "_send_keyframe" in names  # PLI/FIR
    assert "unpack_remb_fci" in names  # REMB
    # pre-encoded packets are packed, not re-encoded
    assert "pack" in RTCRtpSender._next_encoded_frame.__code__.co_names


@pytest.mark.parametrize("codec", ["video/VP8", "video/H264", "audio/opus"])
def test_encoders_pack_packets(codec: str) -> None:
    rate = 48000 if codec.startswith("audio") else 90000
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=codec, clockRate=rate, payloadType=96))
    packet = av.Packet(b"\x00\x00\x00\x01\x65\x88\x84" if "H264" in codec else b"\x10\x02\x00")
    packet.pts = 10
    packet.time_base = fractions.Fraction(1, rate)
    payloads, timestamp = encoder.pack(packet)
    assert payloads and timestamp == 10


def test_host_address_seam() -> None:
    params = list(inspect.signature(aioice.ice.get_host_addresses).parameters)
    assert params == ["use_ipv4", "use_ipv6"]
    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in source
    seams.install()
    assert aioice.ice.get_host_addresses is seams.get_host_addresses
    with seams.ice_hosts(["127.0.0.1", "::1"]):
        assert seams.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert seams.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    # outside the block (and with an empty list) aioice chooses: never loopback
    assert "127.0.0.1" not in seams.get_host_addresses(use_ipv4=True, use_ipv6=False)


async def test_gathering_uses_only_the_configured_addresses() -> None:
    seams.install()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        with seams.ice_hosts(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        lines = [x for x in pc.localDescription.sdp.splitlines() if x.startswith("a=candidate")]
        assert lines and all(x.split()[4] == "127.0.0.1" for x in lines)
    finally:
        await pc.close()


def test_default_ice_servers_are_a_public_stun_server() -> None:
    """Why every peer gets an explicit list: None means Google's STUN server."""
    assert RTCIceGatherer.getDefaultIceServers()  # aiortc's default is not empty
    assert RTCIceGatherer(iceServers=None)._connection.stun_server is not None
    assert RTCIceGatherer(iceServers=[])._connection.stun_server is None
    source = inspect.getsource(RTCPeerConnection.__init__)
    assert "self.__configuration = configuration or RTCConfiguration()" in source


async def test_negotiated_codecs_live_on_the_transceiver() -> None:
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        offerer.addTransceiver("video", direction="recvonly")
        with seams.ice_hosts(["127.0.0.1"]):
            await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(
            RTCSessionDescription(sdp=offerer.localDescription.sdp, type="offer")
        )
        (transceiver,) = answerer.getTransceivers()
        assert [c.name for c in transceiver._codecs][:2] == ["VP8", "rtx"]
        assert transceiver.receiver.track is None  # recvonly offer: nothing to receive
    finally:
        await asyncio.gather(offerer.close(), answerer.close())


# -- receive without playout delay, and forwarding (issue 14) ---------------------------


class FakeTransport:
    """What an RTCRtpReceiver/RTCRtpSender use of their RTCDtlsTransport, recording the
    RTP/RTCP they send."""

    state = "connected"
    _stats_id = "transport"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def _register_rtp_receiver(self, receiver: object, parameters: object) -> None:
        pass

    def _unregister_rtp_receiver(self, receiver: object) -> None:
        pass

    def _register_rtp_sender(self, sender: object, parameters: object) -> None:
        pass

    def _unregister_rtp_sender(self, sender: object) -> None:
        pass

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)

    def _get_stats(self) -> dict[str, object]:
        return {}

    def rtcp(self) -> list[object]:
        out: list[object] = []
        for data in self.sent:
            if 192 <= data[1] <= 223:  # RTCP packet types 192..223 (RFC 5761 §4)
                out.extend(RtcpPacket.parse(data))
        return out


def test_receiver_jitter_buffer_seam() -> None:
    """_handle_rtp_packet unwraps RTX, NACKs and depayloads before the buffer's add()."""
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    add = source.index("pli_flag, encoded_frame = self.__jitter_buffer.add(packet)")
    assert source.index("packet = unwrap_rtx(") < add
    assert source.index("self.__nack_generator.add(packet)") < add
    assert source.index("packet._data = depayload(codec, packet.payload)") < add
    assert "if encoded_frame is not None and self.__decoder_thread:" in source
    assert "self.__jitter_buffer = JitterBuffer(" in inspect.getsource(RTCRtpReceiver.__init__)


def test_sender_encoder_seam() -> None:
    """The sender keeps an encoder set before its first frame and packs packets with it."""
    source = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "if self.__encoder is None:" in source
    assert "payloads, timestamp = self.__encoder.pack(data)" in source
    run = inspect.getsource(RTCRtpSender._run_rtp)
    assert "packet.ssrc = self._ssrc" in run and "timestamp_origin" in run
    assert "self.__rtp_history[" in run  # NACKs are answered from the history
    assert "self.__encoder: Optional[Encoder] = None" in inspect.getsource(RTCRtpSender.__init__)


def vp8_rtp(seq: int, ts: int, marker: bool, first: bool, key: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=97, sequence_number=seq, timestamp=ts, marker=int(marker))
    packet.ssrc = 0x1234
    body = (b"\x00" if key else b"\x01") if first else b"\xaa"
    packet.payload = (b"\x10" if first else b"\x00") + body + bytes([seq & 0xFF])
    return packet


async def test_tapped_receiver_releases_at_the_marker_and_nacks_a_gap() -> None:
    """A real aiortc receiver with the gateway's tap: crafted VP8 RTP comes out as frames
    at each marker bit, depayloaded by aiortc; a gap is NACKed by aiortc (RFC 4585
    §6.2.1) and, given up, asked for as a keyframe (PLI) through the gateway."""
    from aiortc.rtcrtpreceiver import RemoteStreamTrack

    from webrtc.receive import ReceiveSettings, RtpReceive

    transport = FakeTransport()
    receiver = RTCRtpReceiver("video", transport)  # type: ignore[arg-type]
    receiver._track = RemoteStreamTrack(kind="video")
    receiver._set_rtcp_ssrc(0x9999)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[VP8], encodings=[]))
    frames: list[tuple[bytes, int]] = []
    plis: list[bool] = []
    glue = RtpReceive(
        True,
        "vp8",
        ReceiveSettings(video_wait_ms=5.0),
        lambda frame, pts: frames.append((frame.data, pts)),
        lambda: plis.append(True),
    )
    seams.tap_receiver(receiver, glue.on_packet)

    async def feed(packet: RtpPacket) -> None:
        await receiver._handle_rtp_packet(packet, 0)
        await asyncio.sleep(0)  # released frames go on in the loop's next round

    try:
        await feed(vp8_rtp(10, 1000, False, True, key=True))
        assert frames == []  # no marker yet
        await feed(vp8_rtp(11, 1000, True, False))
        assert frames == [(b"\x00\x0a\xaa\x0b", 0)]  # descriptors stripped by aiortc
        # 12 is lost: 13 (the next frame's end) waits, and aiortc NACKs 12
        await feed(vp8_rtp(13, 4000, True, False))
        nacks = [p for p in transport.rtcp() if isinstance(p, RtcpRtpfbPacket)]
        assert nacks and nacks[0].lost == [12] and nacks[0].media_ssrc == 0x1234
        assert len(frames) == 1
        deadline = time.monotonic() + 5
        while not plis and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # the glue's loop timer gives the gap up
        assert plis == [True]
        await feed(vp8_rtp(14, 7000, True, True, key=True))
        assert frames[-1] == (b"\x00\x0e", 6000)
    finally:
        glue.close()
        await receiver.stop()


async def test_forwarded_payloads_leave_a_real_sender_rewritten() -> None:
    """Crafted RTP through the reorder buffer, the sink and a real aiortc sender with the
    forwarding encoder: the payloads go out byte for byte, under the sender's own SSRC,
    sequence numbers and timestamps; a NACK for one is answered from its history."""
    from gateway.media import VIDEO, MediaUnit
    from webrtc.reorder import ReorderBuffer, RtpIn
    from webrtc.sink import WebRtcSink

    buffer = ReorderBuffer(video=True, is_keyframe=lambda data: data[:1] == b"\x00")
    incoming = [vp8_rtp(40000, 90000, False, True, key=True), vp8_rtp(40001, 90000, True, False)]
    incoming.append(vp8_rtp(40002, 93000, True, True))
    frames = []
    for p in incoming:
        data = p.payload[1:]
        frames += buffer.add(
            RtpIn(p.sequence_number, p.timestamp, bool(p.marker), p.payload, data, 0.0), 0.0
        )
    assert len(frames) == 2

    transport = FakeTransport()
    sink = WebRtcSink({"video": "vp8"})
    sender = RTCRtpSender(sink.tracks["video"], transport)  # type: ignore[arg-type]
    encoder = seams.forward_sender(sender, VP8)
    for i, frame in enumerate(frames):
        unit = MediaUnit(
            VIDEO, "vp8", 1000 + 33 * i, frame.data, frame.keyframe, rtp=frame.payloads
        )
        assert sink.deliver(unit)
    await sender.send(
        RTCRtpSendParameters(codecs=[VP8], muxId="0", rtcp=RTCRtcpParameters(cname="x"))
    )
    try:
        deadline = time.monotonic() + 5
        while len(transport.sent) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        out = [RtpPacket.parse(d) for d in transport.sent if not 192 <= d[1] <= 223]
        assert [p.payload for p in out] == [p.payload for p in incoming]
        assert {p.ssrc for p in out} == {sender._ssrc} != {0x1234}
        assert [p.marker for p in out] == [0, 1, 1]
        seqs = [p.sequence_number for p in out]
        assert seqs == [seqs[0], (seqs[0] + 1) & 0xFFFF, (seqs[0] + 2) & 0xFFFF]
        assert out[0].timestamp == out[1].timestamp
        assert (out[2].timestamp - out[0].timestamp) & 0xFFFFFFFF == 33 * 90
        assert encoder.forwarded == 2
        # the receiving browser lost the second packet: answered from the history
        nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender._ssrc)
        nack.lost = [seqs[1]]
        before = len(transport.sent)
        await sender._handle_rtcp_packet(nack)
        (again,) = [RtpPacket.parse(d) for d in transport.sent[before:]]
        assert again.payload == incoming[1].payload and again.sequence_number == seqs[1]
    finally:
        sink.close()
        await sender.stop()
