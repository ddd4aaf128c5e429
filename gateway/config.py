"""Configuration: command-line flags, a TOML file (``--config``) and ``VB_*`` variables.

Precedence (highest first): command line, environment (``VB_HTTP_PORT``), TOML file,
embedded defaults. The defaults serve on loopback with state under ``./var`` so that
``make run`` works on a fresh machine with nothing else configured.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote


@dataclass(slots=True)
class Limits:
    """Limits against hostile peers. Loopback tests raise the per-address ones."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    max_connections_per_address: int = 32
    max_connections: int = 2000
    connection_rate_per_address: float = 20.0  # new connections per second, token bucket
    max_message_size: int = 8 * 1024 * 1024  # far above any real frame; a claim above closes
    max_chunk_size: int = 16 * 1024 * 1024
    max_chunk_streams: int = 64
    # RTMP before authentication (docs/rtmp.md "Limits"): before connect only messages
    # of pre_connect_message_size bytes with pre_connect_amf_values AMF values (this caps
    # the connect object's properties too); connected, commands up to
    # command_message_size and amf_max_values values; media and data only on a stream
    # whose publish was authorised. connect_timeout: seconds after the handshake to
    # present a valid token. rtmp_buffer_budget: partial messages of all connections.
    pre_connect_message_size: int = 4096
    pre_connect_amf_values: int = 256
    command_message_size: int = 64 * 1024
    amf_max_values: int = 10_000
    connect_timeout: float = 10.0
    rtmp_buffer_budget: int = 256 * 1024 * 1024
    player_buffer_bytes: int = 2 * 1024 * 1024
    # An RTMP player more than this many seconds behind live (bytes written to it but
    # not received, by when they were written) loses frames until the next keyframe.
    player_max_lag: float = 1.5
    # Kernel send buffer per RTMP socket: autotuning would grow it to 4 MB, i.e. seconds
    # of delay queued for a slow player before we notice and drop (live, not download).
    socket_send_buffer: int = 256 * 1024
    gop_cache_bytes: int = 8 * 1024 * 1024
    # RTMPT (docs/rtmp.md): a tunnel without a request for this long is ended (clients
    # often never send /close); a request body above max_body is refused with 413; output
    # the client does not collect beyond max_pending ends the tunnel (media already stops
    # at player_buffer_bytes, so only a client that stopped polling gets there).
    rtmpt_idle_timeout: float = 30.0
    rtmpt_max_body: int = 2 * 1024 * 1024
    rtmpt_max_pending: int = 4 * 1024 * 1024
    chat_max_chars: int = 2000
    chat_history: int = 500
    # Guessing (docs/privacy.md): the advisor login locks an account after
    # login_max_failures_per_account wrong passwords and an address after
    # login_max_failures_per_address, each within login_failure_window seconds and for
    # login_lockout seconds. A consultation's PIN is dead after pin_max_wrong wrong
    # entries (the advisor makes a new consultation); an address that entered
    # pin_max_wrong_per_address wrong PINs (any consultation) within pin_address_window
    # seconds is refused for pin_address_lockout seconds. Loopback tests raise the
    # per-address ones (every test client is 127.0.0.1).
    login_max_failures_per_account: int = 5
    login_max_failures_per_address: int = 20
    login_failure_window: float = 900.0
    login_lockout: float = 900.0
    pin_max_wrong: int = 5
    pin_max_wrong_per_address: int = 10
    pin_address_window: float = 900.0
    pin_address_lockout: float = 900.0
    # Documents (gateway/documents.py): per file, per consultation, and the lifetime of
    # a one-time download URL (for Flash's navigateToURL, which cannot send a token).
    document_max_bytes: int = 20 * 1024 * 1024
    document_quota_bytes: int = 100 * 1024 * 1024
    documents_per_session: int = 50
    document_ticket_ttl: float = 120.0
    # refuse uploads when the data dir's disk would fall below this much free space
    document_min_free_bytes: int = 64 * 1024 * 1024
    # Forms (gateway/forms): how long the one-time link in a customer's form event may
    # wait to be opened (Flash's navigateToURL), and how many forms one consultation holds.
    form_ticket_ttl: float = 1800.0
    forms_per_session: int = 20
    # Admission by measured capacity (gateway/monitor.py): the share of the machine's
    # cores the process may use, and the cores a consultation is expected to cost until
    # one has been measured.
    cpu_budget: float = 0.85
    consultation_cost: float = 0.35
    # The HTTP port (web/guard.py, docs/web.md "Protection of the HTTP port"): connections
    # in total and per address (IPv6 by /64; behind a NAT or proxy raise it), the time a
    # connection may wait for its next complete request head (the keep-alive), a request
    # body's grace period and then its minimum average rate, and how long shutdown waits
    # for unfinished requests before cutting them.
    http_max_connections: int = 1000
    http_max_connections_per_address: int = 128
    http_keepalive_timeout: float = 5.0
    http_body_timeout: float = 10.0
    http_body_min_rate: float = 1024.0
    http_shutdown_timeout: float = 2.0


