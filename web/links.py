"""The absolute URLs handed to participants when a consultation is created.

Everything is built from the configuration (``--public-url`` or ``--host``/ports), not
from the request's Host header: the links go into e-mails and scripts, so they must not
depend on how the advisor happened to reach the API (and a forged Host header must not
end up in a customer's link).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from gateway.config import Config
from gateway.consultation import Consultation, Role

if TYPE_CHECKING:
    from gateway.service import Gateway

# Upload tickets share the document store's ticket book; their item is "upload:<role>"
# (document ids are hex, so the two never meet).
UPLOAD_TICKET_PREFIX = "upload:"

RTMP_APP = "consult"


def iso_utc(ts: float) -> str:
    """ISO 8601 / RFC 3339 UTC timestamp with a ``Z``, as ``Consultation.describe``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def ws_base(config: Config) -> str:
    """``ws://`` or ``wss://`` counterpart of the HTTP base (RFC 6455 §3)."""
    base = config.base_url()
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


def rtmp_app_url(config: Config) -> str:
    """The RTMP application URL the API hands out (INTERFACE.md ``rtmp.*_url``).

    A token must never travel unencrypted where the pages are encrypted (issue 18):

    - TLS at the gateway: native RTMPS, ``rtmps://host:{rtmps-port}/consult`` (what
      ffmpeg, OBS and librtmp call rtmps);
    - HTTPS ended by a proxy in front (``--public-url https://…`` without
      ``--tls-cert``): RTMPT over that HTTPS origin, ``rtmpts://host/consult``;
    - plain HTTP: ``rtmp://host:{rtmp-port}/consult``, or with plain RTMP switched off
      (``--rtmp-port 0``) RTMPT on the web port, ``rtmpt://host:port/consult``.

    The plain RTMP port keeps serving old tools unless switched off; the API just does
    not advertise it once the pages are encrypted (docs/flash.md).
    """
    origin = urlsplit(config.base_url())
    host = urlsplit(config.rtmp_base()).netloc.rsplit(":", 1)[0]
    if config.tls and config.rtmps_port:
        return f"rtmps://{host}:{config.rtmps_port}/{RTMP_APP}"
    if origin.scheme == "https":
        return f"rtmpts://{origin.netloc}/{RTMP_APP}"
    if config.rtmp_port:
        return f"{config.rtmp_base()}/{RTMP_APP}"
    return f"rtmpt://{origin.netloc}/{RTMP_APP}"


def page_path(consultation_id: str, role: Role) -> str:
    cid = quote(consultation_id, safe="")
    return f"/advisor/{cid}" if role is Role.ADVISOR else f"/k/{cid}"


def events_path(consultation_id: str) -> str:
    return f"/api/sessions/{quote(consultation_id, safe='')}/events"


def participant_links(config: Config, consultation: Consultation, role: Role) -> dict[str, Any]:
    participant = consultation.participants[role]
    token = quote(participant.token, safe="")
    cid = quote(consultation.id, safe="")
    base = config.base_url()
    rtmp_app = rtmp_app_url(config)
    links: dict[str, Any] = {"token": participant.token}
    if role is Role.CUSTOMER:
        links["pin"] = participant.pin
    if role is Role.CUSTOMER:
        # the customer's way in: the current link id (a new one after "new PIN")
        link = quote(consultation.customer_link, safe="")
        links["page_url"] = f"{base}/k/{link}"
        links["flash_page_url"] = f"{base}/flash/{link}"
        if consultation.phone_code:  # the telephone leg is on (docs/phone.md)
            links["phone"] = {"number": config.phone_number, "code": consultation.phone_code}
    else:
        links["page_url"] = base + page_path(consultation.id, role)
    links["whip_url"] = f"{base}/whip/{cid}/{role}"
    # The role in the WHEP URL is the receiver's: it receives the other side's media.
    links["whep_url"] = f"{base}/whep/{cid}/{role}"
    links["events_url"] = f"{ws_base(config)}{events_path(consultation.id)}?token={token}"
    links["rtmp"] = {
        "connect_url": rtmp_app,
        # ffmpeg/librtmp carry ?token= in the stream name (INTERFACE.md, RTMP).
        "publish_url": f"{rtmp_app}/{role}?token={token}",
        "play_url": f"{rtmp_app}/{role.other}?token={token}",
    }
    return links


def session_document(config: Config, consultation: Consultation) -> dict[str, Any]:
    """The ``201`` body of ``POST /api/sessions`` (INTERFACE.md, exactly)."""
    return {
        "id": consultation.id,
        "expires_at": iso_utc(consultation.expires_at),
        "advisor": participant_links(config, consultation, Role.ADVISOR),
        "customer": participant_links(config, consultation, Role.CUSTOMER),
    }


class WebLinks:
    """The per-recipient URLs of documents and forms (gateway/channel.py ``Links``):
    absolute, from the configuration, each with a one-time ticket where it must work
    without a header or cookie (Flash's navigateToURL and FileReference.upload())."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def document_url(self, consultation_id: str, document_id: str) -> str | None:
        """An absolute one-time download URL (no token needed; Flash's navigateToURL)."""
        gateway = self._gateway
        if gateway.documents is None:
            return None
        ticket = gateway.documents.mint_ticket(consultation_id, document_id)
        cid, did = quote(consultation_id, safe=""), quote(document_id, safe="")
        return f"{gateway.config.base_url()}/api/sessions/{cid}/documents/{did}?ticket={ticket}"

    def upload_url(self, consultation_id: str, role: Role) -> str | None:
        """A one-time upload URL for Flash's ``FileReference.upload()``, which can set no
        header (so no bearer token): the ticket in the URL authorises one upload as
        ``role`` (web/documents.py ``flash_upload``; docs/flash.md)."""
        gateway = self._gateway
        if gateway.documents is None:
            return None
        ticket = gateway.documents.mint_ticket(consultation_id, UPLOAD_TICKET_PREFIX + str(role))
        cid = quote(consultation_id, safe="")
        base = gateway.config.base_url()
        return f"{base}/api/sessions/{cid}/documents/flash-upload?ticket={ticket}"

    def form_url(self, consultation_id: str, form_id: str, role: Role) -> str | None:
        """Where a participant opens a form: the customer gets the fill page with a
        one-time ticket (usable without a header or cookie: Flash's navigateToURL), the
        advisor the read-only view of the advisor pages."""
        gateway = self._gateway
        cid, fid = quote(consultation_id, safe=""), quote(form_id, safe="")
        base = gateway.config.base_url()
        if role is Role.ADVISOR:
            return f"{base}/advisor/{cid}/forms/{fid}"
        if gateway.forms is None:
            return None
        ticket = gateway.forms.mint_ticket(consultation_id, form_id)
        return f"{base}/k/{cid}/forms/{fid}?ticket={ticket}"
