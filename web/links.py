"""The absolute URLs handed to participants when a consultation is created.

Everything is built from the configuration (``--public-url`` or ``--host``/ports), not
from the request's Host header: the links go into e-mails and scripts, so they must not
depend on how the advisor happened to reach the API (and a forged Host header must not
end up in a customer's link).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from gateway.config import Config
from gateway.consultation import Consultation, Role

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
    rtmp_app = f"{config.rtmp_base()}/{RTMP_APP}"
    links: dict[str, Any] = {"token": participant.token}
    if role is Role.CUSTOMER:
        links["pin"] = participant.pin
    if role is Role.CUSTOMER:
        # the customer's way in: the current link id (a new one after "new PIN")
        link = quote(consultation.customer_link, safe="")
        links["page_url"] = f"{base}/k/{link}"
        links["flash_page_url"] = f"{base}/flash/{link}"
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
