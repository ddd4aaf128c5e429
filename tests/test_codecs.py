"""gateway.codecs: the VP8 frame header and the AAC AudioSpecificConfig."""

from __future__ import annotations

import av
import pytest

from gateway.codecs import aac, vp8


def test_vp8_key_frames_and_sizes_from_libvpx() -> None:
    from fractions import Fraction

    ctx = av.CodecContext.create("libvpx", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = 176, 144, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.gop_size = 4
    ctx.options = {"deadline": "realtime", "lag-in-frames": "0"}
    packets = []
    for i in range(6):
        frame = av.VideoFrame(176, 144, "yuv420p")
        frame.pts = i
        packets += list(ctx.encode(frame))
    packets += list(ctx.encode(None))
    assert packets
    for packet in packets:
        data = bytes(packet)
        assert vp8.is_keyframe(data) == bool(packet.is_keyframe)
        assert vp8.dimensions(data) == ((176, 144) if packet.is_keyframe else None)
    assert not vp8.is_keyframe(b"")


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 2), (16000, 1)])
def test_aac_config_matches_ffmpegs_encoder(rate: int, channels: int) -> None:
    ctx = av.CodecContext.create("aac", "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = rate, "stereo" if channels == 2 else "mono", "fltp"
    ctx.open()
    assert ctx.extradata is not None
    assert aac.audio_specific_config(rate, channels) == bytes(ctx.extradata)[:2]
    with pytest.raises(ValueError):
        aac.audio_specific_config(12345, 2)
