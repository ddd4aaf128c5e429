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
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

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
