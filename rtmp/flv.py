"""FLV tag bodies (RTMP audio/video message payloads) <-> codec-neutral media units.

RTMP audio (type 8) and video (type 9) messages carry exactly an FLV tag body (FLV
spec v10.1, E.4.2 AUDIODATA / E.4.3 VIDEODATA). Flash Player sends no metadata, so
codecs are read from these first bytes.
"""

from __future__ import annotations

from gateway.media import AUDIO, VIDEO, MediaUnit

# E.4.3.1 VIDEODATA CodecID
VIDEO_CODECS = {
    2: "spark",  # Sorenson H.263
    3: "screen",
    4: "vp6",
    5: "vp6a",
    6: "screen2",
    7: "h264",
}
VIDEO_CODEC_IDS = {name: cid for cid, name in VIDEO_CODECS.items()}

# E.4.2.1 AUDIODATA SoundFormat
AUDIO_CODECS = {
    0: "pcm",  # platform endian (little endian in practice)
    1: "adpcm",
    2: "mp3",
    3: "pcm_le",
    4: "nellymoser",  # 16 kHz mono
    5: "nellymoser",  # 8 kHz mono
    6: "nellymoser",
    7: "alaw",
    8: "mulaw",
    10: "aac",
    11: "speex",
    14: "mp3",  # 8 kHz
}

FRAME_KEY = 1
FRAME_INTER = 2
FRAME_DISPOSABLE = 3
FRAME_GENERATED_KEY = 4
FRAME_INFO = 5


class FlvError(ValueError):
    """A tag body too short or otherwise unusable."""


def video_unit(payload: bytes, timestamp: int) -> MediaUnit:
    """Map a VIDEODATA body to a unit; H.264 payload stays AVCC (length-prefixed NALs)."""
    if not payload:
        raise FlvError("empty video message")
    head = payload[0]
    frame_type = head >> 4
    codec_id = head & 0x0F
    codec = VIDEO_CODECS.get(codec_id, f"video-{codec_id}")
    if frame_type == FRAME_INFO:
        # Video info/command frame (e.g. seek start/end): no picture, relay as is.
        return MediaUnit(VIDEO, codec, timestamp, b"", False, True, 0, payload, {"info": True})
    keyframe = frame_type in (FRAME_KEY, FRAME_GENERATED_KEY)
    if codec_id == 7:
        if len(payload) < 5:
            raise FlvError("AVC video message shorter than its 5-byte header")
        packet_type = payload[1]
        cts = int.from_bytes(payload[2:5], "big", signed=True)
        if packet_type == 0:  # AVCDecoderConfigurationRecord
            return MediaUnit(VIDEO, codec, timestamp, payload[5:], False, True, 0, payload)
        if packet_type == 2:  # end of sequence
            return MediaUnit(VIDEO, codec, timestamp, b"", False, True, 0, payload, {"eos": True})
        return MediaUnit(VIDEO, codec, timestamp, payload[5:], keyframe, False, cts, payload)
    # Spark/VP6: the whole remainder is the frame (VP6 carries a 1-byte adjustment first;
    # decoders take it, so it stays in the payload).
    return MediaUnit(VIDEO, codec, timestamp, payload[1:], keyframe, False, 0, payload)


def audio_unit(payload: bytes, timestamp: int) -> MediaUnit:
    """Map an AUDIODATA body to a unit; AAC keeps its AudioSpecificConfig as a config unit."""
    if not payload:
        raise FlvError("empty audio message")
    head = payload[0]
    fmt = head >> 4
    codec = AUDIO_CODECS.get(fmt, f"audio-{fmt}")
    info = {
        "rate_index": (head >> 2) & 0x03,
        "sample_bits": 16 if head & 0x02 else 8,
        "channels": 2 if head & 0x01 else 1,
        "sound_format": fmt,
    }
    if fmt == 10:
        if len(payload) < 2:
            raise FlvError("AAC audio message shorter than its 2-byte header")
        if payload[1] == 0:
            return MediaUnit(AUDIO, codec, timestamp, payload[2:], False, True, 0, payload, info)
        return MediaUnit(AUDIO, codec, timestamp, payload[2:], False, False, 0, payload, info)
    return MediaUnit(AUDIO, codec, timestamp, payload[1:], False, False, 0, payload, info)


def video_tag(unit: MediaUnit) -> bytes:
    """The VIDEODATA body for a unit (the original when it came from RTMP)."""
    if unit.wire is not None:
        return unit.wire
    codec_id = VIDEO_CODEC_IDS.get(unit.codec)
    if codec_id is None:
        raise FlvError(f"{unit.codec} cannot be carried in FLV")
    frame_type = FRAME_KEY if (unit.keyframe or unit.config) else FRAME_INTER
    head = bytes([(frame_type << 4) | codec_id])
    if codec_id == 7:
        packet_type = 0 if unit.config else 1
        return head + bytes([packet_type]) + (unit.cts & 0xFFFFFF).to_bytes(3, "big") + unit.payload
    return head + unit.payload


_AUDIO_HEAD = {
    # SoundFormat<<4 | SoundRate<<2 | SoundSize<<1 | SoundType (FLV spec E.4.2.1)
    "aac": 0xAF,  # AAC must declare 44 kHz, 16-bit, stereo whatever it carries
    "mp3": 0x2E,  # MP3, 44 kHz, 16-bit, mono
    "nellymoser": 0x42,  # 4: Nellymoser 16 kHz mono (what the transcoder produces)
    "speex": 0xB6,  # 11: Speex, must be 16 kHz mono (FLV spec: rate field ignored)
}


def audio_tag(unit: MediaUnit, head: int | None = None) -> bytes:
    """The AUDIODATA body for a unit (the original when it came from RTMP)."""
    if unit.wire is not None:
        return unit.wire
    if head is None and unit.info is not None:
        head = unit.info.get("flv_head")  # the encoder knows its rate and channels
    byte0 = head if head is not None else _AUDIO_HEAD.get(unit.codec)
    if byte0 is None:
        raise FlvError(f"{unit.codec} cannot be carried in FLV")
    if unit.codec == "aac":
        return bytes([byte0, 0 if unit.config else 1]) + unit.payload
    return bytes([byte0]) + unit.payload
