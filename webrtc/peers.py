"""The only place the gateway creates ``RTCPeerConnection``s.

aiortc falls back to Google's public STUN server when ``iceServers`` is missing
(``RTCIceGatherer.getDefaultIceServers``); the terms of use promise that no third-party
service is contacted, so every peer gets an explicit list built from ``--stun`` /
``--turn`` (empty by default: host candidates only).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcicetransport import parse_stun_turn_uri

from gateway.config import Config, split_ice_url
from webrtc import seams
from webrtc.receive import ReceiveSettings


def parse_ice_server(url: str) -> RTCIceServer:
    """An ``RTCIceServer`` from a ``stun:``/``turn:``/``turns:`` URL (RFC 7064, RFC 7065).

    TURN credentials may be given as userinfo, ``turn:user:secret@host:3478``, because
    our flags take one URL per server; they are moved into ``username``/``credential``.
    Raises ValueError for a malformed URL (at start-up, not at the first call)."""
    clean, username, credential = split_ice_url(url)
    parse_stun_turn_uri(clean)  # raises ValueError when aiortc could not use it
    return RTCIceServer(urls=clean, username=username, credential=credential)


def ice_servers(config: Config) -> list[RTCIceServer]:
    """Our STUN/TURN servers, in flag order; an empty list, never aiortc's default."""
    return [parse_ice_server(url) for url in config.ice_urls()]


class PeerFactory:
    """Builds peers with our ICE servers and gathers on our ICE addresses."""

    def __init__(self, config: Config) -> None:
        self.servers = ice_servers(config)
        self.hosts = config.effective_ice_hosts()
        for host in self.hosts:
            # aioice binds one socket per address: names would fail only at the first call
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"--ice-host takes IP addresses, not {host!r}") from None
        self.receive = ReceiveSettings(
            config.rtp_receive, config.rtp_reorder_ms, config.rtp_video_wait_ms
        )
        seams.install()

    def configuration(self) -> RTCConfiguration:
        # A fresh list per peer: aiortc must not share (or mutate) ours.
        return RTCConfiguration(iceServers=list(self.servers))

    def create(self) -> RTCPeerConnection:
        return RTCPeerConnection(self.configuration())

    @contextmanager
    def gathering(self) -> Iterator[None]:
        """Wrap ``setLocalDescription``: candidates only on ``--ice-host`` addresses."""
        with seams.ice_hosts(self.hosts):
            yield
