"""The private aiortc/aioice seams the WebRTC front-end relies on, in one place.

aiortc (pinned ``>=1.16,<1.17``) has no public API for three things the gateway needs,
so it hooks into private names; ``tests/test_aiortc_contract.py`` fails loudly when an
upgrade moves one of them (docs/architecture.md, "Facts the code relies on"; docs/webrtc.md):

* ``aiortc.rtcrtpreceiver.get_decoder`` – imported into that module and called by its
  ``decoder_worker`` thread. Our replacement hands the depayloaded ``JitterFrame`` on as
  an ``av.Packet`` for the receivers the gateway owns, so their track's ``recv()``
  yields encoded frames (passthrough; the gateway's transcoder decodes when needed).
  Every other receiver in the process (a test client, anything else using aiortc)
  keeps aiortc's real decoders: the decoder thread is matched against the receivers
  registered with :func:`register_passthrough`.
* ``aioice.ice.get_host_addresses`` – aioice leaves loopback out of host candidates and
  otherwise uses every interface. Inside :func:`ice_hosts` (a context variable, so only
  the peer being set up is affected) gathering uses exactly the configured addresses
  (``--ice-host``; tests use 127.0.0.1).
* ``RTCRtpReceiver.__jitter_buffer`` – ``_handle_rtp_packet`` unwraps RTX, sends NACKs
  and depayloads (``packet._data``), then hands each packet to this object's
  ``add(packet)`` and decodes the frame it returns. :func:`tap_receiver` puts a
  :class:`ReceiveTap` there for the gateway's own receivers: every packet goes to the
  gateway's reorder-only buffer (``webrtc/receive.py``) at once, and aiortc's playout
  buffer (about 80 ms audio, a frame interval video) is out of the path.
* ``RTCRtpSender.__encoder`` – the sender packs a pre-encoded ``av.Packet`` with
  ``encoder.pack(packet)``, creating the encoder on the first frame if none is set.
  :func:`forward_sender` sets a :class:`ForwardingEncoder` first: a packet that carries
  the RTP payloads it arrived in goes out in exactly those payloads (an SFU's
  forwarding; aiortc's sender still rewrites SSRC, sequence numbers and timestamps and
  answers NACKs from its history), any other is packed by aiortc's encoder.
* The RTCP hooks on senders and receivers are set per instance where they are used
  (``webrtc/whep.py``, ``webrtc/whip.py``).

Nothing here runs at import: :func:`install` patches once, idempotently.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import ipaddress
import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter
from typing import Any, NamedTuple

import aioice.ice
import aiortc.rtcrtpreceiver
import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from gateway.codecs import h264, vp8

log = logging.getLogger(__name__)

# The name-mangled attributes of RTCRtpReceiver/RTCRtpSender used here (contract-tested).
DECODER_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"
TIMESTAMP_MAPPER_ATTR = "_RTCRtpReceiver__timestamp_mapper"
JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
ENCODER_ATTR = "_RTCRtpSender__encoder"


class FrameInfo(NamedTuple):
    """What :class:`PacketDecoder` attaches to each packet (``av.Packet.opaque``)."""

    codec: str
    left_jitter_buffer: float  # time.perf_counter()


class PacketDecoder(Decoder):
    """A "decoder" that returns the depayloaded frame itself as an ``av.Packet``.

    ``pts`` is the receiver's RTP timestamp (aiortc already made it relative to the
    first frame and unwrapped it), ``time_base`` 1/clock rate (1/90000 video, 1/48000
    Opus), ``is_keyframe`` from the bitstream, ``opaque`` a :class:`FrameInfo`: the
    codec name in lower case, the frame's RTP timestamp as sent, and when it left the
    jitter buffer (``time.perf_counter()``, the start of the gateway's own latency).
    """

    def __init__(self, codec: RTCRtpCodecParameters) -> None:
        self.codec_name = codec.name.lower()
        self.time_base = fractions.Fraction(1, codec.clockRate)

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        data = encoded_frame.data
        if not data:
            return []
        packet = av.Packet(data)
        packet.pts = encoded_frame.timestamp
        packet.dts = encoded_frame.timestamp
        packet.time_base = self.time_base
        if self.codec_name == "vp8":
            packet.is_keyframe = vp8.is_keyframe(data)
        elif self.codec_name == "h264":
            packet.is_keyframe = h264.annexb_has_idr(data)
        else:
            packet.is_keyframe = True
        packet.opaque = FrameInfo(self.codec_name, perf_counter())
        return [packet]


# -- decoder dispatch ------------------------------------------------------------------

_original_get_decoder = aiortc.rtcrtpreceiver.get_decoder
_original_get_host_addresses = aioice.ice.get_host_addresses
_passthrough: weakref.WeakSet[RTCRtpReceiver] = weakref.WeakSet()
_lock = threading.Lock()
_installed = False


def register_passthrough(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver``'s track yield encoded ``av.Packet``s instead of decoded frames.

    Call before media flows (the decoder is chosen on the first frame)."""
    with _lock:
        _passthrough.add(receiver)


def _is_passthrough_thread(thread: threading.Thread) -> bool:
    with _lock:
        receivers = list(_passthrough)
    return any(getattr(r, DECODER_THREAD_ATTR, None) is thread for r in receivers)


def get_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    """Replacement for ``aiortc.rtcrtpreceiver.get_decoder``, called on a decoder thread.

    The receiver that started the current thread decides: ours get a
    :class:`PacketDecoder`, everybody else aiortc's own decoder."""
    if _is_passthrough_thread(threading.current_thread()):
        return PacketDecoder(codec)
    return _original_get_decoder(codec)


# -- receive without aiortc's playout buffer ----------------------------------------------


class ReceiveTap:
    """Stands in for aiortc's ``JitterBuffer`` on a receiver the gateway owns.

    aiortc calls ``add(packet)`` with every RTP packet of the receiver, RTX already
    unwrapped and the payload depayloaded into ``packet._data``; the packet and its
    arrival time (``time.perf_counter()``) go to ``on_packet`` right away. Returning no
    frame keeps aiortc's decoder thread idle; returning no PLI flag leaves picture loss
    to the gateway (paced, ``webrtc/whip.py``)."""

    def __init__(self, on_packet: Callable[[RtpPacket, float], None]) -> None:
        self.on_packet = on_packet

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        try:
            self.on_packet(packet, perf_counter())
        except Exception:  # never into aiortc's transport loop
            log.exception("receiving an RTP packet failed")
        return False, None


def tap_receiver(receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket, float], None]) -> None:
    """Send ``receiver``'s packets to ``on_packet`` instead of aiortc's jitter buffer."""
    if not hasattr(receiver, JITTER_BUFFER_ATTR):
        raise RuntimeError("aiortc moved RTCRtpReceiver.__jitter_buffer (contract test)")
    setattr(receiver, JITTER_BUFFER_ATTR, ReceiveTap(on_packet))


