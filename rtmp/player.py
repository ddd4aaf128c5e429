"""The player side of an RTMP session: ``play``, ``pause``, ``receiveAudio``/``receiveVideo``
and :class:`PlayerReceiver`, which writes a published stream to one NetStream.

A ``play`` is authorised like a ``publish`` (a token on the stream name or the
connection's grant), answered as FMS answers a live stream (``NetStream.Play.Reset``,
``NetStream.Play.Start``, ``|RtmpSampleAccess``, ``NetStream.Data.Start``) and joined to
the other participant's stream through ``gateway.routing.connect`` with the codecs the
``connect`` capabilities allow (docs/architecture.md, "A browser frame to a Flash
player"). A slow or stalled player drops media, by bytes or by time behind live
(:class:`rtmp.output.LagMeter`); the publisher never waits.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from gateway.consultation import CAMERA, SCREEN, Role
from gateway.latency import METER
from gateway.media import AUDIO, VIDEO, MediaUnit, PublishedStream
from gateway.routing import Route, connect, flash_caps
from rtmp import messages as m
from rtmp.events import CommandReceived
from rtmp.flv import audio_tag, video_tag

if TYPE_CHECKING:
    from rtmp.session import RtmpSession


class PlayerReceiver:
    """Delivers a published stream to one RTMP NetStream, bounded by the socket buffer
    and by time behind live."""

    def __init__(self, session: RtmpSession, stream_id: int, source: PublishedStream) -> None:
        self.session = session
        self.stream_id = stream_id
        self.source = source
        self.receive_audio = True
        self.receive_video = True
        self.paused = False
        self.waiting = False
        self.route: Route | None = None
        self._codecs_seen: set[str] = set()

    def detach(self) -> None:
        if self.route is not None:
            self.route.close()
            self.route = None

    def resync(self) -> None:
        if self.route is not None:
            self.source.resync(self.route)

    def deliver(self, unit: MediaUnit) -> bool:
        session = self.session
        if session.closed:
            return False
        if self.paused:
            return False
        batch = session.batch
        if batch.depth and session in batch.dirty:
            # Already admitted during this publisher read: what it is given now waits in
            # the connection's output until the read ends, so the socket backlog and the
            # time behind live are what the first check of this read saw (issue 14: one
            # system call per player and read, not per unit).
            pass
        else:
            # The fan-out has no time to pass in: the session's clock is read once here,
            # at the edge, and passed to the lag check and the write.
            now = session.clock()
            backlog = session.buffer_size()  # a system call
            if backlog > session.player_buffer_limit or session.output.lag(backlog, now) > (
                session.max_lag
            ):
                # slow or stalled player: video drops until the next keyframe, audio with
                # it (gateway/media.py counts the drops); the publisher never waits
                return False
        conn = session.conn
        kind = unit.kind
        if kind not in self._codecs_seen and kind != "data":
            self._codecs_seen.add(kind)
            pc = session.participant_connection
            if pc is not None:
                pc.codecs_out[kind] = unit.codec
        if kind == VIDEO:
            if not self.receive_video:
                return True
            conn.send_media(self.stream_id, m.VIDEO, unit.timestamp, video_tag(unit))
        elif kind == AUDIO:
            if not self.receive_audio:
                return True
            conn.send_media(self.stream_id, m.AUDIO, unit.timestamp, audio_tag(unit))
        elif unit.wire is not None:
            conn.send_data_raw(self.stream_id, unit.wire, unit.timestamp)
        if unit.arrived:
            METER.observe(
                unit.origin,
                "flash",
                unit.transcoded,
                perf_counter() - unit.arrived,
                kind,
                len(unit.payload),
            )
        if batch.depth:
            batch.dirty.add(session)  # written once when the publisher's read is done
        else:
            session.flush(now)
        return True

    def stream_started(self, stream: PublishedStream) -> None:
        self._codecs_seen.clear()
        if self.session.closed:
            return
        if self.waiting:
            # The other side (re)started publishing while we were waiting (FMS semantics).
            conn = self.session.conn
            conn.stream_begin(self.stream_id)
            conn.send_status(
                self.stream_id, "NetStream.Play.PublishNotify", f"{stream.name} is now published."
            )
            self.session.flush()
        self.waiting = False

    def stream_stopped(self, stream: PublishedStream) -> None:
        if self.session.closed:
            return
        conn = self.session.conn
        conn.send_status(
            self.stream_id, "NetStream.Play.UnpublishNotify", f"{stream.name} is now unpublished."
        )
        conn.stream_eof(self.stream_id)
        self.session.flush()
        self.waiting = True


# -- NetStream commands of the player side ------------------------------------------------
def play(session: RtmpSession, cmd: CommandReceived) -> None:
    sid = cmd.stream_id
    name, params = session.stream_name(cmd)
    if sid not in session.conn.streams:
        _play_failed(session, sid, "Playing on a stream that was not created.")
        return
    grant = session.authorize_stream(params)
    if grant is None:
        _play_failed(session, sid, "Invalid or expired token.")
        return
    # the other participant's camera under its role name, or (customers) the advisor's
    # shared screen as "screen" (docs/web.md "Screen sharing")
    stream = SCREEN if name == SCREEN else CAMERA
    if name != str(grant.role.other) and not (stream == SCREEN and grant.role is Role.CUSTOMER):
        _play_failed(session, sid, f"You may only play {grant.role.other}.")
        return
    if sid in session.playing:
        session.playing.pop(sid).detach()
    source = grant.consultation.source(grant.role, stream)
    receiver = PlayerReceiver(session, sid, source)
    session.playing[sid] = receiver
    conn = session.conn
    conn.stream_begin(sid)
    conn.send_status(sid, "NetStream.Play.Reset", f"Playing and resetting {name}.", details=name)
    conn.send_status(sid, "NetStream.Play.Start", f"Started playing {name}.", details=name)
    conn.send_data(sid, ["|RtmpSampleAccess", True, True])
    conn.send_data(sid, ["onStatus", {"code": "NetStream.Data.Start"}])
    session.flush()
    # Waiting for a publisher that has not started: its start is announced with
    # NetStream.Play.PublishNotify, as FMS does for live streams.
    receiver.waiting = not source.live
    # Flash gets H.264/AAC only when its connect capabilities say so (docs/architecture.md);
    # what it cannot take goes through the shared transcoder for its format.
    receiver.route = connect(
        grant.consultation,
        grant.role,
        receiver,
        flash_caps(session.supports_h264, session.supports_aac),
        session.gateway.transcoders,
        stream=stream,
    )


def _play_failed(session: RtmpSession, sid: int, description: str) -> None:
    session.conn.send_status(sid, "NetStream.Play.Failed", description, level="error")
    session.flush()
    session.abort(f"play refused: {description}")


def receive(session: RtmpSession, cmd: CommandReceived) -> None:
    """``receiveAudio(flag)`` / ``receiveVideo(flag)``; video restarts at the cached GOP."""
    receiver = session.playing.get(cmd.stream_id)
    if receiver is None or not cmd.args:
        return
    flag = bool(cmd.args[0])
    if cmd.name == "receiveAudio":
        receiver.receive_audio = flag
    else:
        receiver.receive_video = flag
        if flag:
            receiver.resync()


def pause(session: RtmpSession, cmd: CommandReceived) -> None:
    receiver = session.playing.get(cmd.stream_id)
    if receiver is None:
        return
    pausing = bool(cmd.args[0]) if cmd.args else True
    receiver.paused = pausing
    if pausing:
        session.conn.send_status(cmd.stream_id, "NetStream.Pause.Notify", "Paused live stream.")
    else:
        session.conn.send_status(cmd.stream_id, "NetStream.Unpause.Notify", "Unpaused live stream.")
        receiver.resync()  # restart at the cached GOP
