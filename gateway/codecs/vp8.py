"""VP8 frame header facts (RFC 6386 §9.1): key frames and their picture size."""

from __future__ import annotations

_KEYFRAME_START_CODE = b"\x9d\x01\x2a"


def is_keyframe(frame: bytes) -> bool:
    """Bit 0 of the frame tag is 0 for a key frame."""
    return bool(frame) and (frame[0] & 1) == 0


def dimensions(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a key frame's header; None for an inter frame."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != _KEYFRAME_START_CODE:
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height
