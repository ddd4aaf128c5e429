"""gateway.transcode: real media through real codecs, checked by decoding the output.

Sources are FLV files made by Debian's ffmpeg the way Flash publishes (bench/testkit/media.py),
split into units by rtmp/flv.py, or VP8/Opus packets made here with PyAV's encoders the
way a WebRTC publisher delivers them. Outputs are decoded again with PyAV (or written
to an FLV file and read back by FFmpeg's FLV demuxer) and checked for frame counts,
picture size and audible audio.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import math
import subprocess
import threading
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import pytest
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext

from bench.testkit.media import analyse, make_flv, read_flv_tags
from gateway.codecs import h264
from gateway.media import AUDIO, VIDEO, AudioParams, MediaUnit, PublishedStream
from gateway.transcode import (
    AUDIO_DECODERS,
    VIDEO_DECODERS,
    TargetFormat,
    Transcoder,
    TranscoderPool,
    audio_specific_config,
)
from rtmp.flv import audio_tag, audio_unit, video_tag, video_unit

MS = Fraction(1, 1000)
SECONDS = 3.0


# -- sources ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("transcode")


_flv_cache: dict[tuple[str, str | None], list[MediaUnit]] = {}


def flash_units(flv_dir: Path, profile: str, video_bitrate: str | None = None) -> list[MediaUnit]:
    """Units as the RTMP front-end makes them from a Flash-like publisher's tags."""
    key = (profile, video_bitrate)
    if key not in _flv_cache:
        path = make_flv(
            flv_dir / f"{profile}-{video_bitrate}.flv",
            profile,
            seconds=SECONDS,
            video_bitrate=video_bitrate,
        )
        units = []
        for tag in read_flv_tags(path):
            if tag.type_id == 9:
                units.append(video_unit(tag.body, tag.timestamp))
            elif tag.type_id == 8:
                units.append(audio_unit(tag.body, tag.timestamp))
        _flv_cache[key] = units
    return list(_flv_cache[key])


_webrtc_cache: dict[tuple[float, tuple[int, int], int, int], list[MediaUnit]] = {}


def webrtc_units(
    seconds: float = SECONDS, size: tuple[int, int] = (320, 240), fps: int = 30, start_ms: int = 0
) -> list[MediaUnit]:
    """VP8 + Opus units as a WebRTC publisher delivers them (encoded here with PyAV)."""
    key = (seconds, size, fps, start_ms)
    if key not in _webrtc_cache:
        _webrtc_cache[key] = _make_webrtc_units(seconds, size, fps, start_ms)
    return list(_webrtc_cache[key])


def _make_webrtc_units(
    seconds: float, size: tuple[int, int], fps: int, start_ms: int
) -> list[MediaUnit]:
    units: list[MediaUnit] = []
    width, height = size
    venc = av.CodecContext.create("libvpx", "w")
    venc.width, venc.height, venc.pix_fmt = width, height, "yuv420p"
    venc.time_base = MS
    venc.framerate = Fraction(fps, 1)
    venc.bit_rate = 600_000
    venc.gop_size = fps  # a key frame a second, as a browser after PLIs might
    venc.thread_count = 1
    venc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    with av.open(
        f"testsrc=size={width}x{height}:rate={fps}:duration={seconds}", format="lavfi"
    ) as src:
        for i, frame in enumerate(src.decode(video=0)):
            frame.pts = start_ms + round(i * 1000 / fps)
            frame.time_base = MS
            for p in venc.encode(frame.reformat(format="yuv420p")):
                assert p.pts is not None
                units.append(MediaUnit(VIDEO, "vp8", p.pts, bytes(p), bool(p.is_keyframe)))
    aenc = av.CodecContext.create("libopus", "w")
    aenc.sample_rate, aenc.layout, aenc.format = 48000, "stereo", "s16"
    aenc.bit_rate = 64000
    params = AudioParams(sample_rate=48000, channels=2)
    with av.open(f"sine=frequency=440:sample_rate=48000:duration={seconds}", format="lavfi") as src:
        for chunk in src.decode(audio=0):
            for p in aenc.encode(chunk):
                ts = start_ms + max(0, p.pts or 0) * 1000 // 48000
                units.append(MediaUnit(AUDIO, "opus", ts, bytes(p), audio=params))
    units.sort(key=lambda u: (u.timestamp, u.kind != VIDEO))
    return units


