"""FLV tag bodies (RTMP audio/video message payloads) <-> codec-neutral media units.

RTMP audio (type 8) and video (type 9) messages carry exactly an FLV tag body (FLV
spec v10.1, E.4.2 AUDIODATA / E.4.3 VIDEODATA). Flash Player sends no metadata, so
codecs are read from these first bytes.
"""

from __future__ import annotations

import functools

from gateway.media import AUDIO, VIDEO, AudioParams, MediaUnit

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

# E.4.2.1 SoundRate (2 bits) -> Hz, and the SoundFormats whose rate and channels are
# fixed whatever the head's rate and type bits say.
SOUND_RATES = (5512, 11025, 22050, 44100)
FIXED_FORMATS = {
    4: (16000, 1),  # Nellymoser 16 kHz mono
    5: (8000, 1),  # Nellymoser 8 kHz mono
    7: (8000, 1),  # G.711 A-law (FFmpeg's FLV demuxer also fixes 8 kHz)
    8: (8000, 1),  # G.711 mu-law
    11: (16000, 1),  # Speex: always 16 kHz mono in FLV
    14: (8000, 1),  # MP3 8 kHz
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
        return MediaUnit(VIDEO, codec, timestamp, b"", False, True, 0, payload)
    keyframe = frame_type in (FRAME_KEY, FRAME_GENERATED_KEY)
    if codec_id == 7:
        if len(payload) < 5:
            raise FlvError("AVC video message shorter than its 5-byte header")
        packet_type = payload[1]
        cts = int.from_bytes(payload[2:5], "big", signed=True)
        if packet_type == 0:  # AVCDecoderConfigurationRecord
            return MediaUnit(VIDEO, codec, timestamp, payload[5:], False, True, 0, payload)
        if packet_type == 2:  # end of sequence
            return MediaUnit(VIDEO, codec, timestamp, b"", False, True, 0, payload)
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
    info = audio_params(head)
    if fmt == 10:
        if len(payload) < 2:
            raise FlvError("AAC audio message shorter than its 2-byte header")
        if payload[1] == 0:
            return MediaUnit(AUDIO, codec, timestamp, payload[2:], False, True, 0, payload, info)
        return MediaUnit(AUDIO, codec, timestamp, payload[2:], False, False, 0, payload, info)
    return MediaUnit(AUDIO, codec, timestamp, payload[1:], False, False, 0, payload, info)


@functools.cache
def audio_params(head: int) -> AudioParams:
    """What an AUDIODATA head byte (E.4.2.1) says: SoundFormat<<4 | SoundRate<<2 |
    SoundSize<<1 | SoundType, with the fixed rates of Nellymoser, G.711, Speex and MP3
    8 kHz. (AAC declares 44 kHz stereo here whatever it carries; its
    AudioSpecificConfig is authoritative and goes to the decoder.) 256 heads: cached,
    so units share one immutable value."""
    rate, channels = FIXED_FORMATS.get(head >> 4, (SOUND_RATES[(head >> 2) & 3], 0))
    return AudioParams(
        sample_rate=rate,
        channels=channels or (2 if head & 0x01 else 1),
        sample_bits=16 if head & 0x02 else 8,
    )


def audio_head(codec: str, sample_rate: int, channels: int) -> int:
    """The AUDIODATA head byte (FLV spec E.4.2.1) for audio an encoder produced."""
    stereo = 1 if channels == 2 else 0
    if codec == "aac":
        return 0xAF  # AAC is always declared 44 kHz, 16-bit, stereo
    if codec == "nellymoser":
        if sample_rate == 16000:
            return 0x42  # SoundFormat 4: Nellymoser 16 kHz mono
        if sample_rate == 8000:
            return 0x52  # SoundFormat 5: Nellymoser 8 kHz mono
        return 0x60 | (SOUND_RATES.index(sample_rate) << 2) | 0x02
    if codec == "mp3":
        if sample_rate == 8000:
            return 0xE2 | stereo  # SoundFormat 14: MP3 8 kHz
        return 0x20 | (SOUND_RATES.index(sample_rate) << 2) | 0x02 | stereo
    raise FlvError(f"{codec} cannot be carried in FLV")


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


_FROM_PARAMS = frozenset({"aac", "nellymoser", "mp3"})


@functools.cache
def _head_from_params(codec: str, sample_rate: int | None, channels: int | None) -> int | None:
    if sample_rate is None or channels is None:
        return None
    try:
        return audio_head(codec, sample_rate, channels)
    except ValueError:  # a rate FLV has no code for: the codec's default head
        return None


def audio_tag(unit: MediaUnit, head: int | None = None) -> bytes:
    """The AUDIODATA body for a unit (the original when it came from RTMP)."""
    if unit.wire is not None:
        return unit.wire
    params = unit.audio
    if head is None and params is not None and unit.codec in _FROM_PARAMS:
        # the encoder said its rate and channels
        head = _head_from_params(unit.codec, params.sample_rate, params.channels)
    byte0 = head if head is not None else _AUDIO_HEAD.get(unit.codec)
    if byte0 is None:
        raise FlvError(f"{unit.codec} cannot be carried in FLV")
    if unit.codec == "aac":
        return bytes([byte0, 0 if unit.config else 1]) + unit.payload
    return bytes([byte0]) + unit.payload
