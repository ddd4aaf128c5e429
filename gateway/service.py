"""The gateway's shared state handed to every front-end (no I/O here)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.advisors import AdvisorAccounts
from gateway.channel import Links, ParticipantChannel
from gateway.config import Config
from gateway.consultation import OPERATOR, Consultation, Directory, Grant, Role
from gateway.documents import DocumentStore
from gateway.feedback import FeedbackDesk
from gateway.forms import FormDesk, FormLibrary
from gateway.monitor import Monitor
from gateway.stats import Statistics, row_for
from gateway.store import Backends, SessionRecord, SessionStore, open_backends

if TYPE_CHECKING:  # PyAV loads with the transcoders only
    from gateway.transcode.pool import TranscoderPool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AdvisorSession:
    expires: float
    # the advisor account (None: the one-time login), and its password generation at
    # login: a removed account or a changed password ends the session
    account: str | None = None
    generation: str | None = None
    # when a shared store last confirmed it (the clock's time; 0: a local session)
    checked: float = 0.0

    @property
    def principal(self) -> str:
        """Who owns what this session creates: the account, or the operator."""
        return self.account if self.account is not None else OPERATOR


def session_key(sid: str) -> str:
    """What the store keeps of a session id: its SHA-256 (the id is a bearer credential;
    a copy of the table must not sign anybody in)."""
    return hashlib.sha256(sid.encode()).hexdigest()


class AdvisorAuth:
    """Advisor credentials: the static ``--advisor-token``, the one-time login printed
    at start, advisor accounts (``gateway.advisors``, name and password) and the cookie
    sessions created by logging in.

    Each credential names an advisor *principal*, who owns the consultations it creates
    (``Consultation.owner``): the account name, or ``OPERATOR`` for the static token and
    the one-time login (the operator who started the service, no account)."""

    SESSION_TTL = 12 * 3600.0
    # With a shared store (PostgreSQL, docs/cluster.md) a session made on another node is
    # fetched when first seen, and every session is checked again this often: a sign-out,
    # a removed account or a new password on one node ends it on every node within this.
    SHARED_RECHECK = 5.0
    # The one-time login link works once, and only this long after start: it is printed
    # to a terminal or a journal that others may read later (issue 11, item 11).
    LOGIN_LINK_TTL = 15 * 60.0

    def __init__(
        self,
        static_token: str | None,
        accounts: AdvisorAccounts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.static_token = static_token
        self.login_token: str | None = secrets.token_urlsafe(24)
        self.accounts = accounts
        self.clock = clock
        self.login_expires = clock() + self.LOGIN_LINK_TTL
        self._sessions: dict[str, AdvisorSession] = {}
        # the cluster's session store; None: sessions live in this process only
        self.shared: SessionStore | None = None

    def check_bearer(self, token: str | None) -> bool:
        return self.advisor_for(token) is not None

    def advisor_for(self, token: str | None) -> str | None:
        """The advisor principal of a bearer token (the static token or a cookie session
        id), or None."""
        if not token:
            return None
        if self.static_token and hmac.compare_digest(self.static_token.encode(), token.encode()):
            return OPERATOR
        entry = self.session(token)
        return None if entry is None else entry.principal

    def redeem_login(self, token: str | None) -> str | None:
        """Exchange the one-time login for a cookie session id (once, and only within
        ``LOGIN_LINK_TTL`` of the start)."""
        if not token or self.login_token is None:
            return None
        if self.clock() >= self.login_expires:
            self.login_token = None
            return None
        if not hmac.compare_digest(self.login_token.encode(), token.encode()):
            return None
        self.login_token = None
        return self.new_session()

    def new_session(self, account: str | None = None, generation: str | None = None) -> str:
        now = self.clock()
        # forget expired sessions (bounded memory without a timer)
        for sid in [s for s, entry in self._sessions.items() if entry.expires <= now]:
            del self._sessions[sid]
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = AdvisorSession(now + self.SESSION_TTL, account, generation)
        return sid

    def check_session(self, sid: str | None) -> bool:
        return self.session(sid) is not None

    def session(self, sid: str | None) -> AdvisorSession | None:
        """The live session for ``sid``, or None (unknown, expired, account removed or
        its password changed since the login)."""
        if not sid:
            return None
        entry = self._sessions.get(sid)
        if entry is None:
            return None
        if self.clock() >= entry.expires:
            self._sessions.pop(sid, None)
            return None
        if self.shared is not None:
            # confirmed by the store (refresh, run before each request's handler): no
            # database call here, on the event loop
            return entry
        if entry.account is not None and (
            self.accounts is None or self.accounts.generation(entry.account) != entry.generation
        ):
            self._sessions.pop(sid, None)
            return None
        return entry

    def end_session(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    # -- the cluster's shared sessions (gateway/store/) --------------------------------------
    async def publish(self, sid: str) -> None:
        """Store a new session so every node knows it (before its cookie is handed out)."""
        entry = self._sessions.get(sid)
        if self.shared is None or entry is None:
            return
        entry.checked = self.clock()
        record = SessionRecord(entry.expires, entry.account, entry.generation)
        await asyncio.to_thread(self.shared.put_session, session_key(sid), record, self.clock())

    async def withdraw(self, sid: str) -> None:
        """Sign-out: the session ends on every node (the others within SHARED_RECHECK)."""
        self.end_session(sid)
        if self.shared is not None:
            await asyncio.to_thread(self.shared.delete_session, session_key(sid))

    async def refresh(self, sid: str) -> None:
        """Before a request that carries ``sid``: load the session from the shared store
        when this node has not seen it, or has not checked it for SHARED_RECHECK."""
        shared = self.shared
        if shared is None or not sid or len(sid) > 256:
            return
        if self.static_token and hmac.compare_digest(self.static_token.encode(), sid.encode()):
            return
        now = self.clock()
        entry = self._sessions.get(sid)
        if entry is not None and now - entry.checked < self.SHARED_RECHECK:
            return
        record = await asyncio.to_thread(shared.get_session, session_key(sid), now)
        valid = record is not None and (
            record.account is None
            or (
                self.accounts is not None
                and await asyncio.to_thread(self.accounts.generation, record.account)
                == record.generation
            )
        )
        if not valid or record is None:
            self._sessions.pop(sid, None)
            return
        self._sessions[sid] = AdvisorSession(
            record.expires, record.account, record.generation, checked=now
        )


@dataclass
class Gateway:
    """Composition of the session core, shared by the web, RTMP and WebRTC front-ends."""

    config: Config
    directory: Directory
    advisor_auth: AdvisorAuth
    started_at: float = field(default_factory=time.time)
    accepting: bool = True
    # set by the composition root; None = passthrough only
    transcoders: TranscoderPool | None = None
    # Documents and statistics live under --data-dir; the composition root turns them on
    # (open_storage), so a Gateway built in a unit test writes nothing to disk.
    documents: DocumentStore | None = None
    statistics: Statistics | None = None
    # the customer's rating from the end screen, counted in the statistics row
    feedback: FeedbackDesk | None = None
    # Forms become documents, so they come with the document store (open_storage).
    forms: FormDesk | None = None
    # gateway.monitor.Monitor (ops monitor, admission), set by the composition root
    monitor: Monitor | None = None
    # Open connections per front-end kind ("rtmp", "rtmps", "rtmpt", "webrtc"), counted
    # by the front-ends themselves (/metrics): kind -> a function returning the count.
    connection_counters: dict[str, Callable[[], int]] = field(default_factory=dict)
    # The web layer's URL builder (web/links.py WebLinks), set when its routes are
    # mounted: documents and forms are reached there (None: events carry no URLs).
    links: Links | None = None
    # The telephone leg's dial-out (gateway/phone/, docs/phone.md), set by the composition
    # root with --sip-trunk: dial(consultation, number) starts a call to the customer.
    phone_dialer: Callable[[Consultation, str], None] | None = None
    # the data-access layer (gateway/store/), opened by open_storage
    store: Backends | None = None
    # cluster mode (gateway/cluster/): this node's membership, set by the composition root
    cluster: Any = None

    @classmethod
    def from_config(cls, config: Config) -> Gateway:
        directory = Directory(
            ttl=config.session_ttl,
            gop_cache_bytes=config.limits.gop_cache_bytes,
            chat_max_chars=config.limits.chat_max_chars,
            chat_history=config.limits.chat_history,
            grace=config.session_grace,
            unjoined_ttl=config.unjoined_ttl,
            pin_max_wrong=config.limits.pin_max_wrong,
            phone_code_digits=config.limits.phone_code_digits if config.sip_port else 0,
        )
        return cls(config, directory, AdvisorAuth(config.advisor_token))

    def authorize(self, token: str | None) -> Grant | None:
        return self.directory.authorize(token)

    async def elsewhere_rtmp(self, identifier: str) -> str | None:
        """Cluster mode: the RTMP application URL of the live node that holds the
        consultation of ``identifier`` (a token), or None."""
        if self.cluster is None:
            return None
        node = await self.cluster.locate(identifier)
        return None if node is None else str(node.rtmp)

    # -- documents and statistics ---------------------------------------------------------
    def open_storage(self) -> None:
        """Documents under ``<data-dir>/sessions``, statistics in ``stats.sqlite``; at the
        end of every consultation its documents are deleted and one row is written."""
        cfg = self.config
        limits = cfg.limits
        self.documents = DocumentStore(
            cfg.data_dir / "sessions",
            max_bytes=limits.document_max_bytes,
            quota_bytes=limits.document_quota_bytes,
            max_documents=limits.documents_per_session,
            ticket_ttl=limits.document_ticket_ttl,
            min_free_bytes=limits.document_min_free_bytes,
        )
        self.store = store = open_backends(cfg.database, cfg.data_dir)
        self.statistics = Statistics(cfg.data_dir / "stats.sqlite", backend=store.stats)
        self.feedback = FeedbackDesk(self.statistics)
        self.forms = FormDesk(
            FormLibrary.load(cfg.forms_dir),
            self.documents,
            ticket_ttl=limits.form_ticket_ttl,
            max_forms=limits.forms_per_session,
        )
        self.advisor_auth.accounts = AdvisorAccounts(cfg.data_dir, store=store.accounts)
        if store.shared:
            self.advisor_auth.shared = store.sessions
        self.directory.on_end.append(self._consultation_ended)

    def _consultation_ended(self, consultation: Consultation) -> None:
        if self.forms is not None:
            self.forms.remove_session(consultation.id)
        if self.documents is not None:
            self.documents.remove_session(consultation.id)
        if self.statistics is not None:
            rating = self.feedback.take(consultation.id) if self.feedback else None
            row = self.statistics.record(row_for(consultation, feedback=rating))
            if self.feedback is not None:
                self.feedback.row_written(consultation, row, rated=rating is not None)

    def channel(self, consultation: Consultation, role: Role) -> ParticipantChannel:
        """``role``'s channel into ``consultation`` (gateway/channel.py): the one port
        the front-ends subscribe through."""
        return ParticipantChannel(
            consultation, role, documents=self.documents, forms=self.forms, links=self.links
        )