# -- harness ----------------------------------------------------------------------------
class Collector:
    """A receiver on the transcoder's output."""

    def __init__(self) -> None:
        self.units: list[MediaUnit] = []
        self.events: list[str] = []

    def deliver(self, unit: MediaUnit) -> bool:
        self.units.append(unit)
        return True

    def stream_started(self, stream: PublishedStream) -> None:
        self.events.append("start")

    def stream_stopped(self, stream: PublishedStream) -> None:
        self.events.append("stop")

    def kind(self, kind: str) -> list[MediaUnit]:
        return [u for u in self.units if u.kind == kind]


async def idle(transcoder: Transcoder, timeout: float = 20.0) -> None:
    """Wait until the worker has processed everything and the loop has published it."""
    async with asyncio.timeout(timeout):
        while transcoder.pending():
            await asyncio.sleep(0.005)
    for _ in range(3):
        await asyncio.sleep(0)


async def feed(source: PublishedStream, transcoder: Transcoder, units: Iterable[MediaUnit]) -> None:
    """Push units as fast as the transcoder takes them, never overflowing its queue."""
    for unit in units:
        source.push(unit)
        while transcoder.pending() > 16:
            await asyncio.sleep(0.002)
    await idle(transcoder)


def start(
    target: TargetFormat, max_queued_video: int = 60, max_queued_audio: int = 150
) -> tuple[PublishedStream, Transcoder, Collector]:
    source = PublishedStream("customer")
    source.start("rtmp")
    transcoder = Transcoder(
        source, target, max_queued_video=max_queued_video, max_queued_audio=max_queued_audio
    )
    collector = Collector()
    transcoder.output.add_receiver(collector)
    return source, transcoder, collector


def video_frames(units: list[MediaUnit]) -> list[av.VideoFrame]:
    """Decode output video units; H.264 config units (re)open the decoder."""
    frames: list[av.VideoFrame] = []
    dec: VideoCodecContext | None = None
    for unit in units:
        if unit.kind != VIDEO:
            continue
        if unit.config:
            dec = av.CodecContext.create("h264", "r")
            dec.extradata = unit.payload
            continue
        if dec is None:
            dec = cast(VideoCodecContext, av.CodecContext.create(VIDEO_DECODERS[unit.codec], "r"))
        frames += dec.decode(av.Packet(unit.payload))
    if dec is not None:
        frames += dec.decode(None)
    return frames


def audio_rms(units: list[MediaUnit], skip_seconds: float = 0.1) -> tuple[float, float]:
    """(RMS as s16, seconds) of the decoded output audio, after the codec's ramp-up."""
    audio = [u for u in units if u.kind == AUDIO]
    first = audio[0]
    params = first.audio or AudioParams()
    dec = cast(AudioCodecContext, av.CodecContext.create(AUDIO_DECODERS[first.codec], "r"))
    dec.sample_rate = params.sample_rate or 48000
    dec.layout = "stereo" if params.channels == 2 else "mono"
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    squares = 0.0
    count = 0
    seconds = 0.0
    for unit in audio:
        if unit.config:
            dec = av.CodecContext.create("aac", "r")
            dec.extradata = unit.payload
            continue
        for frame in dec.decode(av.Packet(unit.payload)):
            seconds += frame.samples / frame.sample_rate
            for out in resampler.resample(frame):
                pcm = array.array("h", bytes(out.planes[0])[: out.samples * 2])
                if seconds > skip_seconds:
                    squares += sum(s * s for s in pcm)
                    count += len(pcm)
    return (math.sqrt(squares / count) if count else 0.0), seconds