def depayloaded(packet: RtpPacket) -> bytes:
    """What aiortc's ``depayload`` made of the packet's payload (set before ``add``)."""
    data = getattr(packet, "_data", b"")
    return data if isinstance(data, bytes) else b""


# -- forwarding RTP payloads -------------------------------------------------------------


class Forwarded(NamedTuple):
    """``av.Packet.opaque`` of a packet for a :class:`ForwardingEncoder`."""

    payloads: tuple[bytes, ...]  # the RTP payloads the frame arrived in, in order
    arrived: float  # for the latency meter (gateway/latency.py)
    origin: str
    transcoded: bool


class ForwardingEncoder:
    """aiortc's encoder for a sender, except that a packet whose ``opaque`` is a
    :class:`Forwarded` is sent in the RTP payloads it arrived in (no depacketize and
    packetize again). ``pack`` returns (payloads, timestamp) as aiortc's encoders do."""

    def __init__(self, codec: RTCRtpCodecParameters) -> None:
        self.inner: Any = get_encoder(codec)
        self.forwarded = 0

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        info = packet.opaque
        if isinstance(info, Forwarded) and info.payloads:
            assert packet.pts is not None
            self.forwarded += 1
            return list(info.payloads), int(packet.pts)
        payloads, timestamp = self.inner.pack(packet)
        return payloads, timestamp

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        payloads, timestamp = self.inner.encode(frame, force_keyframe)
        return payloads, timestamp


