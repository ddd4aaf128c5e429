"""WHEP (draft-ietf-wish-whep): the other participant's media to a browser.

The peer sends two :class:`~webrtc.sink.PacketTrack`s fed by a
:class:`~webrtc.sink.WebRtcSink`; the sink is connected to the other role's stream by
:func:`gateway.routing.connect` (passthrough or the shared transcoder, the browser's
PLI/FIR and REMB bound to the route) once the peer is connected (so nothing queues up
while ICE runs, and the first picture is a fresh keyframe rather than a stale backlog).
"""

from __future__ import annotations

import logging

from aiortc import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, unpack_remb_fci

from gateway.routing import Route, TranscoderSource, connect, webrtc_caps
from webrtc import seams
from webrtc.offer import OfferError, check_offer, restrict_codecs
from webrtc.session import PeerPlace, PeerSession
from webrtc.sink import WebRtcSink

log = logging.getLogger(__name__)


def hook_sender_feedback(sender: RTCRtpSender, sink: WebRtcSink) -> None:
    """Route the browser's feedback for this sender to the sink (per instance).

    * PLI/FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1): aiortc's ``_handle_rtcp_packet`` calls
      ``self._send_keyframe()``, which only sets a flag its encoder would read; we send
      pre-encoded packets, so the request must reach whoever encodes (the publisher or
      the gateway's transcoder).
    * REMB (draft-alvestrand-rmcat-remb, PSFB FMT 15 "AFB"): the receiver's bandwidth
      estimate, for the transcoder's bitrate. aiortc reads it only into its own encoder.
    """
    sender._send_keyframe = sink.request_keyframe  # type: ignore[method-assign]
    original = sender._handle_rtcp_packet
    ssrc = sender._ssrc

    async def handle(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                pass
            else:
                if ssrc in ssrcs:
                    sink.report_bitrate(bitrate)
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


class WhepSession(PeerSession):
    """A participant watching the other one."""

    kind = "whep"

    def __init__(self, place: PeerPlace, pool: TranscoderSource | None) -> None:
        super().__init__(place)
        consultation, role, stream = place.consultation, place.role, place.stream
        consultation.source(role, stream)  # ValueError for a stream this role cannot watch
        self.source_role = role.other
        self._pool = pool
        self.sink: WebRtcSink | None = None
        self.route: Route | None = None

    async def negotiate(self, offer: str) -> str:
        check_offer(offer, publish=False)
        await self._set_offer(offer)
        negotiated = restrict_codecs(self.pc)
        sink = WebRtcSink(negotiated)
        self.sink = sink
        for transceiver in self.pc.getTransceivers():
            track = sink.tracks.get(transceiver.kind)
            if track is None:
                continue
            # sendonly: the answer's direction is this and'ed with the offer's
            # (RFC 8829 §5.3.1), so a recvonly offer gets sendonly.
            transceiver.direction = "sendonly"
            transceiver.sender.replaceTrack(track)
            hook_sender_feedback(transceiver.sender, sink)
            # frames that carry their RTP payloads go out in them (forwarding)
            seams.forward_sender(transceiver.sender, transceiver._codecs[0])
        if not sink.tracks:
            raise OfferError("No media section of the offer receives media.")
        await self._answer(offer)
        self.connection.codecs_out = dict(negotiated)
        return self.answer_sdp

    def on_connected(self) -> None:
        if self.closed or self.sink is None or self.route is not None:
            return
        negotiated = self.sink.negotiated
        caps = webrtc_caps(negotiated.get("video"), negotiated.get("audio"))
        self.route = connect(
            self.consultation, self.role, self.sink, caps, self._pool, stream=self.stream_name
        )
        # Start with a fresh picture, not the publisher's next scheduled keyframe.
        self.route.request_keyframe()

    def before_close(self) -> None:
        if self.route is not None:
            self.route.close()
        if self.sink is not None:
            self.sink.close()