@dataclass(slots=True)
class Bank:
    """Who the customer turns to after the consultation (the end screen, docs/web.md):
    ``[bank]`` in the TOML file, ``--bank-<name>`` flags, ``VB_BANK_<NAME>`` variables.
    Empty by default: the page then names no one and says to contact the bank. A table
    of its own so that name, logo, colours and imprint can join it later."""

    name: str = ""
    phone: str = ""
    email: str = ""
    website: str = ""
    hours: str = ""  # service hours as the bank writes them, e.g. "Mo–Fr 8–18 Uhr"


_BANK_FIELDS = tuple(f.name for f in fields(Bank))


@dataclass(slots=True)
class Config:
    host: str = "127.0.0.1"
    http_port: int = 8080
    rtmp_port: int = 1935
    rtmps_port: int = 1936
    data_dir: Path = Path("var")
    advisor_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Oldest TLS version accepted on HTTPS/RTMPTS and native RTMPS (docs/flash.md):
    # Flash Player 11 era systems (Windows 7 without updates) may offer only TLS 1.0.
    tls_min_version: str = "1.2"
    ice_host: list[str] = field(default_factory=list)
    stun: list[str] = field(default_factory=list)
    turn: list[str] = field(default_factory=list)
    access_log_days: int = 7
    public_url: str | None = None
    forms_dir: Path | None = None
    session_ttl: float = 4 * 3600.0
    session_grace: float = 300.0
    unjoined_ttl: float = 4 * 3600.0
    log_level: str = "INFO"
    log_format: str = "text"
    event_loop: str = "uvloop"
    metrics_listen: str | None = None
    metrics_token: str | None = None
    limits: Limits = field(default_factory=Limits)
    bank: Bank = field(default_factory=Bank)
    # cluster mode (docs/cluster.md); without these the node runs alone on SQLite
    database: str | None = None
    redis: str | None = None
    node_id: str | None = None
    rtmp_url: str | None = None
    node_url: str | None = None
    drain_timeout: float = 4 * 3600.0
    heartbeat: float = 2.0

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    def ice_urls(self) -> list[str]:
        """Our STUN and TURN servers, in flag order (none by default: never a
        third-party server, as the terms of use promise)."""
        return [*self.stun, *self.turn]

    def effective_ice_hosts(self) -> list[str]:
        """Addresses for ICE: configured ones, else ``--host`` when it is a specific address.

        An empty list means "every non-loopback interface" (aioice's own gathering).
        """
        if self.ice_host:
            return list(self.ice_host)
        try:
            addr = ipaddress.ip_address(self.host)
        except ValueError:
            return []
        return [] if addr.is_unspecified else [str(addr)]

    def base_url(self, scheme: str = "http") -> str:
        """Absolute base URL for links handed to participants."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        s = scheme + ("s" if self.tls else "")
        return f"{s}://{host}:{self.http_port}"

    def rtmp_base(self) -> str:
        if self.rtmp_url:
            return self.rtmp_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if self.public_url:
            from urllib.parse import urlsplit

            host = urlsplit(self.public_url).hostname or host
        if ":" in host:
            host = f"[{host}]"
        return f"rtmp://{host}:{self.rtmp_port}"


# flag name -> (type, help); lists are repeatable flags
_FLAGS: dict[str, tuple[str, str]] = {
    "host": ("str", "address to listen on (default 127.0.0.1)"),
    "http_port": ("int", "HTTP/WebSocket/RTMPT port (default 8080)"),
    "rtmp_port": ("int", "plain (unencrypted) RTMP port (default 1935; 0 switches it off)"),
    "rtmps_port": ("int", "native RTMPS port when TLS is configured (default 1936)"),
    "data_dir": ("path", "state directory (default ./var)"),
    "advisor_token": ("str", "static bearer token accepted as an advisor (automation)"),
    "tls_cert": ("path", "TLS certificate (PEM): HTTPS, WSS, RTMPTS, RTMPS"),
    "tls_key": ("path", "TLS private key (PEM)"),
    "tls_min_version": (
        "str",
        "oldest TLS version accepted: 1.0, 1.1, 1.2 (default) or 1.3 (old Flash-era systems)",
    ),
    "ice_host": ("list", "address for ICE candidates (repeatable)"),
    "stun": ("list", "STUN server URL (repeatable; none by default)"),
    "turn": ("list", "TURN server URL (repeatable; none by default)"),
    "access_log_days": ("int", "days to keep the access log (default 7)"),
    "public_url": ("str", "external base URL for links (default from --host/--http-port)"),
    "forms_dir": ("path", "folder of the operator's own form templates (*.xml, docs/forms.md)"),
    "session_ttl": ("float", "seconds a consultation may last (default 14400)"),
    "session_grace": (
        "float",
        "seconds a consultation stays open after everyone left (default 300)",
    ),
    "unjoined_ttl": (
        "float",
        "seconds after its start (or appointment) a consultation the customer never "
        "joined is removed (default 14400)",
    ),
    "log_level": ("str", "DEBUG, INFO, WARNING (default INFO)"),
    "log_format": ("str", "text or json (one object per line); no personal data either way"),
    "event_loop": ("str", "uvloop (default) or asyncio"),
    "metrics_listen": (
        "str",
        "serve /metrics only on this HOST:PORT (e.g. 127.0.0.1:9100), not on the web port",
    ),
    "metrics_token": ("str", "bearer token a Prometheus scrape of /metrics must send"),
    "database": ("str", "postgresql://… for accounts, sign-ins and statistics (default SQLite)"),
    "redis": ("str", "redis://… : cluster mode, this node joins the others (docs/cluster.md)"),
    "node_id": ("str", "this node's name in the cluster (default: host and HTTP port)"),
    "rtmp_url": ("str", "this node's public RTMP base, e.g. rtmp://n1.example:1935"),
    "node_url": ("str", "where the other nodes reach this one (default: --public-url)"),
    "drain_timeout": ("float", "seconds a draining node waits for its consultations"),
    "heartbeat": ("float", "seconds between cluster heartbeats (TTL: three of them)"),
}

# --tls-min-version values (ssl.TLSVersion names without the prefix)
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")

_LIMIT_TYPES = {f.name: f.type for f in fields(Limits)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    for name, (kind, help_text) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind == "list":
            parser.add_argument(flag, action="append", default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, help=help_text)
    for name in _BANK_FIELDS:
        parser.add_argument(
            f"--bank-{name}", dest=f"bank_{name}", default=None, help=f"bank contact: {name}"
        )
    parser.add_argument(
        "--limit",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="override a protection limit, e.g. max_connections_per_address=500",
    )


def split_ice_url(url: str) -> tuple[str, str | None, str | None]:
    """``turn:user:secret@host:3478`` → (``turn:host:3478``, user, secret).

    Our flags take one URL per server, so TURN credentials ride in the userinfo
    (percent-encoded where needed); browsers and aiortc want them apart."""
    scheme, sep, rest = url.partition(":")
    if not sep:
        raise ValueError(f"ICE server URL without a scheme: {url!r}")
    username = credential = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, _, secret = userinfo.partition(":")
        username, credential = unquote(user), unquote(secret)
    return f"{scheme}:{rest}", username, credential


def split_host_port(value: str) -> tuple[str, int]:
    """``127.0.0.1:9100`` / ``[::1]:9100`` → (host, port) for ``--metrics-listen``."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-listen expects HOST:PORT, not {value!r}")
    return host, int(port)


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "path":
        return Path(value)
    if kind == "list":
        if isinstance(value, str):
            return [v for v in (p.strip() for p in value.split(",")) if v]
        return [str(v) for v in value]
    return str(value)


