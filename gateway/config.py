"""Configuration: command-line flags, a TOML file (``--config``) and ``VB_*`` variables.

Precedence (highest first): command line, environment (``VB_HTTP_PORT``), TOML file,
embedded defaults. The defaults serve on loopback with state under ``./var`` so that
``make run`` works on a fresh machine with nothing else configured.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
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
    # The telephone leg (docs/phone.md): the phone code's length (>= 8 digits: guessing
    # one of the open consultations' codes is hopeless under the limits below), tries per
    # call, wrong codes per calling number and over all calls in the window before a
    # lock-out; the seconds without RTP that end a leg (the PBX went
    # away without a BYE) and that a caller may take for the code.
    phone_code_digits: int = 10
    phone_code_tries: int = 3
    phone_wrong_per_caller: int = 6
    phone_wrong_global: int = 100
    phone_wrong_window: float = 900.0
    phone_wrong_lockout: float = 900.0
    phone_rtp_timeout: float = 30.0
    phone_code_timeout: float = 60.0
    # SIP requests per second an address outside --sip-allow gets an answer (403) for;
    # past that it gets none (a scanner learns nothing and costs nothing)
    sip_refusals_per_second: float = 2.0
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
    """The bank's look and contact (docs/web.md "The bank's look"): ``[bank]`` in the
    TOML file, ``--bank-<name>`` flags, ``VB_BANK_<NAME>`` variables. Empty by default:
    the pages then name no one, show no logo and keep the neutral blue, and the end
    screen says to contact one's bank.

    ``logo`` is a local file the gateway serves itself (``/brand/logo``: nothing is
    fetched from the bank's web site); ``color`` the primary colour as ``#rrggbb``, which
    must keep white text readable on it (WCAG 2.1 contrast ≥ 4.5:1, so the pages stay
    accessible); ``imprint`` and ``privacy`` the bank's own pages (http/https links)."""

    name: str = ""
    phone: str = ""
    email: str = ""
    website: str = ""
    hours: str = ""  # service hours as the bank writes them, e.g. "Mo–Fr 8–18 Uhr"
    address: str = ""  # postal address, one line ("Domplatz 1, 50667 Köln")
    logo: str = ""  # path of a PNG, JPEG, GIF, WebP or SVG file (at most LOGO_MAX_BYTES)
    color: str = ""  # "#rrggbb"
    imprint: str = ""  # URL of the bank's imprint (Impressum, § 5 DDG)
    privacy: str = ""  # URL of the bank's privacy notice (Art. 13 GDPR)

    def logo_type(self) -> str | None:
        """The logo's media type (from its extension), None without a logo."""
        if not self.logo:
            return None
        return LOGO_TYPES.get(Path(self.logo).suffix.lower())

    def palette(self) -> dict[str, str] | None:
        """The primary colour and its darker (hover) and light (background) shades,
        None for the neutral default."""
        if not self.color:
            return None
        rgb = _rgb(self.color)

        def hex_of(channels: list[int]) -> str:
            return "#" + "".join(f"{c:02x}" for c in channels)

        return {
            "primary": self.color.lower(),
            "dark": hex_of([round(c * 0.78) for c in rgb]),
            "light": hex_of([round(c * 0.1 + 255 * 0.9) for c in rgb]),
        }


# The logo is served by the gateway (web/pages.py); the types browsers and mail readers
# show without a plug-in. SVG is served with a sandboxing CSP (no script runs in it).
LOGO_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
LOGO_MAX_BYTES = 512 * 1024
# white text on the primary colour (buttons, top bar): WCAG 2.1 SC 1.4.3, normal text
MIN_CONTRAST_ON_WHITE = 4.5


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def contrast_with_white(color: str) -> float:
    """WCAG 2.1 contrast ratio of ``#rrggbb`` against white (relative luminance,
    https://www.w3.org/TR/WCAG21/#dfn-relative-luminance)."""

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _rgb(color))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return 1.05 / (luminance + 0.05)


