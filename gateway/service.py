"""The gateway's shared state handed to every front-end (no I/O here)."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from gateway.config import Config
from gateway.consultation import Directory, Grant
from gateway.routing import TranscoderSource


class AdvisorAuth:
    """Advisor credentials: the static ``--advisor-token``, the one-time login printed
    at start, and the cookie sessions created by logging in."""

    SESSION_TTL = 12 * 3600.0

    def __init__(self, static_token: str | None) -> None:
        self.static_token = static_token
        self.login_token: str | None = secrets.token_urlsafe(24)
        self._sessions: dict[str, float] = {}

    def check_bearer(self, token: str | None) -> bool:
        if not token:
            return False
        if self.static_token and hmac.compare_digest(self.static_token.encode(), token.encode()):
            return True
        return self.check_session(token)

    def redeem_login(self, token: str | None) -> str | None:
        """Exchange the one-time login for a cookie session id (once)."""
        if not token or self.login_token is None:
            return None
        if not hmac.compare_digest(self.login_token.encode(), token.encode()):
            return None
        self.login_token = None
        return self.new_session()

    def new_session(self) -> str:
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = time.time() + self.SESSION_TTL
        return sid

    def check_session(self, sid: str | None) -> bool:
        if not sid:
            return False
        expires = self._sessions.get(sid)
        if expires is None:
            return False
        if time.time() >= expires:
            self._sessions.pop(sid, None)
            return False
        return True

    def end_session(self, sid: str) -> None:
        self._sessions.pop(sid, None)


@dataclass
class Gateway:
    """Composition of the session core, shared by the web, RTMP and WebRTC front-ends."""

    config: Config
    directory: Directory
    advisor_auth: AdvisorAuth
    started_at: float = field(default_factory=time.time)
    accepting: bool = True
    # gateway.transcode.TranscoderPool, set by the composition root; None = passthrough only
    transcoders: TranscoderSource | None = None

    @classmethod
    def from_config(cls, config: Config) -> Gateway:
        directory = Directory(
            ttl=config.session_ttl,
            gop_cache_bytes=config.limits.gop_cache_bytes,
            chat_max_chars=config.limits.chat_max_chars,
            chat_history=config.limits.chat_history,
        )
        return cls(config, directory, AdvisorAuth(config.advisor_token))

    def authorize(self, token: str | None) -> Grant | None:
        return self.directory.authorize(token)
