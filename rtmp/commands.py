"""The commands of the RTMP application ``consult``, by name (:data:`COMMANDS`).

:meth:`rtmp.session.RtmpSession.on_command` looks a command up here; an unknown name is
answered with ``NetConnection.Call.Failed``. Here are the NetConnection commands
(``connect`` with its access-log line, ``createStream``, the FMS acknowledgements, stream
closing) and the consultation's calls the SWF makes (``chat``, ``media``, ``documents``,
``documentUrl``, ``uploadUrl``, ``forms``, ``formUrl``; docs/flash.md). The NetStream
commands live with their side: ``publish`` in ``rtmp/publisher.py``, ``play``, ``pause``
and ``receiveAudio``/``receiveVideo`` in ``rtmp/player.py``.

Authorisation (INTERFACE.md): the token may come as the first extra ``connect``
argument (the Flash client), as ``?token=`` on the app/tcUrl, or on the stream name
(ffmpeg/librtmp). A ``connect`` without a token is accepted; publish/play then need one.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from gateway.channel import ParticipantChannel
from gateway.consultation import ChatRejected
from gateway.redact import log_safe, redact_url
from rtmp import player, publisher
from rtmp.events import CommandReceived
from rtmp.messages import ProtocolError

if TYPE_CHECKING:
    from rtmp.session import RtmpSession

# One line per connect in the access log (gateway/accesslog.py): address, time, the
# player version as its "browser", the URL with tokens redacted, the outcome.
access_log = logging.getLogger("gateway.access")

APP_NAME = "consult"


def split_query(name: str) -> tuple[str, dict[str, str]]:
    """``"customer?token=T"`` → ``("customer", {"token": "T"})``; first value wins."""
    base, _, query = name.partition("?")
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items() if v}
    return base, params


def num(value: Any) -> float:
    """A finite number from an AMF value (NaN and infinities, legal in AMF0, are 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


# -- NetConnection ------------------------------------------------------------------------
def connect(session: RtmpSession, cmd: CommandReceived) -> None:
    if session.connected:
        session.abort("second connect")
        return
    props = cmd.command_object if isinstance(cmd.command_object, dict) else {}
    app_raw = props.get("app")
    app_raw = app_raw if isinstance(app_raw, str) else ""
    app, app_query = split_query(app_raw)
    app = app.strip("/")
    tc_url = props.get("tcUrl") if isinstance(props.get("tcUrl"), str) else ""
    _, tc_query = split_query(str(tc_url))
    token: str | None = None
    if cmd.args and isinstance(cmd.args[0], str) and cmd.args[0]:
        token = cmd.args[0]
    token = token or app_query.get("token") or tc_query.get("token")
    flash_ver = props.get("flashVer")
    session.flash_version = flash_ver[:64] if isinstance(flash_ver, str) else ""
    target = str(tc_url) or f"/{app_raw}"
    conn = session.conn
    if app != APP_NAME:
        _log_connect(session, target, "NetConnection.Connect.Rejected")
        conn.reject_connect(cmd.transaction_id, f"Unknown application {app[:40]!r}.")
        session.flush()
        session.abort("connect to an unknown application")
        return
    if token is not None:
        grant = session.gateway.authorize(token)
        if grant is None and session.gateway.cluster is not None:
            # cluster mode: the token may belong to a consultation on another node
            task = asyncio.ensure_future(_redirect(session, cmd.transaction_id, token, target))
            session._redirecting = task  # referenced until done
            return
        if grant is None:
            _log_connect(session, target, "NetConnection.Connect.Rejected")
            conn.reject_connect(
                cmd.transaction_id, "Invalid or expired token: please use your current link."
            )
            session.flush()
            session.abort("connect with an invalid token")
            return
        session.bind(grant)
    encoding = props.get("objectEncoding", 0)
    session.capabilities = {
        "videoCodecs": int(num(props.get("videoCodecs"))),
        "audioCodecs": int(num(props.get("audioCodecs"))),
    }
    session.connected = True
    _log_connect(session, target, "NetConnection.Connect.Success")
    conn.accept_connect(cmd.transaction_id, 3 if num(encoding) == 3 else 0)


async def _redirect(session: RtmpSession, transaction_id: float, token: str, target: str) -> None:
    """Reject a connect whose consultation lives on another node with that node's RTMP
    URL (``ex.redirect``, docs/cluster.md), or as invalid when no live node holds it."""
    url = await session.gateway.elsewhere_rtmp(token)
    _log_connect(session, target, "NetConnection.Connect.Rejected")
    if url is None:
        description = "Invalid or expired token: please use your current link."
    else:
        description = "This consultation is served by another node."
    session.conn.reject_connect(transaction_id, description, redirect=url)
    session.flush()
    session.abort("connect to another node's consultation" if url else "invalid token")


def _log_connect(session: RtmpSession, target: str, status: str) -> None:
    """The access log entry of a connect (the terms of use: address, time, browser,
    page, status); the tcUrl without its query and token-like segments."""
    access_log.info(
        '%s "CONNECT %s %s" %s "%s"',
        session.peer or "-",
        log_safe(redact_url(target), 500),
        session.transport.upper(),
        status,
        log_safe(session.flash_version or "-", 64),
    )


def create_stream(session: RtmpSession, cmd: CommandReceived) -> None:
    try:
        sid = session.conn.allocate_stream()
    except ProtocolError as exc:
        session.abort(str(exc))
        return
    session.conn.send_result(cmd.transaction_id, None, float(sid))


def ack_only(session: RtmpSession, cmd: CommandReceived) -> None:
    # releaseStream, FCPublish, FCUnpublish, FCSubscribe: FMS answers with _result.
    if cmd.transaction_id > 0:
        session.conn.send_result(cmd.transaction_id, None)
    if cmd.name == "FCUnpublish":
        for sid in list(session.publishing):
            publisher.stop_publishing(session, sid)


def check_bw(session: RtmpSession, cmd: CommandReceived) -> None:
    if cmd.transaction_id > 0:
        session.conn.send_result(cmd.transaction_id, None)


def delete_stream(session: RtmpSession, cmd: CommandReceived) -> None:
    sid = int(num(cmd.args[0])) if cmd.args else cmd.stream_id
    session.close_stream(sid)
    session.conn.release_stream(sid)


def close_stream(session: RtmpSession, cmd: CommandReceived) -> None:
    session.close_stream(cmd.stream_id)


# -- the consultation's calls -------------------------------------------------------------
def chat(session: RtmpSession, cmd: CommandReceived) -> None:
    text = cmd.args[0] if cmd.args else None
    if session.grant is None:
        _call_failed(session, cmd, "Not part of a consultation.")
        return
    try:
        session.grant.consultation.chat(
            session.grant.role, text, origin=session.participant_connection
        )
    except ChatRejected as exc:
        _call_failed(session, cmd, str(exc))
        return
    if cmd.transaction_id > 0:
        session.conn.send_result(cmd.transaction_id, None, True)


def media(session: RtmpSession, cmd: CommandReceived) -> None:
    if session.grant is None:
        _call_failed(session, cmd, "Not part of a consultation.")
        return
    camera = bool(cmd.args[0]) if cmd.args else False
    microphone = bool(cmd.args[1]) if len(cmd.args) > 1 else False
    session.grant.consultation.set_media_state(session.grant.role, camera, microphone)
    if cmd.transaction_id > 0:
        session.conn.send_result(cmd.transaction_id, None, True)


def documents(session: RtmpSession, cmd: CommandReceived) -> None:
    """``documents()`` → the consultation's documents, each with a fresh one-time
    ``url`` (2 minutes) that the SWF hands to ``navigateToURL``."""
    channel = _channel_with(session, cmd, session.gateway.documents)
    if channel is not None:
        session.conn.send_result(
            cmd.transaction_id, None, [event.wire() for event in channel.documents()]
        )


def document_url(session: RtmpSession, cmd: CommandReceived) -> None:
    """``documentUrl(id)`` → a fresh one-time URL for one document (the one in a
    ``document`` event expires after 2 minutes)."""
    channel = _channel_with(session, cmd, session.gateway.documents)
    doc_id = cmd.args[0] if cmd.args else None
    if channel is None:
        return
    if not isinstance(doc_id, str) or not channel.has_document(doc_id):
        _call_failed(session, cmd, "No such document in this consultation.")
        return
    session.conn.send_result(cmd.transaction_id, None, channel.document_url(doc_id))


def upload_url(session: RtmpSession, cmd: CommandReceived) -> None:
    """``uploadUrl()`` → ``{url, max_bytes, expires_in}``: a one-time URL for the SWF's
    ``FileReference.upload()``, which cannot send a token (web/documents.py)."""
    store = session.gateway.documents
    channel = _channel_with(session, cmd, store)
    if channel is not None and store is not None:
        url = channel.upload_url()
        session.conn.send_result(
            cmd.transaction_id,
            None,
            {"url": url, "max_bytes": store.max_bytes, "expires_in": store.ticket_ttl},
        )


def forms(session: RtmpSession, cmd: CommandReceived) -> None:
    """``forms()`` → the consultation's forms as ``form`` events, each with a fresh
    ``url`` (the customer's opens the fill page once, without a cookie)."""
    channel = _channel_with(session, cmd, session.gateway.forms)
    if channel is not None:
        session.conn.send_result(
            cmd.transaction_id, None, [event.wire() for event in channel.forms()]
        )


def form_url(session: RtmpSession, cmd: CommandReceived) -> None:
    """``formUrl(id)`` → a fresh one-time URL of one form (the one in a ``form``
    event is good for one use within 30 minutes)."""
    channel = _channel_with(session, cmd, session.gateway.forms)
    form_id = cmd.args[0] if cmd.args else None
    if channel is None:
        return
    if not isinstance(form_id, str) or not channel.has_form(form_id):
        _call_failed(session, cmd, "No such form in this consultation.")
        return
    session.conn.send_result(cmd.transaction_id, None, channel.form_url(form_id))


def _channel_with(
    session: RtmpSession, cmd: CommandReceived, service: object | None
) -> ParticipantChannel | None:
    """The participant's channel for a call that needs ``service`` (the document store,
    the form desk); None, and the call failed, when there is none of either. None too
    when the caller wants no answer (transaction 0): no one-time URL is minted for it."""
    if cmd.transaction_id <= 0:
        return None
    if session.channel is None or service is None:
        _call_failed(session, cmd, "Not part of a consultation.")
        return None
    return session.channel


def _call_failed(session: RtmpSession, cmd: CommandReceived, description: str) -> None:
    if cmd.transaction_id > 0:
        session.conn.send_error(cmd.transaction_id, "NetConnection.Call.Failed", description)


Command = Callable[["RtmpSession", CommandReceived], None]

COMMANDS: dict[str, Command] = {
    "connect": connect,
    "createStream": create_stream,
    "releaseStream": ack_only,
    "FCPublish": ack_only,
    "FCUnpublish": ack_only,
    "FCSubscribe": ack_only,
    "FCUnsubscribe": ack_only,
    "_checkbw": check_bw,
    "getStreamLength": check_bw,
    "deleteStream": delete_stream,
    "closeStream": close_stream,
    "publish": publisher.publish,
    "play": player.play,
    "receiveAudio": player.receive,
    "receiveVideo": player.receive,
    "pause": player.pause,
    "chat": chat,
    "media": media,
    "documents": documents,
    "documentUrl": document_url,
    "uploadUrl": upload_url,
    "forms": forms,
    "formUrl": form_url,
}