def write_flv(path: Path, units: list[MediaUnit]) -> Path:
    """Output units as FLV tags (FLV spec E.3), the way the RTMP front-end frames them."""
    out = bytearray(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
    for unit in units:
        if unit.kind == VIDEO:
            type_id, body = 9, video_tag(unit)
        else:
            type_id, body = 8, audio_tag(unit)
        ts = unit.timestamp
        head = bytes([type_id]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        out += head + bytes([(ts >> 24) & 0xFF, 0, 0, 0]) + body
        out += (11 + len(body)).to_bytes(4, "big")
    path.write_bytes(bytes(out))
    return path


def count_video(units: list[MediaUnit]) -> int:
    return sum(1 for u in units if u.kind == VIDEO and not u.config)


# -- Flash -> WebRTC --------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["spark_speex", "spark_nellymoser", "h264_aac"])
async def test_flash_to_webrtc_vp8_opus(flv_dir: Path, profile: str) -> None:
    units = flash_units(flv_dir, profile)
    source, tr, out = start(TargetFormat("vp8", "opus"))
    await feed(source, tr, units)

    video = out.kind(VIDEO)
    assert video[0].keyframe and video[0].codec == "vp8"
    frames = video_frames(out.units)
    assert len(frames) >= 0.9 * count_video(units)
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    # Video keeps the source's timestamps (the decoded frames' times).
    source_ts = [u.timestamp for u in units if u.kind == VIDEO and not u.config]
    assert [u.timestamp for u in video] == source_ts[: len(video)]

    audio = out.kind(AUDIO)
    assert all(u.codec == "opus" and u.audio and u.audio.sample_rate == 48000 for u in audio)
    rms, seconds = audio_rms(out.units)
    assert rms > 1000, "the 440 Hz sine came out silent"
    assert seconds == pytest.approx(SECONDS, rel=0.1)
    # Audio timestamps: from the first input timestamp, 20 ms apart, monotonic.
    first_in = min(u.timestamp for u in units if u.kind == AUDIO and not u.config)
    assert abs(audio[0].timestamp - first_in) <= 25
    steps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(audio[1:])]
    assert all(19 <= s <= 21 for s in steps), steps
    assert abs(audio[-1].timestamp - video[-1].timestamp) < 250  # A/V end together

    stats = tr.stats
    assert stats.decode_errors == stats.encode_errors == stats.dropped == 0
    assert stats.realtime_factor > 1.0 and stats.queue_depth == 0
    assert stats.video_out == len(video) and stats.audio_out == len(audio)
    tr.close()


# -- WebRTC -> Flash --------------------------------------------------------------------------
async def test_webrtc_vp8_opus_to_flash_h264_aac(tmp_path: Path) -> None:
    units = webrtc_units()
    source, tr, out = start(TargetFormat("h264", "aac"))
    await feed(source, tr, units)

    video = out.kind(VIDEO)
    assert video[0].config and video[1].keyframe and not video[1].config
    config = h264.parse_avc_config(video[0].payload)
    assert h264.baseline_without_bframes(config.sps[0])
    assert (h264.parse_sps(config.sps[0]).width, h264.parse_sps(config.sps[0]).height) == (320, 240)
    for unit in video[1:]:  # AVCC without in-band parameter sets, IDR flags honest
        types = h264.avcc_nal_types(unit.payload)
        assert h264.NAL_SPS not in types and h264.NAL_PPS not in types
        assert (h264.NAL_IDR in types) == unit.keyframe
    keys = [u.timestamp for u in video if u.keyframe]
    assert len(keys) >= 2 and all(b - a <= 2100 for a, b in itertools.pairwise(keys))

    audio = out.kind(AUDIO)
    # the browser's 48 kHz stays 48 kHz (no resampling into AAC)
    assert audio[0].config and audio[0].payload[:2] == audio_specific_config(48000, 2)
    assert all(audio_tag(u)[0] == 0xAF for u in audio)

    result = analyse(write_flv(tmp_path / "out.flv", out.units))
    assert (result.video_codec, result.audio_codec) == ("h264", "aac")
    assert (result.width, result.height) == (320, 240)
    assert result.first_video_keyframe and not result.decode_errors
    assert result.video_frames >= 0.9 * count_video(units)
    assert result.audio_rms > 1000
    tr.close()


@pytest.mark.parametrize(
    ("audio", "decoder", "rate"), [("nellymoser", "nellymoser", 16000), ("mp3", "mp3float", 44100)]
)
async def test_webrtc_vp8_opus_to_old_flash_spark(
    tmp_path: Path, audio: str, decoder: str, rate: int
) -> None:
    units = webrtc_units()
    source, tr, out = start(TargetFormat("spark", audio))
    await feed(source, tr, units)

    path = write_flv(tmp_path / "out.flv", out.units)
    result = analyse(path)
    assert (result.video_codec, result.audio_codec) == ("flv", decoder)
    assert (result.width, result.height) == (320, 240)
    assert result.first_video_keyframe and not result.decode_errors
    assert result.video_frames >= 0.9 * count_video(units)
    assert result.audio_rms > 1000
    # FFmpeg's demuxer reads the rate from our FLV head byte: a wrong byte would stretch
    # or squeeze the audio's duration.
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.sample_rate == rate
        samples = sum(f.samples for f in container.decode(stream))
    assert samples / rate == pytest.approx(SECONDS, rel=0.1)
    tr.close()


# -- control ----------------------------------------------------------------------------------
async def test_keyframe_request_is_served_within_two_frames(flv_dir: Path) -> None:
    units = [u for u in flash_units(flv_dir, "spark_speex") if u.kind == VIDEO]
    source, tr, out = start(TargetFormat("vp8", None))
    await feed(source, tr, units[:20])
    assert [u.keyframe for u in out.kind(VIDEO)].count(True) == 1  # only the first
    tr.request_keyframe()
    await feed(source, tr, units[20:22])
    after = out.kind(VIDEO)[20:22]
    assert len(after) == 2 and any(u.keyframe for u in after)
    await feed(source, tr, units[22:30])
    assert not any(u.keyframe for u in out.kind(VIDEO)[22:30])
    assert tr.stats.keyframe_requests == 1
    tr.close()


async def test_resolution_change_reopens_with_new_config_and_keyframe() -> None:
    first = webrtc_units(seconds=1.5, size=(320, 240))
    second = webrtc_units(seconds=1.5, size=(160, 120), start_ms=1500)
    source, tr, out = start(TargetFormat("h264", "aac"))
    await feed(source, tr, first + second)

    configs = [u for u in out.kind(VIDEO) if u.config]
    sizes = [h264.parse_sps(h264.parse_avc_config(c.payload).sps[0]) for c in configs]
    assert [(s.width, s.height) for s in sizes] == [(320, 240), (160, 120)]
    video = out.kind(VIDEO)
    at = video.index(configs[1])
    assert video[at + 1].keyframe and video[at + 1].timestamp >= 1500
    frames = video_frames(out.units)
    assert {(f.width, f.height) for f in frames} == {(320, 240), (160, 120)}
    assert len(frames) >= 0.9 * count_video(first + second)
    assert tr.stats.encoder_opens >= 3  # video twice, audio once
    tr.close()


async def test_source_stop_and_restart_starts_output_again_with_configs(flv_dir: Path) -> None:
    units = flash_units(flv_dir, "spark_speex")
    half = len(units) // 2
    source, tr, out = start(TargetFormat("h264", "aac"))
    await feed(source, tr, units[:half])
    source.stop()
    assert not tr.output.live and out.events == ["start", "stop"]
    source.start("rtmp")
    mark = len(out.units)
    await feed(source, tr, units)  # the publisher comes back: its clock restarts at 0

    assert out.events == ["start", "stop", "start"]
    again = out.units[mark:]
    video = [u for u in again if u.kind == VIDEO]
    audio = [u for u in again if u.kind == AUDIO]
    assert video[0].config and video[1].keyframe
    assert audio[0].config
    assert video[1].timestamp < 200  # the restarted clock, not the old one
    assert len(video_frames(again)) >= 0.9 * count_video(units)
    rms, _ = audio_rms(again)
    assert rms > 1000
    tr.close()


async def test_bitrate_follows_set_video_bitrate(flv_dir: Path) -> None:
    # Noisy source so the encoder really has to spend what it is given.
    units = flash_units(flv_dir, "spark_speex", video_bitrate="1M")
    video_in = [u for u in units if u.kind == VIDEO]
    source, tr, out = start(TargetFormat("vp8", None, video_bitrate=800_000))
    half = len(video_in) // 2
    await feed(source, tr, video_in[:half])
    tr.set_video_bitrate(150_000)
    await feed(source, tr, video_in[half:])

    video = out.kind(VIDEO)

    def kbps(part: list[MediaUnit]) -> float:
        span = (part[-1].timestamp - part[0].timestamp) / 1000
        return sum(len(u.payload) for u in part[1:]) * 8 / span / 1000

    before, after = kbps(video[3:half]), kbps(video[half + 3 :])
    assert before > 2.5 * after, (before, after)
    assert tr.video_bitrate == 150_000
    tr.set_video_bitrate(1)
    assert tr.video_bitrate == 50_000  # clamped
    tr.close()


# -- robustness -------------------------------------------------------------------------------
async def test_full_queue_drops_until_keyframe_and_counts(flv_dir: Path) -> None:
    units = flash_units(flv_dir, "spark_speex")
    source, tr, out = start(TargetFormat("vp8", "opus"), max_queued_video=3, max_queued_audio=5)
    for unit in units:  # all at once: far faster than the worker can go
        source.push(unit)
    await idle(tr)

    stats = tr.stats
    assert stats.dropped > 0 and stats.drop_episodes >= 1
    assert stats.dequeued + stats.dropped == stats.queued + stats.dropped <= len(units)
    video = out.kind(VIDEO)
    assert 0 < len(video) < count_video(units)
    assert video[0].keyframe
    frames = video_frames(out.units)  # decodes cleanly: drops resumed at keyframes
    assert len(frames) == len(video)
    assert stats.decode_errors == 0
    tr.close()


async def test_corrupt_frames_are_counted_and_decoding_resumes_at_a_keyframe(
    flv_dir: Path,
) -> None:
    units = flash_units(flv_dir, "spark_nellymoser")
    video_at = [i for i, u in enumerate(units) if u.kind == VIDEO]
    bad = video_at[3]
    broken = MediaUnit(VIDEO, "spark", units[bad].timestamp, b"\x00\x01garbage" * 40, True)
    units[bad] = broken
    units.insert(video_at[5], MediaUnit(VIDEO, "vp9", units[video_at[5]].timestamp, b"x", True))
    source, tr, out = start(TargetFormat("vp8", "opus"))
    await feed(source, tr, units)

    assert tr.alive
    assert tr.stats.decode_errors >= 2 and tr.stats.last_error
    frames = video_frames(out.units)
    good = count_video(units) - 2
    assert len(frames) >= good - 16  # at worst the rest of one 15-frame GOP is skipped
    rms, _ = audio_rms(out.units)
    assert rms > 1000
    tr.close()


async def test_h264_for_a_browser_is_x264s_annexb_not_a_round_trip() -> None:
    """The H.264 units carry x264's own Annex-B (SPS/PPS before every IDR) beside the AVCC
    payload, the same slices in both: a WebRTC sender takes it without converting back."""
    units = [u for u in webrtc_units(seconds=1.0) if u.kind == VIDEO]
    source, tr, out = start(TargetFormat("h264", None))
    await feed(source, tr, units)
    video = [u for u in out.kind(VIDEO) if not u.config]
    assert video and all(u.annexb is not None for u in video)
    for u in video:
        assert u.annexb is not None
        nals = h264.split_annexb(u.annexb)
        slices = [n for n in nals if h264.nal_type(n) not in (h264.NAL_SPS, h264.NAL_PPS)]
        assert slices == h264.split_avcc(u.payload)
        sps, pps = h264.parameter_sets(nals)
        assert bool(sps and pps) == u.keyframe
    tr.close()


async def test_timestamps_wrap_at_32_bits(flv_dir: Path) -> None:
    offset = 2**32 - 1500
    units = [
        MediaUnit(u.kind, u.codec, (u.timestamp + offset) & 0xFFFFFFFF, u.payload, u.keyframe,
                  u.config, u.cts, u.wire, u.audio, u.video)
        for u in flash_units(flv_dir, "spark_speex")
    ]  # fmt: skip
    source, tr, out = start(TargetFormat("vp8", "opus"))
    await feed(source, tr, units)

    video = out.kind(VIDEO)
    assert [u.timestamp for u in video] == [u.timestamp for u in units if u.kind == VIDEO]
    assert len(video_frames(out.units)) >= 0.9 * count_video(units)
    audio = out.kind(AUDIO)
    unwrapped = [(u.timestamp - offset) & 0xFFFFFFFF for u in audio]
    assert unwrapped == sorted(unwrapped) and unwrapped[-1] > 2500
    assert tr.stats.decode_errors == tr.stats.encode_errors == 0
    tr.close()


# -- pool -------------------------------------------------------------------------------------
def _worker_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("transcode ")}