def forward_sender(sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> ForwardingEncoder:
    """Give ``sender`` a :class:`ForwardingEncoder` before it packs its first frame."""
    if getattr(sender, ENCODER_ATTR, False) is not None:
        raise RuntimeError("aiortc moved RTCRtpSender.__encoder (contract test)")
    encoder = ForwardingEncoder(codec)
    setattr(sender, ENCODER_ATTR, encoder)
    return encoder


# -- ICE host addresses ------------------------------------------------------------------

_ice_hosts: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "ice_hosts", default=None
)


@contextlib.contextmanager
def ice_hosts(addresses: Sequence[str]) -> Iterator[None]:
    """Gather host candidates on exactly ``addresses`` inside this block.

    aiortc gathers in ``setLocalDescription`` (RFC 8829 §5.10: no trickle here, the
    answer carries every candidate) in tasks created from the calling task, which
    inherit this context; other peers in the process are not affected. An empty list
    leaves aioice's own choice (every non-loopback interface)."""
    token = _ice_hosts.set(tuple(addresses) if addresses else None)
    try:
        yield
    finally:
        _ice_hosts.reset(token)


def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Replacement for ``aioice.ice.get_host_addresses`` honouring :func:`ice_hosts`."""
    configured = _ice_hosts.get()
    if configured is None:
        return list(_original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    out = []
    for address in configured:
        version = ipaddress.ip_address(address).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(address)
    return out


def install() -> None:
    """Patch the seams (idempotent). Called by the front-end before its first peer."""
    global _installed
    with _lock:
        if _installed:
            return
        aiortc.rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[assignment]
        aioice.ice.get_host_addresses = get_host_addresses
        _installed = True
    log.debug("aiortc seams installed (decoder passthrough, ICE host addresses)")


def rtp_origin(receiver: RTCRtpReceiver) -> int | None:
    """The RTP timestamp aiortc subtracted from this receiver's frames (``pts`` + origin
    is the sender's RTP timestamp, mod 2^32); None before the first frame."""
    mapper = getattr(receiver, TIMESTAMP_MAPPER_ATTR, None)
    origin = getattr(mapper, "_origin", None)
    return origin if isinstance(origin, int) else None


# -- aiortc's connect task racing a close ------------------------------------------------------
# ``RTCPeerConnection.setRemoteDescription`` starts ``__connect()`` with a bare
# ``asyncio.ensure_future`` that nobody awaits. When the peer is closed while that task
# waits in ``RTCIceTransport.start`` (a browser leaving during ICE, a WHIP DELETE racing
# the offer), the task ends with ``InvalidStateError('RTCIceTransport is closed')`` and
# asyncio logs "Task exception was never retrieved" with a traceback: a normal hang-up
# reported as an internal error. Only that exact case is taken off the error log.
_CONNECT_QUALNAME = "RTCPeerConnection.__connect"


def is_connect_race(context: dict[str, Any]) -> bool:
    """True for aiortc's unretrieved connect task that failed because its peer closed."""
    from aiortc.exceptions import InvalidStateError

    future = context.get("future")
    exc = context.get("exception")
    coro = future.get_coro() if isinstance(future, asyncio.Task) else None
    return (
        isinstance(exc, InvalidStateError)
        and "closed" in str(exc)
        and getattr(coro, "__qualname__", "") == _CONNECT_QUALNAME
    )


def quiet_connect_race(loop: Any) -> None:
    """Install a loop exception handler that logs :func:`is_connect_race` at INFO and
    passes everything else to the handler that was there (or asyncio's default)."""
    previous = loop.get_exception_handler()

    def handler(loop: Any, context: dict[str, Any]) -> None:
        if is_connect_race(context):
            log.info("a WebRTC peer closed while connecting (%s)", context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
