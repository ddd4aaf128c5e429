"""gateway.codecs.h264: Annex-B/AVCC framing, avcC records and SPS facts, against real x264
output."""

from __future__ import annotations

import contextlib
from fractions import Fraction

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import h264
from tests.fuzzing import examples


def x264_frames(
    profile: str = "baseline",
    size: tuple[int, int] = (320, 240),
    frames: int = 6,
    bframes: int = 0,
    preset: str = "ultrafast",
    pix_fmt: str = "yuv420p",
) -> list[bytes]:
    """Annex-B access units from libx264 (in-band SPS/PPS: no global header)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = size
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.gop_size = 3
    ctx.options = {"preset": preset, "profile": profile, "bf": str(bframes), "threads": "1"}
    out: list[bytes] = []
    for i in range(frames):
        frame = av.VideoFrame(size[0], size[1], pix_fmt)
        for plane in frame.planes:  # a moving gradient so P/B frames carry data
            plane.update(bytes((x + i * 7) & 0xFF for x in range(plane.buffer_size)))
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def decode_avcc(record: bytes, payloads: list[bytes]) -> list[av.VideoFrame]:
    dec = av.CodecContext.create("h264", "r")
    dec.extradata = record
    frames: list[av.VideoFrame] = []
    for payload in payloads:
        frames += dec.decode(av.Packet(payload))
    frames += dec.decode(None)
    return frames


def test_split_annexb_three_and_four_byte_start_codes_and_trailing_zeros() -> None:
    data = (
        b"\x00\x00\x00\x01\x67\x42\x00" + b"\x00\x00\x01\x68\xce\x00\x00" + b"\x00\x00\x01\x65\x88"
    )
    assert h264.split_annexb(data) == [b"\x67\x42", b"\x68\xce", b"\x65\x88"]
    assert h264.split_annexb(b"\x00\x00\x00\x00\x01\x09\xf0") == [b"\x09\xf0"]  # leading zeros
    with pytest.raises(h264.H264Error):
        h264.split_annexb(b"\x67\x42\x00\x1f")
    with pytest.raises(h264.H264Error):
        h264.split_annexb(b"\x12\x00\x00\x01\x65")


@pytest.mark.parametrize("length_size", [1, 2, 4])
def test_avcc_round_trip_with_every_length_size(length_size: int) -> None:
    nals = [b"\x67\x42\xc0\x1e", b"\x68\xce\x3c\x80", b"\x65" + bytes(range(200))]
    avcc = h264.join_avcc(nals, length_size)
    assert h264.split_avcc(avcc, length_size) == nals
    annexb = h264.avcc_to_annexb(avcc, length_size)
    assert annexb.count(h264.START_CODE) == 3
    assert h264.annexb_to_avcc(annexb, length_size) == avcc
    assert h264.avcc_nal_types(avcc, length_size) == [7, 8, 5]
    with pytest.raises(h264.H264Error):
        h264.split_avcc(avcc[:-1], length_size)
    if length_size == 1:
        with pytest.raises(h264.H264Error):
            h264.join_avcc([bytes(256)], 1)


def test_x264_annexb_converts_to_avcc_that_ffmpeg_decodes() -> None:
    units = x264_frames(frames=8)
    first = h264.split_annexb(units[0])
    sps, pps = h264.parameter_sets(first)
    assert len(sps) == 1 and len(pps) == 1
    record = h264.build_avc_config(sps, pps)
    config = h264.parse_avc_config(record)
    assert (config.profile, config.length_size, config.sps, config.pps) == (66, 4, sps, pps)
    payloads = [h264.annexb_to_avcc(u) for u in units]
    assert h264.is_idr(payloads[0])
    assert not h264.is_idr(payloads[1])
    frames = decode_avcc(record, payloads)
    assert len(frames) == 8
    assert (frames[0].width, frames[0].height) == (320, 240)


def test_avcc_with_two_byte_lengths_decodes_when_the_record_says_so() -> None:
    units = x264_frames(size=(64, 48), frames=4)
    sps, pps = h264.parameter_sets(h264.split_annexb(units[0]))
    record = h264.build_avc_config(sps, pps, length_size=2)
    assert h264.parse_avc_config(record).length_size == 2
    payloads = [h264.annexb_to_avcc(u, 2) for u in units]
    assert h264.split_avcc(payloads[0], 2) == h264.split_annexb(units[0])
    assert len(decode_avcc(record, payloads)) == 4


def test_high_profile_record_carries_the_extension_fields() -> None:
    units = x264_frames("high", (64, 48), frames=3, preset="medium")
    sps, pps = h264.parameter_sets(h264.split_annexb(units[0]))
    assert sps[0][1] == 100
    record = h264.build_avc_config(sps, pps)
    body = 6 + 2 + len(sps[0]) + 1 + 2 + len(pps[0])
    # chroma_format 1 (4:2:0), 8-bit luma/chroma, no SPS extensions (14496-15 §5.3.3.1)
    assert record[body:] == bytes((0xFD, 0xF8, 0xF8, 0x00))
    assert h264.parse_avc_config(record).sps == sps
    assert len(decode_avcc(record, [h264.annexb_to_avcc(u) for u in units])) == 3


@pytest.mark.parametrize(
    ("profile", "size", "bframes", "pix_fmt", "safe", "reorder"),
    [
        ("baseline", (320, 240), 0, "yuv420p", True, 0),
        ("main", (326, 186), 2, "yuv420p", False, 2),  # cropped size, B-frames
        ("high", (1280, 720), 3, "yuv420p", False, 2),  # x264: B-pyramid reorders 2
        ("high", (176, 144), 0, "yuv420p", True, 0),  # High without B-frames: VUI says so
        ("high444", (64, 48), 0, "yuv444p", True, 0),
    ],
)
def test_sps_facts_match_the_encoder_settings(
    profile: str,
    size: tuple[int, int],
    bframes: int,
    pix_fmt: str,
    safe: bool,
    reorder: int,
) -> None:
    units = x264_frames(profile, size, frames=1, bframes=bframes, preset="medium", pix_fmt=pix_fmt)
    sps, _ = h264.parameter_sets(h264.split_annexb(units[0]))
    info = h264.parse_sps(sps[0])
    assert (info.width, info.height) == size
    assert info.max_num_reorder_frames == reorder
    dec = av.CodecContext.create("h264", "r")  # FFmpeg's own reading of the same SPS
    dec.decode(av.Packet(units[0]))
    assert dec.reorder_depth == reorder
    assert info.chroma_format_idc == (3 if pix_fmt == "yuv444p" else 1)
    assert h264.baseline_without_bframes(sps[0]) is safe


def test_passthrough_rule_from_profile_and_constraint_flags_alone() -> None:
    # Only the first bytes matter for these: the rest of the SPS is never read.
    assert h264.baseline_without_bframes(b"\x67\x42\xc0\x1e")  # constrained baseline
    assert h264.baseline_without_bframes(b"\x67\x42\x00\x1f")  # baseline
    assert h264.baseline_without_bframes(b"\x67\x4d\x80\x1f")  # Main + Baseline constraints
    assert h264.baseline_without_bframes(b"\x67\x64\x0c\x1f")  # constrained high (set4+set5)
    # Main without VUI reorder information: "may reorder" (SPS body from x264 main)
    main = h264.parameter_sets(h264.split_annexb(x264_frames("main", bframes=2)[0]))[0][0]
    assert not h264.baseline_without_bframes(main)
    with pytest.raises(h264.H264Error):
        h264.baseline_without_bframes(b"\x68\x42\xc0\x1e")  # a PPS
    with pytest.raises(h264.H264Error):
        h264.parse_sps(b"\x67\x4d\x40")


def test_prepend_parameter_sets_only_before_idr_and_after_an_aud() -> None:
    sps, pps = b"\x67\x42\xc0\x1e\xda", b"\x68\xce\x3c\x80"
    idr = h264.join_annexb([b"\x09\xf0", b"\x65\x88\x84"])
    out = h264.split_annexb(h264.prepend_parameter_sets(idr, sps, pps))
    assert out == [b"\x09\xf0", sps, pps, b"\x65\x88\x84"]
    p_frame = h264.join_annexb([b"\x41\x9a"])
    assert h264.prepend_parameter_sets(p_frame, sps, pps) == p_frame
    full = h264.join_annexb([sps, pps, b"\x65\x88"])
    assert h264.prepend_parameter_sets(full, [sps], [pps]) == full


def test_real_idr_with_parameter_sets_stripped_decodes_after_prepending() -> None:
    units = x264_frames(size=(64, 48), frames=2)
    nals = h264.split_annexb(units[0])
    sps, pps = h264.parameter_sets(nals)
    bare = h264.join_annexb(n for n in nals if h264.nal_type(n) not in (7, 8))
    fixed = h264.prepend_parameter_sets(bare, sps, pps)
    dec = av.CodecContext.create("h264", "r")  # no extradata: in-band only, like WebRTC
    frames = dec.decode(av.Packet(fixed)) + dec.decode(av.Packet(units[1])) + dec.decode(None)
    assert len(frames) == 2


def test_avc_config_rejects_malformed_records() -> None:
    good = h264.build_avc_config(b"\x67\x42\xc0\x1e", b"\x68\xce")
    assert h264.parse_avc_config(good).sps == [b"\x67\x42\xc0\x1e"]
    for bad in (b"", good[:6], b"\x02" + good[1:], good[:-1], good[:5] + b"\xe1\x00\x00"):
        with pytest.raises(h264.H264Error):
            h264.parse_avc_config(bad)
    with pytest.raises(h264.H264Error):
        h264.parse_avc_config(good[:4] + b"\xfe" + good[5:])  # 3-byte lengths are not allowed
    with pytest.raises(h264.H264Error):
        h264.build_avc_config(b"\x68\xce", b"\x68\xce")  # not an SPS
    with pytest.raises(h264.H264Error):
        h264.build_avc_config([], [b"\x68\xce"])


# -- fuzzing: arbitrary input raises only ValueError ------------------------------------
def _only_value_error(func: object, *args: object) -> None:
    with contextlib.suppress(ValueError):
        func(*args)  # type: ignore[operator]


@settings(max_examples=examples(400), deadline=None)
@given(st.binary(max_size=300), st.sampled_from([1, 2, 3, 4]))
def test_fuzz_parsers_raise_only_value_error(data: bytes, length_size: int) -> None:
    _only_value_error(h264.split_annexb, data)
    _only_value_error(h264.annexb_to_avcc, data)
    _only_value_error(h264.split_avcc, data, length_size)
    _only_value_error(h264.avcc_to_annexb, data, length_size)
    _only_value_error(h264.is_idr, data, length_size)
    _only_value_error(h264.parse_avc_config, data)
    _only_value_error(h264.prepend_parameter_sets, data, b"\x67\x42\xc0\x1e", b"\x68\xce")


@settings(max_examples=examples(400), deadline=None)
@given(st.binary(max_size=120), st.integers(0, 255), st.integers(0, 255))
def test_fuzz_sps_parsing_raises_only_value_error(body: bytes, profile: int, flags: int) -> None:
    sps = bytes((0x67, profile, flags, 0x1F)) + body
    _only_value_error(h264.parse_sps, sps)
    _only_value_error(h264.baseline_without_bframes, sps)
    _only_value_error(h264.build_avc_config, sps, b"\x68\xce")


def _escape(payload: bytes) -> bytes:
    """Insert emulation prevention bytes (H.264 7.4.1) so no start code can appear."""
    out = bytearray()
    zeros = 0
    for byte in payload:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


nal_units = st.builds(
    lambda header, body: _escape(bytes([header]) + body + b"\x80"),
    st.integers(1, 0x7F).filter(lambda b: b & 0x1F),
    st.binary(max_size=64),
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(nal_units, min_size=1, max_size=8), st.sampled_from([1, 2, 4]))
def test_fuzz_round_trips(nals: list[bytes], length_size: int) -> None:
    annexb = h264.join_annexb(nals)
    assert h264.split_annexb(annexb) == nals
    avcc = h264.annexb_to_avcc(annexb, length_size)
    assert h264.split_avcc(avcc, length_size) == nals
    assert h264.avcc_to_annexb(avcc, length_size) == annexb
    unescaped = [h264.unescape_rbsp(n) for n in nals]
    assert all(len(u) <= len(n) for u, n in zip(unescaped, nals, strict=True))


def test_annexb_idr_detection_on_real_x264_frames() -> None:
    """What a WHIP receiver marks as key frame (webrtc/seams.py) agrees with the NAL types."""
    frames = x264_frames(frames=7)
    for frame in frames:
        types = [h264.nal_type(n) for n in h264.split_annexb(frame)]
        assert h264.annexb_has_idr(frame) == (h264.NAL_IDR in types)
    assert h264.annexb_has_idr(frames[0]) and not h264.annexb_has_idr(frames[1])
    assert not h264.annexb_has_idr(b"") and not h264.annexb_has_idr(b"\x00\x00\x01")


def test_insert_parameter_sets_says_when_an_idr_cannot_be_completed() -> None:
    sps, pps, idr = b"\x67\x42", b"\x68\xce", b"\x65\x88"
    assert h264.insert_parameter_sets([idr], [sps], [pps]) == [sps, pps, idr]
    assert h264.insert_parameter_sets([idr], [], []) is None
    p_frame = [b"\x41\x9a"]
    assert h264.insert_parameter_sets(p_frame, [], []) is p_frame