def _apply_limit(limits: Limits, name: str, value: Any) -> None:
    if name not in _LIMIT_TYPES:
        raise ValueError(f"unknown limit {name!r}")
    current = getattr(limits, name)
    setattr(limits, name, type(current)(value))


def _set_bank(bank: Bank, name: str, value: Any, where: object) -> None:
    if name not in _BANK_FIELDS:
        raise ValueError(f"{where}: unknown bank setting {name!r}")
    if not isinstance(value, str):
        raise ValueError(f"{where}: bank setting {name!r} must be text")
    value = value.strip()
    if name == "website" and value and not value.startswith(("https://", "http://")):
        # it becomes a link on the customer's page: never javascript: or data:
        raise ValueError(f"{where}: bank website must be an http(s) URL, not {value!r}")
    setattr(bank, name, value)


def load(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    """Build the configuration from defaults < TOML < environment < command line."""
    env = os.environ if environ is None else environ
    cfg = Config()
    values: dict[str, Any] = {}
    limit_values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or env.get("VB_CONFIG")
    if config_path:
        with open(config_path, "rb") as fh:
            data = tomllib.load(fh)
        for key, value in data.items():
            key = key.replace("-", "_")
            if key == "limits" and isinstance(value, dict):
                limit_values.update(value)
            elif key == "bank" and isinstance(value, dict):
                for name, text in value.items():
                    _set_bank(cfg.bank, name.replace("-", "_"), text, config_path)
            elif key.startswith("bank_"):  # the flag's name, as for every other flag
                _set_bank(cfg.bank, key.removeprefix("bank_"), value, config_path)
            elif key in _FLAGS:
                values[key] = _coerce(_FLAGS[key][0], value)
            else:
                raise ValueError(f"{config_path}: unknown setting {key!r}")
    for name, (kind, _) in _FLAGS.items():
        env_value = env.get("VB_" + name.upper())
        if env_value is not None and env_value != "":
            values[name] = _coerce(kind, env_value)
    for name, (kind, _) in _FLAGS.items():
        arg_value = getattr(args, name, None)
        if arg_value is not None:
            values[name] = _coerce(kind, arg_value)
    for name in _BANK_FIELDS:
        text = env.get(f"VB_BANK_{name.upper()}") or None
        text = getattr(args, f"bank_{name}", None) or text
        if text is not None:
            _set_bank(cfg.bank, name, text, "--bank")
    for item in getattr(args, "limit", None) or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--limit expects NAME=VALUE, got {item!r}")
        limit_values[name.strip()] = value.strip()
    for name, value in values.items():
        setattr(cfg, name, value)
    for name, value in limit_values.items():
        _apply_limit(cfg.limits, name, value)
    for addr in cfg.ice_host:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(f"--ice-host expects an IP address, not {addr!r}") from None
    for flag, urls, schemes in (
        ("--stun", cfg.stun, ("stun:", "stuns:")),
        ("--turn", cfg.turn, ("turn:", "turns:")),
    ):
        for url in urls:
            if not url.startswith(schemes):
                raise ValueError(f"{flag} expects a {schemes[0]} URL (RFC 7064/7065), not {url!r}")
    if cfg.log_format not in ("text", "json"):
        raise ValueError(f"--log-format must be text or json, not {cfg.log_format!r}")
    if cfg.event_loop not in ("uvloop", "asyncio"):
        raise ValueError(f"--event-loop must be uvloop or asyncio, not {cfg.event_loop!r}")
    if cfg.metrics_listen is not None:
        split_host_port(cfg.metrics_listen)  # raises ValueError naming the flag
    if cfg.database is not None and not cfg.database.startswith(("postgresql://", "postgres://")):
        raise ValueError("--database expects a postgresql:// URL")
    if cfg.redis is not None and not cfg.redis.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("--redis expects a redis://, rediss:// or unix:// URL")
    if cfg.rtmp_url is not None and not cfg.rtmp_url.startswith(("rtmp://", "rtmps://")):
        raise ValueError("--rtmp-url expects an rtmp:// URL")
    if cfg.heartbeat <= 0 or cfg.drain_timeout < 0:
        raise ValueError("--heartbeat must be positive and --drain-timeout not negative")
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if cfg.tls_min_version not in TLS_VERSIONS:
        raise ValueError(
            f"--tls-min-version must be one of {', '.join(TLS_VERSIONS)}, "
            f"not {cfg.tls_min_version!r}"
        )
    for flag, port in (("--http-port", cfg.http_port), ("--rtmps-port", cfg.rtmps_port)):
        if not 0 <= port <= 65535:
            raise ValueError(f"{flag} must be a port number, not {port}")
    if not 0 <= cfg.rtmp_port <= 65535:
        raise ValueError(f"--rtmp-port must be a port number (0 = off), not {cfg.rtmp_port}")
    return cfg