_BANK_FIELDS = tuple(f.name for f in fields(Bank))


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The relay for invitation e-mails (``--smtp HOST:PORT``, docs/web.md "Invitations
    by e-mail"): the bank's own mail server; STARTTLS (RFC 3207) and login optional."""

    host: str
    port: int
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    sender: str | None = None  # From: address; default no-reply@<the gateway's host>


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
    # WebRTC receive side (docs/webrtc.md, "Receiving without playout delay"):
    # forward | reorder | aiortc; how long audio waits for a missing packet; how long a
    # video gap waits for its retransmission (NACK) before a keyframe is asked for.
    rtp_receive: str = "forward"
    rtp_reorder_ms: float = 20.0
    rtp_video_wait_ms: float = 100.0
    # the telephone leg (gateway/phone/, docs/phone.md); sip_port 0: off
    sip_port: int = 0
    sip_allow: list[str] = field(default_factory=list)
    phone_number: str = ""
    sip_trunk: str | None = None
    # the gateway as an extension of the PBX (REGISTER, refreshed; docs/phone.md)
    sip_register: str | None = None
    sip_password: str | None = None
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
    # invitation e-mails (gateway/invitations.py): none unless a relay is configured
    smtp: str | None = None
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str | None = None

    def smtp_settings(self) -> SmtpSettings | None:
        if not self.smtp:
            return None
        host, port = split_host_port(self.smtp, flag="--smtp")
        return SmtpSettings(
            host=host,
            port=port,
            starttls=self.smtp_starttls,
            user=self.smtp_user,
            password=self.smtp_password,
            sender=self.smtp_from,
        )

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
    "rtp_receive": (
        "str",
        "WebRTC receive path: forward (default: reorder only, forward RTP between browsers), "
        "reorder (reorder only, packetize again) or aiortc (aiortc's playout buffer)",
    ),
    "rtp_reorder_ms": (
        "float",
        "ms an audio packet waits for a missing earlier one before it is skipped (default 20)",
    ),
    "rtp_video_wait_ms": (
        "float",
        "ms a video frame waits for a lost packet's retransmission (NACK) before the gap is "
        "given up and a keyframe asked for (default 100)",
    ),
    "sip_port": ("int", "SIP port for the telephone leg, UDP and TCP (default 0: off)"),
    "sip_allow": (
        "list",
        "address or CIDR of the PBX/SIP trunk allowed to send INVITEs (repeatable; "
        "others get 403, rate-limited)",
    ),
    "phone_number": ("str", "the dial-in number shown to customers (display only)"),
    "sip_trunk": ("str", "HOST:PORT of the SIP proxy/trunk the advisor's dial-out goes through"),
    "sip_register": (
        "str",
        "sip:EXTENSION@PBX[:PORT]: register the gateway as this extension of the PBX "
        "(refreshed; the PBX is allowed to send INVITEs)",
    ),
    "sip_password": ("str", "digest password for --sip-register (better: VB_SIP_PASSWORD)"),
    "database": ("str", "postgresql://… for accounts, sign-ins and statistics (default SQLite)"),
    "redis": ("str", "redis://… : cluster mode, this node joins the others (docs/cluster.md)"),
    "node_id": ("str", "this node's name in the cluster (default: host and HTTP port)"),
    "rtmp_url": ("str", "this node's public RTMP base, e.g. rtmp://n1.example:1935"),
    "node_url": ("str", "where the other nodes reach this one (default: --public-url)"),
    "drain_timeout": ("float", "seconds a draining node waits for its consultations"),
    "heartbeat": ("float", "seconds between cluster heartbeats (TTL: three of them)"),
    "smtp": ("str", "mail relay HOST:PORT for invitation e-mails (none by default)"),
    "smtp_starttls": ("bool", "use STARTTLS with the mail relay"),
    "smtp_user": ("str", "user name at the mail relay"),
    "smtp_password": ("str", "password at the mail relay (better: VB_SMTP_PASSWORD)"),
    "smtp_from": ("str", "From: address of invitations (default no-reply@ the gateway's host)"),
}

RTP_RECEIVE_MODES = ("forward", "reorder", "aiortc")

# --tls-min-version values (ssl.TLSVersion names without the prefix)
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")

