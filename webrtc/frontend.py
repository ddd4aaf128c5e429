"""The WebRTC front-end: WHIP/WHEP sessions of every consultation on this node.

The HTTP layer (``web/whip.py``) authenticates and calls :meth:`WebRtcFrontEnd.publish`,
:meth:`~WebRtcFrontEnd.play` and :meth:`~WebRtcFrontEnd.delete`; nothing of aiortc
leaks out of this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass

from gateway.consultation import CAMERA, Consultation, Role
from gateway.service import Gateway
from webrtc.offer import OfferError
from webrtc.peers import PeerFactory
from webrtc.quality import INTERVAL as QUALITY_INTERVAL
from webrtc.quality import UplinkMeter, round_trip_ms, sample
from webrtc.session import PeerPlace, PeerSession
from webrtc.whep import WhepSession
from webrtc.whip import WhipSession

log = logging.getLogger(__name__)

WHIP = "whip"
WHEP = "whep"


@dataclass(frozen=True, slots=True)
class Answer:
    resource_id: str
    sdp: str


ENDED_REMEMBERED = 1000


class WebRtcFrontEnd:
    """Owns every peer. One WHIP and one WHEP session per participant: a new one
    replaces the old (a reloaded page must not leave a ghost publisher behind)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.factory = PeerFactory(gateway.config)
        self.sessions: dict[str, PeerSession] = {}
        # Recently ended resources: a client's DELETE that races the peer's own close
        # (the page closes its RTCPeerConnection, the server notices first) still gets
        # 200 — DELETE is idempotent (RFC 9110 §9.2.2). Bounded, oldest dropped first.
        self._ended: dict[str, tuple[str, str, Role]] = {}
        # (kind, consultation id, role, stream): one session of each
        self._by_participant: dict[tuple[str, str, Role, str], PeerSession] = {}
        # the customer's uplink as measured here, per consultation id (webrtc/quality.py)
        self._meters: dict[str, tuple[Consultation, UplinkMeter]] = {}
        self._quality_task: asyncio.Task[None] | None = None

    def ice_server_urls(self) -> list[tuple[str, str | None, str | None]]:
        """The configured STUN/TURN servers as (URL, username, credential) for the
        WHIP/WHEP ``Link`` headers (RFC 9725 §4.6), which go to the authenticated
        participant only."""
        return [(str(s.urls), s.username, s.credential) for s in self.factory.servers]

    async def publish(
        self, consultation: Consultation, role: Role, offer: str, stream: str = CAMERA
    ) -> Answer:
        return await self._open(WHIP, consultation, role, offer, stream)

    async def play(
        self, consultation: Consultation, role: Role, offer: str, stream: str = CAMERA
    ) -> Answer:
        return await self._open(WHEP, consultation, role, offer, stream)

    async def _open(
        self, kind: str, consultation: Consultation, role: Role, offer: str, stream: str
    ) -> Answer:
        if consultation.ended:
            raise OfferError("The consultation has ended.")
        resource_id = secrets.token_urlsafe(18)
        place = PeerPlace(self.factory, consultation, role, resource_id, self._forget, stream)
        session: PeerSession
        if kind == WHIP:
            session = WhipSession(place)
        else:
            session = WhepSession(place, self.gateway.transcoders)
        try:
            answer = await session.negotiate(offer)
        except OfferError:
            await session.abandon()
            raise
        except Exception as exc:
            # aiortc refused the description (no common transport, bad parameters...)
            await session.abandon()
            log.info("%s offer refused: %s", kind, exc)
            raise OfferError("The offer could not be negotiated.") from exc
        key = (kind, consultation.id, role, stream)
        old = self._by_participant.get(key)
        self.sessions[resource_id] = session
        self._by_participant[key] = session
        if old is not None:
            log.info("%s: replaced by a new %s session", old.label, kind)
            await old.close()
        if consultation.ended:
            # ended while we negotiated: its connections were closed without this one
            self._forget(session)
            await session.abandon()
            raise OfferError("The consultation has ended.")
        session.start()
        if kind == WHIP and role is Role.CUSTOMER and stream == CAMERA:
            self._meters.setdefault(consultation.id, (consultation, UplinkMeter(str(role))))
            if self._quality_task is None or self._quality_task.done():
                self._quality_task = asyncio.get_running_loop().create_task(self._watch_quality())
        return Answer(resource_id, answer)

    async def _watch_quality(self) -> None:
        """Every few seconds, each customer's uplink to the consultation (a ``quality``
        event for the advisor's page); once a customer stops sending, one last event says
        so and the meter is dropped. Runs while any meter does."""
        while self._meters:
            await asyncio.sleep(QUALITY_INTERVAL)
            for cid, (consultation, meter) in list(self._meters.items()):
                if consultation.ended:
                    del self._meters[cid]
                    continue
                whip = self._by_participant.get((WHIP, cid, Role.CUSTOMER, CAMERA))
                now = None
                rtt = None
                try:
                    if whip is not None and whip.pc.connectionState == "connected":
                        now = sample(await whip.pc.getStats(), time.monotonic())
                        whep = self._by_participant.get((WHEP, cid, Role.CUSTOMER, CAMERA))
                        if whep is not None and whep.pc.connectionState == "connected":
                            rtt = round_trip_ms(await whep.pc.getStats())
                except Exception:  # a peer closing under our feet: measure next time
                    log.debug("quality of %s not measured", whip.label if whip else cid)
                    continue
                customer = consultation.participants[Role.CUSTOMER]
                event = meter.measure(
                    now, expecting=customer.camera or customer.microphone, rtt_ms=rtt
                )
                consultation.emit(event)
                if whip is None:
                    del self._meters[cid]

    def _forget(self, session: PeerSession) -> None:
        if self.sessions.pop(session.resource_id, None) is not None:
            self._ended[session.resource_id] = (
                session.kind,
                session.consultation.id,
                session.role,
            )
            while len(self._ended) > ENDED_REMEMBERED:
                del self._ended[next(iter(self._ended))]
        key = (session.kind, session.consultation.id, session.role, session.stream_name)
        if self._by_participant.get(key) is session:
            del self._by_participant[key]

    def find(
        self, kind: str, consultation: Consultation, role: Role, resource_id: str
    ) -> PeerSession | None:
        session = self.sessions.get(resource_id)
        if (
            session is None
            or session.kind != kind
            or session.consultation is not consultation
            or session.role is not role
        ):
            return None
        return session

    async def delete(
        self, kind: str, consultation: Consultation, role: Role, resource_id: str
    ) -> bool:
        """End a session (``DELETE`` on its ``Location``); False when there is none."""
        session = self.find(kind, consultation, role, resource_id)
        if session is None:
            return self._ended.get(resource_id) == (kind, consultation.id, role)
        await session.close()
        return True

    async def close(self) -> None:
        """Close every peer (shutdown)."""
        self._meters.clear()
        if self._quality_task is not None:
            self._quality_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._quality_task
        sessions = list(self.sessions.values())
        if sessions:
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
