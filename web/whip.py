"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) over HTTP.

``POST /whip/{id}/{role}`` (publish this participant's camera/microphone) and
``POST /whep/{id}/{role}`` (receive the other participant) take an SDP offer and answer
``201 Created`` with the SDP answer and the session's ``Location``;
``DELETE`` on the ``Location`` ends the session. Trickle ICE and ICE restarts (``PATCH``,
RFC 9725 §4.3) are not offered: the answer carries every candidate, so ``PATCH`` is
``405``.

Who may: a participant token of that consultation and role (``Authorization: Bearer``),
or advisor credentials (static token, advisor session, or the advisor cookie with its
CSRF header) for the advisor role.

This module knows nothing of aiortc: the composition root hands it a
:class:`WebRtcService` (``webrtc.frontend.WebRtcFrontEnd``), which raises ``ValueError``
for an offer it cannot answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import hdrs, web

from gateway.consultation import CAMERA, SCREEN, Consultation, Role
from web.auth import gateway_of, require
from web.problems import ProblemError

SDP_CONTENT_TYPE = "application/sdp"
# A browser's offer is 3–8 KiB; 64 KiB leaves room for many candidates and codecs while
# keeping what a caller can make us parse small (credentials are checked before the body).
MAX_OFFER_BYTES = 64 * 1024
WHIP = "whip"
WHEP = "whep"


class AnswerLike(Protocol):
    @property
    def resource_id(self) -> str: ...

    @property
    def sdp(self) -> str: ...


class WebRtcService(Protocol):
    async def publish(
        self, consultation: Consultation, role: Role, offer: str, stream: str = CAMERA
    ) -> AnswerLike: ...

    async def play(
        self, consultation: Consultation, role: Role, offer: str, stream: str = CAMERA
    ) -> AnswerLike: ...

    async def delete(
        self, kind: str, consultation: Consultation, role: Role, resource_id: str
    ) -> bool: ...

    async def close(self) -> None: ...

    def ice_server_urls(self) -> list[tuple[str, str | None, str | None]]: ...


WEBRTC_KEY = web.AppKey("webrtc", WebRtcService)


def _authorize(request: web.Request) -> tuple[Consultation, Role]:
    try:
        role = Role(request.match_info["role"])
    except ValueError:
        raise ProblemError(404, "The role must be 'advisor' or 'customer'.") from None
    principal = require(request)
    cid = request.match_info["id"]
    if principal.advisor:
        if role is not Role.ADVISOR:
            raise ProblemError(403, "Advisor credentials act as the advisor only.")
        consultation = gateway_of(request).directory.get(cid)
        if consultation is None or consultation.ended:
            raise ProblemError(404, "There is no such consultation.")
        if principal.role_in(consultation) is None:
            raise ProblemError(403, "This consultation belongs to another advisor.")
        return consultation, role
    grant = principal.grant
    if grant is None or grant.consultation.id != cid or grant.role is not role:
        raise ProblemError(403, "This token is not for this consultation and role.")
    return grant.consultation, role


async def _read_offer(request: web.Request) -> str:
    if request.content_type != SDP_CONTENT_TYPE:
        raise ProblemError(
            415,
            f"The offer must be sent as {SDP_CONTENT_TYPE} (RFC 9725 §4.2).",
            headers={"Accept-Post": SDP_CONTENT_TYPE},
        )
    length = request.content_length
    if length is not None and length > MAX_OFFER_BYTES:
        raise ProblemError(413, f"An SDP offer may have at most {MAX_OFFER_BYTES} bytes.")
    body = await request.read()
    if len(body) > MAX_OFFER_BYTES:
        raise ProblemError(413, f"An SDP offer may have at most {MAX_OFFER_BYTES} bytes.")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProblemError(400, "The SDP offer is not valid UTF-8 (RFC 8866 §5).") from None


def _service(request: web.Request) -> WebRtcService:
    return request.app[WEBRTC_KEY]


def _link_header(servers: list[tuple[str, str | None, str | None]]) -> str:
    """RFC 9725 §4.6: the ICE servers the client may use, as Link rel="ice-server",
    TURN credentials as its username/credential attributes (RFC 8288 quoted strings)."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    links = []
    for url, username, credential in servers:
        link = f'<{url}>; rel="ice-server"'
        if username is not None:
            link += f"; username={quoted(username)}; credential={quoted(credential or '')}"
            link += '; credential-type="password"'
        links.append(link)
    return ", ".join(links)


def _offer_handler(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        consultation, role = _authorize(request)
        if not gateway_of(request).accepting:
            raise ProblemError(503, "The gateway is shutting down.")
        if not consultation.admitted(role):
            # the waiting room (docs/web.md): no media before the advisor lets them in
            raise ProblemError(
                409, "The customer waits to be let in by the advisor (waiting room)."
            )
        # ?stream=screen: the advisor's screen share (docs/web.md "Screen sharing"), which
        # only the advisor publishes and only the customer receives
        stream = request.query.get("stream", CAMERA)
        try:
            if kind == WHIP:
                consultation.published(role, stream)
            else:
                consultation.source(role, stream)
        except ValueError:
            raise ProblemError(
                403 if stream == SCREEN else 404,
                f"The {role} cannot {'send' if kind == WHIP else 'receive'} the stream "
                f"{stream[:20]!r}.",
            ) from None
        offer = await _read_offer(request)
        service = _service(request)
        method = service.publish if kind == WHIP else service.play
        try:
            answer = await method(consultation, role, offer, stream)
        except ValueError as exc:
            raise ProblemError(400, str(exc) or "The SDP offer cannot be answered.") from None
        headers = {hdrs.LOCATION: f"/{kind}/{consultation.id}/{role}/{answer.resource_id}"}
        urls = service.ice_server_urls()
        if urls:
            headers[hdrs.LINK] = _link_header(urls)
        # bytes, so aiohttp adds no charset parameter: application/sdp has none (RFC 8866
        # §8.1; the character set is an SDP attribute).
        return web.Response(
            status=201, body=answer.sdp.encode(), content_type=SDP_CONTENT_TYPE, headers=headers
        )

    return handle


def _delete_handler(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        consultation, role = _authorize(request)
        found = await _service(request).delete(
            kind, consultation, role, request.match_info["resource"]
        )
        if not found:
            raise ProblemError(404, f"There is no such {kind.upper()} session.")
        return web.Response(status=200)

    return handle


async def _patch(request: web.Request) -> web.Response:
    _authorize(request)
    # RFC 9725 §4.3.1: a server supporting neither trickle ICE nor ICE restarts answers
    # PATCH with 405.
    raise ProblemError(
        405,
        "Trickle ICE and ICE restarts are not supported: the answer carries every "
        "candidate. Gather all candidates before sending the offer.",
        headers={hdrs.ALLOW: "DELETE"},
    )


def routes(service: WebRtcService) -> Callable[[web.Application], None]:
    """The ``setup(app)`` registering WHIP and WHEP on ``service``; on shutdown every
    peer is closed."""

    def setup(app: web.Application) -> None:
        app[WEBRTC_KEY] = service
        for kind in (WHIP, WHEP):
            app.router.add_post(f"/{kind}/{{id}}/{{role}}", _offer_handler(kind), name=kind)
            resource = f"/{kind}/{{id}}/{{role}}/{{resource}}"
            app.router.add_delete(resource, _delete_handler(kind), name=f"{kind}_resource")
            app.router.add_patch(resource, _patch)

        async def close_peers(app: web.Application) -> None:
            await service.close()

        app.on_shutdown.append(close_peers)

    return setup