_LIMIT_TYPES = {f.name: f.type for f in fields(Limits)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    for name, (kind, help_text) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind == "list":
            parser.add_argument(flag, action="append", default=None, help=help_text)
        elif kind == "bool":
            parser.add_argument(
                flag, action="store_const", const="true", default=None, help=help_text
            )
        else:
            parser.add_argument(flag, default=None, help=help_text)
    for name in _BANK_FIELDS:
        parser.add_argument(
            f"--bank-{name}",
            dest=f"bank_{name}",
            default=None,
            help=f"the bank's look and contact: {name}",
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


def split_host_port(value: str, flag: str = "--metrics-listen") -> tuple[str, int]:
    """``127.0.0.1:9100`` / ``[::1]:9100`` → (host, port) for ``--metrics-listen`` (or
    ``flag``: ``--smtp``, ``--sip-trunk``, ``--sip-register``)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{flag} expects HOST:PORT, not {value!r}")
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
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"expected true or false, not {value!r}")
        return text in ("1", "true", "yes", "on")
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
    if (
        name in ("website", "imprint", "privacy")
        and value
        and not value.startswith(("https://", "http://"))
    ):
        # it becomes a link on the customer's page: never javascript: or data:
        raise ValueError(f"{where}: bank {name} must be an http(s) URL, not {value!r}")
    if name == "color" and value:
        if re.fullmatch(r"#[0-9a-fA-F]{6}", value) is None:
            raise ValueError(f"{where}: bank color must be #rrggbb, not {value!r}")
        ratio = contrast_with_white(value)
        if ratio < MIN_CONTRAST_ON_WHITE:
            raise ValueError(
                f"{where}: bank color {value} is too light for white text on it "
                f"(contrast {ratio:.1f}:1, at least {MIN_CONTRAST_ON_WHITE}:1 needed, "
                "WCAG 2.1 SC 1.4.3); choose a darker shade"
            )
    if name == "logo" and value:
        path = Path(value).expanduser()
        if path.suffix.lower() not in LOGO_TYPES:
            raise ValueError(
                f"{where}: bank logo must be one of {', '.join(sorted(LOGO_TYPES))}, not {value!r}"
            )
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ValueError(f"{where}: bank logo {value!r} cannot be read: {exc}") from None
        if not path.is_file() or size > LOGO_MAX_BYTES:
            raise ValueError(
                f"{where}: bank logo {value!r} must be a file of at most "
                f"{LOGO_MAX_BYTES // 1024} KB"
            )
        value = str(path.resolve())
    setattr(bank, name, value)


def sip_registration(value: str) -> tuple[str, str, tuple[str, int]]:
    """``sip:EXTENSION@PBX[:PORT]`` -> (address of record, extension, registrar address)."""
    rest = value.removeprefix("sip:")
    user, at, hostport = rest.partition("@")
    if not value.startswith("sip:") or not at or not user or not hostport or ";" in rest:
        raise ValueError(f"--sip-register expects sip:EXTENSION@PBX[:PORT], not {value!r}")
    has_port = "]:" in hostport if hostport.startswith("[") else ":" in hostport
    host, port = split_host_port(hostport if has_port else hostport + ":5060", "--sip-register")
    return f"sip:{user}@{host}", user, (host, port)


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
                    name = name.replace("-", "_")
                    if name == "logo" and isinstance(text, str) and text.strip():
                        # a relative logo path is read beside the TOML file
                        text = str(Path(config_path).parent / Path(text.strip()).expanduser())
                    _set_bank(cfg.bank, name, text, config_path)
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
    cfg.smtp_settings()  # --smtp HOST:PORT, or a ValueError naming the flag
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
    if not 0 <= cfg.sip_port <= 65535:
        raise ValueError(f"--sip-port must be a port number (0 = off), not {cfg.sip_port}")
    for cidr in cfg.sip_allow:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"--sip-allow expects an address or CIDR, not {cidr!r}") from None
    if cfg.sip_port and not cfg.sip_allow:
        raise ValueError("--sip-port needs --sip-allow (the PBX's addresses): port 5060 is scanned")
    if cfg.sip_trunk is not None:
        split_host_port(cfg.sip_trunk, "--sip-trunk")
    if cfg.sip_register is not None:
        if not cfg.sip_port:
            raise ValueError("--sip-register needs --sip-port")
        sip_registration(cfg.sip_register)
    if cfg.limits.phone_code_digits < 8:
        raise ValueError("phone_code_digits must be at least 8")
    if not 0 <= cfg.rtmp_port <= 65535:
        raise ValueError(f"--rtmp-port must be a port number (0 = off), not {cfg.rtmp_port}")
    if cfg.rtp_receive not in RTP_RECEIVE_MODES:
        raise ValueError(
            f"--rtp-receive must be one of {', '.join(RTP_RECEIVE_MODES)}, not {cfg.rtp_receive!r}"
        )
    for flag, ms in (
        ("--rtp-reorder-ms", cfg.rtp_reorder_ms),
        ("--rtp-video-wait-ms", cfg.rtp_video_wait_ms),
    ):
        if not 0 <= ms <= 1000:
            raise ValueError(f"{flag} must be between 0 and 1000 milliseconds, not {ms}")
    return cfg