async def test_pool_shares_per_source_and_target_and_closes_on_last_release(
    flv_dir: Path,
) -> None:
    pool = TranscoderPool()
    source = PublishedStream("customer")
    source.start("rtmp")
    vp8 = TargetFormat("vp8", "opus")
    a = pool.acquire(source, vp8)
    b = pool.acquire(source, TargetFormat("vp8", "opus"))
    c = pool.acquire(source, TargetFormat("h264", "aac"))
    assert a is b and a is not c and len(pool) == 2
    assert len(source.receivers) == 2
    out = Collector()
    a.output.add_receiver(out)
    await feed(source, a, flash_units(flv_dir, "spark_speex")[:40])
    assert out.kind(VIDEO)

    pool.release(a)
    assert a.alive and not a.closed and a.output.live
    pool.release(b)
    assert a.closed and not a.alive and not a.output.live
    assert out.events[-1] == "stop"
    assert [s.receiver for s in source.receivers] == [c]
    assert pool.acquire(source, vp8) is not a  # a fresh one after the close
    pool.release(object())  # not ours: ignored
    with pytest.raises(TypeError):
        pool.acquire(source, "vp8")
    pool.close()
    assert not c.alive and len(pool) == 0 and not source.receivers
    assert not _worker_threads()


# -- audio details ----------------------------------------------------------------------------
def nellymoser_units(rate: int, head: int, seconds: float, start_ms: int) -> list[MediaUnit]:
    """Nellymoser FLV bodies made with PyAV's encoder, mapped by rtmp/flv.py."""
    enc = av.CodecContext.create("nellymoser", "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "flt"
    units: list[MediaUnit] = []
    with av.open(
        f"sine=frequency=440:sample_rate={rate}:duration={seconds}", format="lavfi"
    ) as src:
        for frame in src.decode(audio=0):
            for p in enc.encode(frame):
                ts = start_ms + max(0, p.pts or 0) * 1000 // rate
                units.append(audio_unit(bytes([head]) + bytes(p), ts))
    return units


async def test_source_sample_rate_change_keeps_audio_continuous() -> None:
    units = nellymoser_units(16000, 0x42, 1.5, 0) + nellymoser_units(44100, 0x6E, 1.5, 1500)
    assert {u.audio.sample_rate for u in units if u.audio} == {16000, 44100}
    source, tr, out = start(TargetFormat(None, "opus"))
    await feed(source, tr, units)

    audio = out.kind(AUDIO)
    rms, seconds = audio_rms(out.units)
    assert rms > 1000 and seconds == pytest.approx(3.0, rel=0.1)
    stamps = [u.timestamp for u in audio]
    assert stamps == sorted(stamps) and stamps[-1] == pytest.approx(2980, abs=60)
    steps = [b - a for a, b in itertools.pairwise(stamps[1:])]
    assert max(steps) <= 40, "a gap in the output at the rate change"
    assert tr.stats.decode_errors == tr.stats.encode_errors == 0
    tr.close()


@pytest.mark.parametrize(
    ("codec", "encoder", "rate", "channels"),
    [
        ("nellymoser", "nellymoser", 16000, 1),
        ("nellymoser", "nellymoser", 44100, 1),
        ("nellymoser", "nellymoser", 8000, 1),
        ("mp3", "libmp3lame", 44100, 1),
        ("mp3", "libmp3lame", 22050, 2),
        ("aac", "aac", 44100, 2),
    ],
)
def test_flv_head_byte_matches_ffmpegs_flv_muxer(
    tmp_path: Path, codec: str, encoder: str, rate: int, channels: int
) -> None:
    from rtmp.flv import audio_head

    path = tmp_path / "a.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "sine=sample_rate=48000", "-t", "0.3", "-c:a", encoder, "-ar", str(rate),
         "-ac", str(channels), "-f", "flv", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    first = next(t for t in read_flv_tags(path) if t.type_id == 8)
    assert audio_head(codec, rate, channels) == first.body[0]


async def test_audio_follows_a_gap_in_the_source_clock() -> None:
    units = [u for u in nellymoser_units(16000, 0x42, 3.0, 0) if not 1000 <= u.timestamp < 1600]
    source, tr, out = start(TargetFormat(None, "opus"))
    await feed(source, tr, units)

    stamps = [u.timestamp for u in out.kind(AUDIO)]
    steps = [b - a for a, b in itertools.pairwise(stamps[1:])]
    assert steps.count(20) >= len(steps) - 3  # continuous 20 ms packets, one jump
    jump = max(steps)
    assert 560 <= jump <= 660  # the silence of the muted microphone, not squeezed out
    assert stamps[-1] == pytest.approx(units[-1].timestamp, abs=40)
    tr.close()


async def test_audio_running_ahead_of_the_source_clock_drops_to_stay_in_step() -> None:
    # The publisher's clock runs 15 % slow against its samples: 3 s of audio in 2.55 s.
    units = nellymoser_units(16000, 0x42, 3.0, 0)
    for unit in units:
        unit.timestamp = unit.timestamp * 85 // 100
    source, tr, out = start(TargetFormat(None, "opus"))
    await feed(source, tr, units)

    stamps = [u.timestamp for u in out.kind(AUDIO)]
    assert all(b > a for a, b in itertools.pairwise(stamps))  # never repeated, never back
    assert abs(stamps[-1] - units[-1].timestamp) <= 260  # in step within the resync window
    assert tr.stats.audio_resync_drops > 0
    tr.close()


async def test_a_flood_of_config_units_stays_bounded(flv_dir: Path) -> None:
    units = flash_units(flv_dir, "h264_aac")
    config = next(u for u in units if u.kind == VIDEO and u.config)
    source, tr, out = start(TargetFormat("vp8", None))
    for _ in range(1000):
        source.push(config)
    assert tr.stats.queue_depth <= 2 * tr.max_queued_video and tr.stats.dropped >= 800
    await feed(source, tr, units)
    assert len(video_frames(out.units)) >= 0.9 * count_video(units)
    tr.close()


async def test_h264_with_bframes_is_transcoded_to_baseline_in_presentation_order(
    flv_dir: Path,
) -> None:
    path = flv_dir / "main_bframes.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "testsrc=size=320x240:rate=15", "-t", "2", "-c:v", "libx264", "-profile:v", "main",
         "-bf", "2", "-g", "15", "-pix_fmt", "yuv420p", "-f", "flv", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    units = [video_unit(t.body, t.timestamp) for t in read_flv_tags(path) if t.type_id == 9]
    config = next(u for u in units if u.config)
    assert not h264.baseline_without_bframes(h264.parse_avc_config(config.payload).sps[0])
    assert any(u.cts for u in units), "expected reordered frames (composition offsets)"
    source, tr, out = start(TargetFormat("h264", None))
    await feed(source, tr, units)

    video = out.kind(VIDEO)
    sps = h264.parse_avc_config(video[0].payload).sps[0]
    assert h264.baseline_without_bframes(sps)
    frames = [u for u in video if not u.config]
    stamps = [u.timestamp for u in frames]
    assert stamps == sorted(set(stamps)) and all(u.cts == 0 for u in frames)
    presentation = sorted(u.timestamp + u.cts for u in units if not u.config and u.payload)
    assert stamps == presentation[: len(stamps)]
    assert len(stamps) >= len(presentation) - 2  # the decoder may hold the last reordered
    assert len(video_frames(video)) == len(frames)
    tr.close()


async def test_routes_attach_and_release_real_transcoders_during_fan_out(flv_dir: Path) -> None:
    """gateway.routing decides inside the source's fan-out: acquiring a transcoder adds a
    receiver to the stream being iterated, and a codec change releases one."""
    from gateway.routing import Route, flash_caps, webrtc_caps

    pool = TranscoderPool()
    source = PublishedStream("customer")
    source.start("rtmp")
    browser, old_flash = Collector(), Collector()
    Route(source, browser, webrtc_caps("vp8", "opus"), pool)
    Route(source, old_flash, flash_caps(h264=False, aac=False), pool)
    flash = flash_units(flv_dir, "h264_aac")
    for unit in flash:
        source.push(unit)
        while any(t.pending() > 16 for t in pool.transcoders):
            await asyncio.sleep(0.002)
    for transcoder in pool.transcoders:
        await idle(transcoder)
    assert sorted(t.output.name for t in pool.transcoders) == [
        "customer>-+nellymoser",
        "customer>-+opus",
        "customer>spark+-",
        "customer>vp8+-",
    ]
    assert len(video_frames(browser.units)) >= 0.9 * count_video(flash)
    assert {u.codec for u in old_flash.units} == {"spark", "nellymoser"}
    assert audio_rms(old_flash.units)[0] > 1000

    # The publisher switches to VP8 mid-stream: the browser now gets it passed through
    # and its VP8 transcoder is released inside the same fan-out.
    vp8 = [u for u in webrtc_units(start_ms=3100) if u.kind == VIDEO]
    mark = len(browser.units)
    for unit in vp8:
        source.push(unit)
        await asyncio.sleep(0)
    for transcoder in pool.transcoders:
        await idle(transcoder)
    passed = [u for u in browser.units[mark:] if u.kind == VIDEO]
    assert [u.payload for u in passed] == [u.payload for u in vp8]
    assert "customer>vp8+-" not in [t.output.name for t in pool.transcoders]
    pool.close()
    assert not _worker_threads()


async def test_the_pool_gives_a_shared_encoder_the_lowest_receiver_estimate() -> None:
    """Bitrate arbitration lives in the pool (issue 13): each route files its receiver's
    REMB; the shared encoder follows the lowest, and a withdrawn one stops counting."""
    pool = TranscoderPool()
    source = PublishedStream("c/customer")
    transcoder = pool.acquire(source, TargetFormat("vp8", None))
    fast, slow = object(), object()
    pool.offer_video_bitrate(transcoder, fast, 900_000)
    assert transcoder.video_bitrate == 900_000
    pool.offer_video_bitrate(transcoder, slow, 300_000)
    pool.offer_video_bitrate(transcoder, fast, 800_000)
    assert transcoder.video_bitrate == 300_000
    pool.offer_video_bitrate(transcoder, slow, None)
    assert transcoder.video_bitrate == 800_000
    pool.release(transcoder)
    assert transcoder.closed and len(pool) == 0
