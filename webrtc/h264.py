"""Minimal H.264 framing helpers for the WebRTC front-end.

WebRTC carries H.264 as Annex-B (start codes, RFC 6184 depayloaded by aiortc); the
session core carries AVCC (4-byte length prefixes) plus an ``AVCDecoderConfigurationRecord``
config unit (ISO/IEC 14496-15 §5.2.4.1), as FLV does (docs/media-pipeline.md).

These are local until ``gateway/h264.py`` (which the pipeline contract names as the
home of these conversions) exists; then this module should go and its callers use that.
"""

from __future__ import annotations

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

START_CODE = b"\x00\x00\x00\x01"


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else 0


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte stream (3- or 4-byte start codes, H.264 Annex B).

    Emulation prevention (§7.4.1) guarantees 00 00 01 never occurs inside a NAL unit;
    trailing zero bytes belong to the next start code and are stripped."""
    nals: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j < 0 else j
        nal = data[start:end].rstrip(b"\x00") if j >= 0 else data[start:end]
        if nal:
            nals.append(nal)
        i = j
    return nals


def to_avcc(nals: list[bytes]) -> bytes:
    """NAL units with 4-byte big-endian length prefixes (AVCC, lengthSizeMinusOne = 3)."""
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def split_avcc(payload: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of an AVCC access unit; a truncated tail is dropped."""
    nals: list[bytes] = []
    pos = 0
    while pos + length_size <= len(payload):
        size = int.from_bytes(payload[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(payload):
            break
        nals.append(payload[pos : pos + size])
        pos += size
    return nals


def to_annexb(nals: list[bytes]) -> bytes:
    return b"".join(START_CODE + n for n in nals)


def build_avcc_record(sps: list[bytes], pps: list[bytes]) -> bytes:
    """``AVCDecoderConfigurationRecord`` (ISO/IEC 14496-15 §5.2.4.1) for SPS/PPS.

    Profile, compatibility and level come from the first SPS (bytes 1..3 after the NAL
    header, H.264 §7.3.2.1.1); lengthSizeMinusOne is 3 (4-byte lengths)."""
    if not sps or len(sps[0]) < 4:
        raise ValueError("an SPS of at least 4 bytes is required")
    first = sps[0]
    out = bytearray([1, first[1], first[2], first[3], 0xFC | 3, 0xE0 | len(sps)])
    for nal in sps:
        out += len(nal).to_bytes(2, "big") + nal
    out.append(len(pps))
    for nal in pps:
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def parse_avcc_record(record: bytes) -> tuple[list[bytes], list[bytes], int]:
    """(SPS list, PPS list, NAL length size) of an ``AVCDecoderConfigurationRecord``."""
    if len(record) < 7 or record[0] != 1:
        raise ValueError("not an AVCDecoderConfigurationRecord")
    length_size = (record[4] & 3) + 1
    pos = 5
    lists: list[list[bytes]] = []
    for mask in (0x1F, 0xFF):
        if pos >= len(record):
            raise ValueError("truncated AVCDecoderConfigurationRecord")
        count = record[pos] & mask
        pos += 1
        items = []
        for _ in range(count):
            if pos + 2 > len(record):
                raise ValueError("truncated AVCDecoderConfigurationRecord")
            size = int.from_bytes(record[pos : pos + 2], "big")
            pos += 2
            if pos + size > len(record):
                raise ValueError("truncated AVCDecoderConfigurationRecord")
            items.append(record[pos : pos + size])
            pos += size
        lists.append(items)
    return lists[0], lists[1], length_size
