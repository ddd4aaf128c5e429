"""Documents of a consultation over HTTP (INTERFACE.md, "Documents").

* ``POST /api/sessions/{id}/documents`` – ``multipart/form-data``, one file (field
  ``file``, or the first part with a file name) → ``201 {"id","name","size","sha256",…}``.
  Either participant's token or an advisor credential. Streamed to disk in pieces;
  too large → ``413``, the consultation's share used up → ``507``, a type we do not
  accept (checked by content) → ``415``.
* ``GET /api/sessions/{id}/documents`` – the list (JSON array).
* ``GET /api/sessions/{id}/documents/{doc}`` – the file, as an attachment with its
  sanitised name (RFC 6266 + RFC 5987 ``filename*``), ``nosniff`` and its real type.
  Instead of a credential, ``?ticket=`` (one-time, 2 minutes) may authorise it: that is
  the URL a ``document`` event carries, which Flash's ``navigateToURL`` opens.
* ``POST /api/sessions/{id}/documents/{doc}/ticket`` – a fresh one-time URL.
* ``POST /api/sessions/{id}/documents/flash-upload?ticket=`` – the Flash client's upload
  (``flash_upload``): ``FileReference.upload()`` can set no header, so a one-time ticket
  from the RTMP command ``uploadUrl()`` authorises one upload; answered ``200``.
* ``/k/{id}/documents…`` – the same for the customer page, authorised by its HttpOnly
  cookie (scoped to ``/k/{id}``); uploads there must come from our own origin.

A token of another consultation gets ``403`` whether or not the id exists (no probing);
a document id that is not in the caller's consultation is ``404``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.consultation import Consultation, Role
from gateway.documents import (
    ACCEPTED_TYPES,
    SNIFF_BYTES,
    Document,
    DocumentError,
    DocumentStore,
    Upload,
)
from gateway.events import DocumentShared
from gateway.service import Gateway
from web.auth import CUSTOMER_COOKIE, gateway_of, require_participant, same_origin
from web.links import UPLOAD_TICKET_PREFIX
from web.problems import ProblemError

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

READ_CHUNK = 64 * 1024
# Bytes handed to the writer thread at once: fewer thread hops than one per network read,
# little memory (never the whole file).
WRITE_BATCH = 1024 * 1024
# Multipart framing around the file (boundaries, part headers) beyond the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def _store(request: web.Request) -> DocumentStore:
    store = gateway_of(request).documents
    if store is None:
        raise ProblemError(503, "Documents are not enabled on this gateway.")
    return store


def page_limits(gateway: Gateway) -> dict[str, Any] | None:
    """What the pages' documents panel states and checks before an upload: the store's
    own limits and accepted types, so the page cannot promise other ones (None: no
    documents on this gateway, no panel)."""
    store = gateway.documents
    if store is None:
        return None
    return {
        "max_bytes": store.max_bytes,
        "quota_bytes": store.quota_bytes,
        "max_files": store.max_documents,
        "extensions": [ext for filetype in ACCEPTED_TYPES for ext in filetype.extensions],
    }


def _customer_by_cookie(request: web.Request) -> tuple[Consultation, Role]:
    grant = gateway_of(request).authorize(request.cookies.get(CUSTOMER_COOKIE))
    if grant is None or grant.consultation.id != request.match_info["id"]:
        raise ProblemError(403, "Please enter the PIN on the consultation page first.")
    return grant.consultation, grant.role


def _document(request: web.Request, consultation: Consultation) -> Document:
    doc = _store(request).get(consultation.id, request.match_info["doc"])
    if doc is None:
        raise ProblemError(404, "No such document in this consultation.")
    return doc


# -- upload ----------------------------------------------------------------------------------


# The client went away mid-body (the person cancelled, closed the tab, lost the network):
# aiohttp's stream raises ConnectionResetError. Nobody is left to answer; it is no error of
# ours, so no traceback either.
_GONE_DETAIL = "The upload was interrupted."


async def _file_part(request: web.Request) -> BodyPartReader:
    try:
        return await _find_file_part(request)
    except (HttpProcessingError, ValueError) as exc:
        # aiohttp's parser refuses control characters in part headers, bad boundaries …
        raise ProblemError(400, "The multipart body is malformed.") from exc
    except ConnectionResetError:
        raise ProblemError(400, _GONE_DETAIL) from None


async def _find_file_part(request: web.Request) -> BodyPartReader:
    if request.content_type != "multipart/form-data":
        raise ProblemError(
            415, "Send the file as multipart/form-data (a part named 'file' with a file name)."
        )
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            raise ProblemError(400, "The form holds no file (a part named 'file').")
        if isinstance(part, BodyPartReader) and (part.name == "file" or part.filename):
            return part
        if isinstance(part, BodyPartReader):
            await part.release()  # skip other form fields (bounded by read_chunk)
        else:
            raise ProblemError(400, "Nested multipart bodies are not accepted.")


async def _receive(part: BodyPartReader, upload: Upload) -> None:
    batch = bytearray()
    while True:
        chunk = await part.read_chunk(READ_CHUNK)
        if not chunk:
            break
        batch += chunk
        # Write (and so check) early: the first bytes decide the type, and an oversize
        # body stops as soon as it passes the limit.
        if (
            len(batch) >= WRITE_BATCH
            or upload.size + len(batch) > upload.limit
            or (upload.size == 0 and len(batch) >= SNIFF_BYTES)
        ):
            await asyncio.to_thread(upload.write, bytes(batch))
            batch.clear()
    if batch:
        await asyncio.to_thread(upload.write, bytes(batch))


async def _upload(request: web.Request, consultation: Consultation, role: Role) -> web.Response:
    gateway = gateway_of(request)
    store = _store(request)
    declared = request.content_length
    if declared is not None and declared > store.max_bytes + MULTIPART_OVERHEAD:
        # Refused before reading a byte of it (RFC 9110 §15.5.14).
        raise ProblemError(413, f"A document may be at most {store.max_bytes} bytes.")
    part = await _file_part(request)
    try:
        upload = store.begin_upload(consultation.id)
    except DocumentError as exc:
        raise ProblemError(exc.status, exc.detail) from None
    try:
        try:
            await _receive(part, upload)
        except (HttpProcessingError, ValueError) as exc:
            raise DocumentError("The multipart body is malformed.") from exc
        except ConnectionResetError:
            log.info("consultation %s: an upload was interrupted", consultation.id)
            raise DocumentError(_GONE_DETAIL) from None
        name, filetype, sha256 = await asyncio.to_thread(upload.finish, _client_name(part))
        doc = store.register(upload, name, filetype, sha256, str(role))
    except DocumentError as exc:
        store.release(upload)
        await asyncio.to_thread(upload.abort)
        raise ProblemError(exc.status, exc.detail) from None
    except BaseException:
        store.release(upload)
        await asyncio.to_thread(upload.abort)
        raise
    if consultation.ended:
        # ended while the file arrived: the folder is already gone, this file with it
        store.remove_session(consultation.id)
        raise ProblemError(404, "The consultation has ended.")
    consultation.features.add("documents")
    log.info("consultation %s: document of %d bytes from the %s", consultation.id, doc.size, role)
    consultation.emit(DocumentShared(sender=role, document=doc))
    body = {**_public(doc), "url": gateway.channel(consultation, role).document_url(doc.id)}
    return web.json_response(
        body,
        status=201,
        headers={hdrs.LOCATION: _download_path(consultation.id, doc.id)},
    )


def _client_name(part: BodyPartReader) -> str | None:
    """The file name as the user saw it. Browsers send it as raw UTF-8 and escape only
    ``"``, CR and LF as ``%22``/``%0D``/``%0A`` (WHATWG HTML, multipart/form-data
    encoding); other clients (aiohttp, some scripts) percent-encode all of it. Undoing
    the escapes serves both; the sanitiser then makes the result harmless."""
    name = part.filename
    return unquote(name) if name and "%" in name else name


def _public(doc: Document) -> dict[str, object]:
    return doc.describe()


def _download_path(consultation_id: str, document_id: str) -> str:
    return (
        f"/api/sessions/{quote(consultation_id, safe='')}/documents/{quote(document_id, safe='')}"
    )


# -- download ----------------------------------------------------------------------------------


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the exact name as RFC 5987 ``filename*``
    (RFC 6266 §4.3: browsers that know ``filename*`` prefer it)."""
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%;' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _file_response(doc: Document) -> web.StreamResponse:
    if not doc.path.exists():
        raise ProblemError(404, "No such document in this consultation.")
    return web.FileResponse(
        doc.path,
        headers={
            hdrs.CONTENT_TYPE: doc.content_type,
            hdrs.CONTENT_DISPOSITION: content_disposition(doc.name),
            "X-Content-Type-Options": "nosniff",
            # a document is private: neither the browser nor a proxy keeps a copy
            hdrs.CACHE_CONTROL: "private, no-store",
            # opened directly (not downloaded) it still runs nothing
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


# -- routes ----------------------------------------------------------------------------------


@routes.post("/api/sessions/{id}/documents")
async def upload_document(request: web.Request) -> web.Response:
    consultation, role = require_participant(request)
    return await _upload(request, consultation, role)


@routes.get("/api/sessions/{id}/documents", allow_head=False)
async def list_documents(request: web.Request) -> web.Response:
    consultation, _ = require_participant(request)
    docs = _store(request).list(consultation.id)
    return web.json_response([_public(d) for d in docs])


@routes.get("/api/sessions/{id}/documents/{doc}")
async def download_document(request: web.Request) -> web.StreamResponse:
    ticket = request.query.get("ticket")
    if ticket is not None and request.headers.get(hdrs.AUTHORIZATION) is None:
        doc = _store(request).redeem_ticket(
            ticket,
            request.match_info["id"],
            request.match_info["doc"],
            consume=request.method != "HEAD",
        )
        consultation = gateway_of(request).directory.get(request.match_info["id"])
        if doc is None or consultation is None or consultation.ended:
            raise ProblemError(
                403, "This download link has been used or has expired; ask for a new one."
            )
        return _file_response(doc)
    consultation, _ = require_participant(request)
    return _file_response(_document(request, consultation))


@routes.post("/api/sessions/{id}/documents/{doc}/ticket")
async def mint_ticket(request: web.Request) -> web.Response:
    consultation, role = require_participant(request)
    doc = _document(request, consultation)
    url = gateway_of(request).channel(consultation, role).document_url(doc.id)
    store = _store(request)
    return web.json_response({"url": url, "expires_in": store.ticket_ttl}, status=201)


@routes.post("/api/sessions/{id}/documents/flash-upload")
async def flash_upload(request: web.Request) -> web.Response:
    """The SWF's upload (issue 10): Flash's ``FileReference.upload()`` sends the file as
    ``multipart/form-data`` in a field named ``Filedata`` (plus ``Filename`` and
    ``Upload`` fields) and cannot set an ``Authorization`` header, so the URL carries a
    one-time ticket bound to this consultation and the uploading participant's role,
    minted by the RTMP command ``uploadUrl()`` (two minutes, used up either way, as the
    download tickets of ``gateway/tickets.py``). Limits and errors as every upload
    (413, 415, 507); a used or expired ticket is ``403``. Success is ``200``, not ``201``:
    Flash Player reports any other status as an upload failure on some systems."""
    store = _store(request)
    cid = request.match_info["id"]
    ticket = request.query.get("ticket", "")
    role = next(
        (
            r
            for r in Role
            if store.tickets.redeem(ticket, cid, UPLOAD_TICKET_PREFIX + str(r), consume=False)
        ),
        None,
    )
    store.tickets.redeem(ticket, cid, UPLOAD_TICKET_PREFIX + str(role))  # used up either way
    consultation = gateway_of(request).directory.get(cid)
    if role is None or consultation is None or consultation.ended:
        raise ProblemError(403, "This upload link has been used or has expired; ask for a new one.")
    response = await _upload(request, consultation, role)
    response.set_status(200)
    return response


@routes.post("/k/{id}/documents")
async def customer_page_upload(request: web.Request) -> web.Response:
    # The cookie goes along with cross-site form posts; only our own page may upload.
    if not same_origin(request, required=True):
        raise ProblemError(403, "Cross-origin upload refused.")
    consultation, role = _customer_by_cookie(request)
    return await _upload(request, consultation, role)


@routes.get("/k/{id}/documents", allow_head=False)
async def customer_page_list(request: web.Request) -> web.Response:
    consultation, _ = _customer_by_cookie(request)
    return web.json_response([_public(d) for d in _store(request).list(consultation.id)])


@routes.get("/k/{id}/documents/{doc}")
async def customer_page_download(request: web.Request) -> web.StreamResponse:
    consultation, _ = _customer_by_cookie(request)
    return _file_response(_document(request, consultation))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
