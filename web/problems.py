"""Problem details (RFC 9457) for every error the web front-end answers.

Handlers raise :class:`ProblemError`; aiohttp's own ``HTTPException``s (404 for an
unknown route, 405, 413 from ``client_max_size``) and unexpected exceptions are turned
into the same ``application/problem+json`` shape by :func:`problem_middleware`, so a
client never has to parse aiohttp's plain-text error bodies or see a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from web.redact import redact_path

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

# RFC 6750 §3: the realm is informational; error codes tell clients what went wrong.
BEARER_REALM = 'Bearer realm="videoberatung"'

_DEFAULT_DETAIL = {
    400: "The request could not be understood.",
    401: "Credentials are required.",
    403: "These credentials do not allow this request.",
    404: "There is nothing at this address.",
    405: "This method is not allowed here.",
    413: "The request body is too large.",
    500: "The server could not complete the request.",
    501: "This is not implemented yet.",
    503: "The service is not accepting this request right now.",
}


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    """An ``application/problem+json`` response.

    RFC 9457 §4.2.1: with ``type`` ``about:blank`` the title is the status phrase.
    """
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _title(status),
        "status": status,
        "detail": detail or _DEFAULT_DETAIL.get(status, _title(status)),
    }
    if extra:
        body.update(extra)
    response = web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )
    if status == 401 and hdrs.WWW_AUTHENTICATE not in response.headers:
        # RFC 9110 §15.5.2: a 401 carries at least one challenge.
        response.headers[hdrs.WWW_AUTHENTICATE] = BEARER_REALM
    return response


class ProblemError(Exception):
    """Raised by handlers; rendered as problem details by :func:`problem_middleware`."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or _title(status))
        self.status = status
        self.detail = detail
        self.title = title
        self.type_ = type_
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return problem_response(
            self.status, self.detail, title=self.title, type_=self.type_, headers=self.headers
        )


def unauthorized(detail: str, *, invalid_token: bool = False) -> ProblemError:
    """401 with the RFC 6750 §3 challenge (``error="invalid_token"`` for a bad token)."""
    challenge = BEARER_REALM + (', error="invalid_token"' if invalid_token else "")
    return ProblemError(401, detail, headers={hdrs.WWW_AUTHENTICATE: challenge})


def _from_http_exception(request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
    status = exc.status
    text = exc.text or ""
    # aiohttp's default body is "404: Not Found"; anything else was written on purpose
    # (e.g. the 413 text names the limit) and is worth passing on.
    detail: str | None = None
    if text and not text.startswith(f"{status}: "):
        detail = text
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        detail = f"{request.method} is not allowed here (allowed: {allowed})."
    headers = {
        k: v
        for k, v in exc.headers.items()
        if k.lower() not in ("content-type", "content-length", "content-encoding")
    }
    return problem_response(status, detail, headers=headers)


# Paths that machines call (JSON API, WHIP/WHEP, the events socket, RTMPT, whose
# clients expect a bare 404 for /fcs/ident2): they keep problem+json whatever they accept.
_MACHINE_PATHS = ("/api/", "/whip/", "/whep/", "/fcs/", "/open/", "/send/", "/idle/", "/close/")


def _wants_page(request: web.BaseRequest) -> bool:
    """A browser asking for a page (``Accept: text/html``), not a client of the API."""
    accept = request.headers.get(hdrs.ACCEPT, "")
    return (
        request.method in ("GET", "HEAD")
        and "text/html" in accept
        and not request.path.startswith(_MACHINE_PATHS)
        and not request.path.endswith("/events")
    )


def _not_found_page(request: web.Request) -> web.Response:
    # imported here: the pages import this module
    from web.i18n import negotiate
    from web.keys import GATEWAY_KEY
    from web.templates import View, not_found_page

    gateway = request.app.get(GATEWAY_KEY)
    brand = gateway.config.bank if gateway is not None else None
    return web.Response(
        status=404, text=not_found_page(View(negotiate(request), brand)), content_type="text/html"
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProblemError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects stay what they are
        if isinstance(exc, web.HTTPNotFound) and _wants_page(request):
            return _not_found_page(request)  # a mistyped address: a page, in German
        return _from_http_exception(request, exc)
    except ConnectionError:
        transport = request.transport
        if transport is None or transport.is_closing():
            # The client went away (mid-body, say): not an error of ours, nobody to
            # answer; aiohttp notes the premature disconnection.
            raise
        log.exception("unhandled error in %s %s", request.method, redact_path(request.path))
        return problem_response(500)
    except Exception:
        # Log the details for operators (path redacted: it may carry a token), answer
        # the client with nothing but the status.
        log.exception("unhandled error in %s %s", request.method, redact_path(request.path))
        return problem_response(500)
