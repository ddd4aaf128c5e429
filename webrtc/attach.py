"""How a WHEP sink is joined to the other participant's published stream.

Kept in one small function so the composition can swap it: today the sink sits
directly on the :class:`~gateway.media.PublishedStream` (passthrough, right for
WebRTC → WebRTC where the codecs match); ``gateway.routing.Route`` (passthrough or a
shared transcoder, per kind) has the same ``request_keyframe``/``close`` shape and
replaces :class:`DirectAttachment` here.
"""

from __future__ import annotations

from typing import Protocol

from gateway.consultation import Consultation, Role
from gateway.media import PublishedStream
from webrtc.sink import WebRtcSink


class SinkAttachment(Protocol):
    """What a WHEP session needs from whatever feeds its sink."""

    def request_keyframe(self) -> None: ...

    def close(self) -> None: ...


class DirectAttachment:
    """The sink as a plain receiver of the source stream (no transcoding)."""

    def __init__(self, source: PublishedStream, sink: WebRtcSink) -> None:
        self.source = source
        self.sink = sink
        self.closed = False
        source.add_receiver(sink)

    def request_keyframe(self) -> None:
        # A WebRTC publisher answers with a keyframe (PLI via its receiver); RTMP cannot
        # be asked (the hook is None), its camera's keyframe interval has to do.
        self.source.request_keyframe()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.source.remove_receiver(self.sink)


def attach_sink(consultation: Consultation, source_role: Role, sink: WebRtcSink) -> SinkAttachment:
    """Feed ``sink`` with what ``source_role`` publishes in ``consultation``."""
    return DirectAttachment(consultation.streams[source_role], sink)
