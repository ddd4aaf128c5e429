"""Compatibility: the aiortc test client lives in ``bench/testkit/webrtc_client.py`` (shared
with ``bench/``); new code imports ``bench.testkit.webrtc_client``."""

from bench.testkit.webrtc_client import (
    HEIGHT,
    WIDTH,
    PatternVideoTrack,
    Poster,
    Received,
    SineAudioTrack,
    close_all,
    http_poster,
    negotiate,
    new_peer,
    player,
    prefer,
    publisher,
    wait_for,
)

__all__ = [
    "HEIGHT",
    "WIDTH",
    "PatternVideoTrack",
    "Poster",
    "Received",
    "SineAudioTrack",
    "close_all",
    "http_poster",
    "negotiate",
    "new_peer",
    "player",
    "prefer",
    "publisher",
    "wait_for",
]
