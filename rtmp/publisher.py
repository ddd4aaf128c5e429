"""The publisher side of an RTMP session: ``publish``, its end, and the media it brings.

A ``publish`` is authorised (a token on the stream name or the connection's grant) for
the participant's own role only, and starts the participant's
:class:`~gateway.media.PublishedStream`; a newer connection of the same participant
takes the stream over (:func:`preempted`). Each audio/video message becomes a
codec-neutral media unit with ``rtmp/flv.py`` (:func:`on_media`, the first step of "A
Flash frame to a browser" in docs/architecture.md); ``@setDataFrame``/``onMetaData``
pass as ``data`` units. While the customer publishes, :class:`Uplink` counts what arrives
for the advisor's quality display.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.consultation import Consultation, Role
from gateway.media import MediaUnit
from gateway.quality import INTERVAL as QUALITY_INTERVAL
from gateway.quality import UplinkMeter, UplinkSample
from rtmp import messages as m
from rtmp.amf import encode_command_payload
from rtmp.events import CommandReceived, DataReceived, MediaReceived
from rtmp.flv import FlvError, audio_unit, video_unit

if TYPE_CHECKING:
    from rtmp.session import RtmpSession


class Uplink:
    """A Flash/RTMP customer's uplink as the gateway sees it, for the advisor's page: the
    same ``quality`` events as for a WHIP customer (``gateway/quality.py``,
    docs/webrtc.md). :func:`on_media` only adds to two counters; the session's 1 s timer
    turns them into an event every ``QUALITY_INTERVAL``. TCP loses nothing (a bad link
    shows as a lower rate or a stall), so ``loss_pct`` stays 0; the round trip is the
    last RTMP ping answered (User Control PingRequest/PingResponse, Adobe RTMP spec
    7.1.7), sent with each event."""

    def __init__(self, consultation: Consultation, now: float) -> None:
        self.consultation = consultation
        self.meter = UplinkMeter(str(Role.CUSTOMER))
        # counted from the publish on, so the first event already has a rate and can
        # tell a stall (a WHIP peer's first sample has no predecessor to compare with)
        self.meter.previous = UplinkSample(now, 0, 0, 0)
        self.bytes = 0
        self.frames = 0
        self.rtt_ms: int | None = None
        self.next_at = now + QUALITY_INTERVAL

    def event(self, now: float) -> dict[str, Any]:
        customer = self.consultation.participants[Role.CUSTOMER]
        sample = UplinkSample(now, self.bytes, self.frames, 0)
        return self.meter.event(
            sample, expecting=customer.camera or customer.microphone, rtt_ms=self.rtt_ms
        )


# -- what a publisher sends ---------------------------------------------------------------
def on_media(session: RtmpSession, event: MediaReceived) -> None:
    """An audio/video message: FLV tag body → media unit → the participant's stream."""
    stream = session.publishing.get(event.stream_id)
    if stream is None:
        return  # media on a stream that is not publishing: ignore (FMS does too)
    try:
        if event.type_id == m.VIDEO:
            unit = video_unit(event.payload, event.timestamp)
        else:
            unit = audio_unit(event.payload, event.timestamp)
    except FlvError:
        session.media_errors += 1
        return
    unit.arrived = session.read_at
    unit.origin = "rtmp"
    uplink = session.uplink
    if uplink is not None:
        uplink.bytes += len(event.payload)
        uplink.frames += 1
    stream.push(unit)
    pc = session.participant_connection
    if pc is not None and unit.kind not in pc.codecs_in:
        pc.codecs_in[unit.kind] = unit.codec


def on_data(session: RtmpSession, event: DataReceived) -> None:
    """Stream metadata (``@setDataFrame onMetaData …`` from ffmpeg/OBS) passes through as a
    ``data`` unit, re-encoded without the ``@setDataFrame`` head as FMS does."""
    stream = session.publishing.get(event.stream_id)
    if stream is None or not event.values:
        return
    head = event.values[0]
    if head == "@setDataFrame" and len(event.values) >= 3:
        payload = encode_command_payload(list(event.values[1:]), False)
    elif head == "onMetaData":
        payload = event.payload
    else:
        return
    stream.push(MediaUnit("data", "amf0", event.timestamp, b"", wire=payload))


# -- NetStream commands of the publisher side ---------------------------------------------
def publish(session: RtmpSession, cmd: CommandReceived) -> None:
    sid = cmd.stream_id
    name, params = session.stream_name(cmd)
    if sid not in session.conn.streams:
        _publish_bad(session, sid, name, "Publishing on a stream that was not created.")
        return
    grant = session.authorize_stream(params)
    if grant is None:
        _publish_bad(session, sid, name, "Invalid or expired token.")
        return
    if name != str(grant.role):
        _publish_bad(session, sid, name, f"You may only publish as {grant.role}.")
        return
    if sid in session.publishing:
        _publish_bad(session, sid, name, "This stream is already publishing.")
        return
    stream = grant.consultation.streams[grant.role]
    session.publishing[sid] = stream
    conn = session.conn
    conn.allow_publish(sid)
    conn.stream_begin(sid)
    conn.send_status(sid, "NetStream.Publish.Start", f"{name} is now published.", details=name)
    session.flush()
    # A participant who reconnects (dropped Wi-Fi) takes over from its stale
    # connection instead of being locked out until that one times out.
    stream.start(session.transport, owner=session, on_preempt=lambda: preempted(session, sid))
    if grant.role is Role.CUSTOMER and session.uplink is None:
        session.uplink = Uplink(grant.consultation, session.clock())


def preempted(session: RtmpSession, sid: int) -> None:
    """Another connection of the same participant publishes now: this one is stale.

    The newer one wins. The older is told once, with ``reason: "replaced"`` so that a
    client can tell it from a refused name and stand down instead of reconnecting
    and taking the stream back (two tabs would preempt each other for ever); the SWF
    offers a button, as the browser page does."""
    if session.publishing.pop(sid, None) is not None and not session.closed:
        session.conn.end_publish(sid)
        uplink_ended(session)
        session.conn.send_status(
            sid,
            "NetStream.Publish.BadName",
            "Published from another connection.",
            level="error",
            reason="replaced",
        )
        session.flush()
        session.abort("publisher replaced by a newer connection")


def uplink_ended(session: RtmpSession) -> None:
    """The customer's publish from this connection ended: one last ``quality`` event
    says so, as when a WHIP session ends (the advisor's page keeps "Kunde verbindet
    neu …" while a device is still announced on)."""
    uplink, session.uplink = session.uplink, None
    if uplink is not None and not uplink.consultation.ended:
        uplink.consultation.emit(uplink.meter.event(None, expecting=False, rtt_ms=None))


def _publish_bad(session: RtmpSession, sid: int, name: str, description: str) -> None:
    session.conn.send_status(sid, "NetStream.Publish.BadName", description, level="error")
    session.flush()
    session.abort(f"publish refused: {description}")


def stop_publishing(session: RtmpSession, sid: int) -> None:
    stream = session.publishing.pop(sid, None)
    if stream is not None:
        session.conn.end_publish(sid)
        stream.stop(owner=session)
        if not session.publishing:
            uplink_ended(session)
        session.conn.send_status(sid, "NetStream.Unpublish.Success", "Stream unpublished.")
