"""H.264 framing helpers: Annex-B <-> AVCC, the avcC record, SPS facts.

Every H.264 unit on the session core is AVCC (length-prefixed NAL units, as FLV and MP4
carry them, ISO/IEC 14496-15 §5.3.4.2); WebRTC (RFC 6184 packetisation in aiortc) and
x264 speak Annex-B (start-code delimited, ITU-T H.264 Annex B). The functions here
convert between the two, build and parse the AVCDecoderConfigurationRecord (ISO/IEC
14496-15 §5.3.3.1, the FLV "AVC sequence header") and read the few SPS fields the
gateway decides on (profile, constraint flags, picture size, frame reordering).

Everything is pure Python working on ``bytes`` with C-level ``find``/slicing, and every
parser raises :class:`H264Error` (a ``ValueError``) on malformed input, never anything
else (fuzzed in tests/test_h264.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

# nal_unit_type values (H.264 Table 7-1)
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

START_CODE = b"\x00\x00\x00\x01"
_START3 = b"\x00\x00\x01"

# Profiles whose SPS carries chroma_format_idc/bit depths (H.264 7.3.2.1.1) and whose
# avcC carries the extension fields (ISO/IEC 14496-15 §5.3.3.1.2).
_HIGH_SPS_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_AVCC_EXT_PROFILES = frozenset({100, 110, 122, 144})


class H264Error(ValueError):
    """Malformed H.264 framing, parameter set or configuration record."""


def nal_type(nal: bytes) -> int:
    """nal_unit_type: the low five bits of the NAL header byte (H.264 7.3.1)."""
    if not nal:
        raise H264Error("empty NAL unit")
    return nal[0] & 0x1F


# -- Annex-B ---------------------------------------------------------------------------
def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex-B byte stream into NAL units (without start codes).

    Start codes may be 3 or 4 bytes (B.1.1: zero_byte + start_code_prefix_one_3bytes).
    Trailing zero bytes before the next start code are trailing_zero_8bits (or
    cabac_zero_words, which are padding) and are dropped; empty NAL units are skipped.
    Bytes before the first start code must be leading_zero_8bits.
    """
    find = data.find
    pos = find(_START3)
    if pos < 0:
        raise H264Error("no Annex-B start code")
    if data[:pos].strip(b"\x00"):
        raise H264Error("data before the first Annex-B start code")
    nals: list[bytes] = []
    start = pos + 3
    while True:
        nxt = find(_START3, start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        if nxt < 0:
            return nals
        start = nxt + 3


def join_annexb(nals: Iterable[bytes]) -> bytes:
    """NAL units as an Annex-B stream with 4-byte start codes."""
    return b"".join(START_CODE + nal for nal in nals)


def annexb_to_avcc(data: bytes, length_size: int = 4) -> bytes:
    """Annex-B stream -> AVCC (each NAL prefixed by its big-endian length)."""
    return join_avcc(split_annexb(data), length_size)


# -- AVCC ------------------------------------------------------------------------------
def _avcc_spans(data: bytes, length_size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of every non-empty NAL unit in an AVCC payload (14496-15 §5.3.4.2)."""
    if not 1 <= length_size <= 4:
        raise H264Error(f"NAL length size {length_size} not in 1..4")
    pos = 0
    total = len(data)
    while pos < total:
        head = pos + length_size
        if head > total:
            raise H264Error("truncated AVCC NAL length")
        size = int.from_bytes(data[pos:head], "big")
        end = head + size
        if end > total:
            raise H264Error(f"AVCC NAL of {size} bytes runs past the end ({total - head} left)")
        if size:
            yield head, end
        pos = end


def split_avcc(data: bytes, length_size: int = 4) -> list[bytes]:
    """Split AVCC (length-prefixed NAL units) into NAL units.

    ``length_size`` is the avcC's lengthSizeMinusOne + 1. Zero-length entries are
    skipped; a length running past the end raises :class:`H264Error`.
    """
    return [data[start:end] for start, end in _avcc_spans(data, length_size)]


def join_avcc(nals: Iterable[bytes], length_size: int = 4) -> bytes:
    """NAL units as AVCC with ``length_size``-byte big-endian lengths."""
    if not 1 <= length_size <= 4:
        raise H264Error(f"NAL length size {length_size} not in 1..4")
    limit = 1 << (8 * length_size)
    parts: list[bytes] = []
    for nal in nals:
        if len(nal) >= limit:
            raise H264Error(f"NAL of {len(nal)} bytes does not fit a {length_size}-byte length")
        parts.append(len(nal).to_bytes(length_size, "big"))
        parts.append(nal)
    return b"".join(parts)


def avcc_to_annexb(data: bytes, length_size: int = 4) -> bytes:
    """AVCC -> Annex-B with 4-byte start codes."""
    return join_annexb(split_avcc(data, length_size))


def avcc_nal_types(data: bytes, length_size: int = 4) -> list[int]:
    """The nal_unit_type of every NAL unit in an AVCC payload (no slicing copies)."""
    return [data[start] & 0x1F for start, _ in _avcc_spans(data, length_size)]


def is_idr(avcc_payload: bytes, length_size: int = 4) -> bool:
    """True when the AVCC access unit holds an IDR slice (nal_unit_type 5)."""
    return NAL_IDR in avcc_nal_types(avcc_payload, length_size)


def insert_parameter_sets(
    nals: list[bytes], sps: Sequence[bytes], pps: Sequence[bytes]
) -> list[bytes] | None:
    """``nals`` with SPS/PPS in front of an IDR access unit that lacks them.

    An RTP receiver joining mid-stream has no out-of-band parameter sets (RFC 6184 allows
    ``sprop-parameter-sets`` but browsers rely on in-band ones), so every IDR must carry
    them. Non-IDR access units, and IDRs that already carry both SPS and PPS, come back
    unchanged; a leading access unit delimiter stays first (H.264 7.4.1.2.3). None when
    the IDR needs parameter sets and none are given.
    """
    types = [nal[0] & 0x1F for nal in nals]
    if NAL_IDR not in types or (NAL_SPS in types and NAL_PPS in types):
        return nals
    if not sps or not pps:
        return None
    at = 1 if types[0] == NAL_AUD else 0
    return [*nals[:at], *sps, *pps, *nals[at:]]


def prepend_parameter_sets(
    annexb_frame: bytes, sps: bytes | Sequence[bytes], pps: bytes | Sequence[bytes]
) -> bytes:
    """Put SPS/PPS in front of an IDR access unit (Annex-B), as WebRTC receivers need
    (:func:`insert_parameter_sets`); other frames are returned unchanged."""
    nals = split_annexb(annexb_frame)
    sps_list = [sps] if isinstance(sps, bytes | bytearray) else list(sps)
    pps_list = [pps] if isinstance(pps, bytes | bytearray) else list(pps)
    framed = insert_parameter_sets(nals, [bytes(n) for n in sps_list], [bytes(n) for n in pps_list])
    if framed is None:
        raise H264Error("an IDR needs at least one SPS and one PPS")
    if framed is nals:
        return annexb_frame
    return join_annexb(framed)


def annexb_has_idr(data: bytes) -> bool:
    """Whether an Annex-B access unit holds an IDR slice (nal_unit_type 5, H.264
    §7.4.1.2), scanning start codes without splitting: run on every received frame."""
    i = data.find(_START3)
    while i >= 0:
        j = i + 3
        if j < len(data) and data[j] & 0x1F == NAL_IDR:
            return True
        i = data.find(_START3, j)
    return False


# -- AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) --------------------------
@dataclass(frozen=True, slots=True)
class AvcConfig:
    """The fields of an avcC record the gateway uses."""

    profile: int  # AVCProfileIndication (= SPS profile_idc)
    compatibility: int  # profile_compatibility (= SPS constraint_set flags byte)
    level: int  # AVCLevelIndication
    length_size: int  # lengthSizeMinusOne + 1: bytes of each AVCC NAL length
    sps: list[bytes] = field(default_factory=list)
    pps: list[bytes] = field(default_factory=list)


def build_avc_config(
    sps: bytes | Sequence[bytes], pps: bytes | Sequence[bytes], length_size: int = 4
) -> bytes:
    """Build an AVCDecoderConfigurationRecord from SPS and PPS NAL units.

    Profile, compatibility and level are copied from the first SPS (14496-15
    §5.3.3.1.2). For the High profiles 100/110/122/144 the record ends with
    chroma_format, the bit depths and an empty SPS-extension list, read from the SPS.
    """
    sps_list = [sps] if isinstance(sps, bytes | bytearray) else list(sps)
    pps_list = [pps] if isinstance(pps, bytes | bytearray) else list(pps)
    if not sps_list or not pps_list:
        raise H264Error("an avcC record needs at least one SPS and one PPS")
    if len(sps_list) > 31 or len(pps_list) > 255:
        raise H264Error("too many parameter sets for an avcC record")
    if length_size not in (1, 2, 4):
        raise H264Error(f"lengthSizeMinusOne allows 1, 2 or 4 bytes, not {length_size}")
    for nal in sps_list:
        if len(nal) < 4 or nal[0] & 0x1F != NAL_SPS:
            raise H264Error("not an SPS NAL unit")
    for nal in pps_list:
        if len(nal) < 1 or nal[0] & 0x1F != NAL_PPS:
            raise H264Error("not a PPS NAL unit")
    first = sps_list[0]
    out = bytearray((1, first[1], first[2], first[3], 0xFC | (length_size - 1)))
    out.append(0xE0 | len(sps_list))
    for nal in sps_list:
        if len(nal) > 0xFFFF:
            raise H264Error("SPS too long for an avcC record")
        out += len(nal).to_bytes(2, "big") + nal
    out.append(len(pps_list))
    for nal in pps_list:
        if len(nal) > 0xFFFF:
            raise H264Error("PPS too long for an avcC record")
        out += len(nal).to_bytes(2, "big") + nal
    if first[1] in _AVCC_EXT_PROFILES:
        info = parse_sps(first)
        out.append(0xFC | (info.chroma_format_idc & 0x03))
        out.append(0xF8 | ((info.bit_depth_luma - 8) & 0x07))
        out.append(0xF8 | ((info.bit_depth_chroma - 8) & 0x07))
        out.append(0)  # numOfSequenceParameterSetExt
    return bytes(out)


def parse_avc_config(record: bytes) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord; trailing extension fields are ignored."""
    if len(record) < 7:
        raise H264Error("avcC record shorter than 7 bytes")
    if record[0] != 1:
        raise H264Error(f"avcC configurationVersion {record[0]} is not 1")
    length_size = (record[4] & 0x03) + 1
    if length_size == 3:
        raise H264Error("avcC lengthSizeMinusOne 2 is not allowed")
    pos = 6
    sps: list[bytes] = []
    for _ in range(record[5] & 0x1F):
        nal, pos = _read_param_set(record, pos)
        sps.append(nal)
    if pos >= len(record):
        raise H264Error("avcC record ends before numOfPictureParameterSets")
    count = record[pos]
    pos += 1
    pps: list[bytes] = []
    for _ in range(count):
        nal, pos = _read_param_set(record, pos)
        pps.append(nal)
    return AvcConfig(record[1], record[2], record[3], length_size, sps, pps)


def _read_param_set(record: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(record):
        raise H264Error("avcC record truncated in a parameter set length")
    size = int.from_bytes(record[pos : pos + 2], "big")
    end = pos + 2 + size
    if size == 0 or end > len(record):
        raise H264Error("avcC parameter set empty or truncated")
    return record[pos + 2 : end], end


# -- SPS (H.264 7.3.2.1.1, E.1.1) -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile_idc: int
    constraint_flags: int  # constraint_set0_flag is bit 7 of this byte ... set5 is bit 2
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    frame_mbs_only: bool
    max_num_reorder_frames: int | None  # from VUI bitstream_restriction, when present

    def constraint_set(self, n: int) -> bool:
        return bool(self.constraint_flags & (0x80 >> n))


class _Bits:
    """MSB-first bit reader over an RBSP held in one Python int (SPS are tiny)."""

    __slots__ = ("pos", "total", "value")

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.total = len(data) * 8
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > self.total:
            raise H264Error("SPS ends early")
        self.pos += n
        return (self.value >> (self.total - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        # Exp-Golomb (H.264 9.1): leading zeros, a one, then as many info bits.
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise H264Error("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def unescape_rbsp(nal_payload: bytes) -> bytes:
    """Remove emulation_prevention_three_bytes (H.264 7.4.1: 0x000003 -> 0x0000)."""
    return nal_payload.replace(b"\x00\x00\x03", b"\x00\x00")


def parse_sps(sps: bytes) -> SpsInfo:
    """Read profile, constraint flags, picture size and reordering from an SPS NAL unit."""
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise H264Error("not an SPS NAL unit")
    profile_idc, flags, level_idc = sps[1], sps[2], sps[3]
    r = _Bits(unescape_rbsp(sps[4:]))
    if r.ue() > 31:
        raise H264Error("seq_parameter_set_id out of range")
    chroma_format_idc, depth_luma, depth_chroma, separate_planes = 1, 8, 8, False
    if profile_idc in _HIGH_SPS_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise H264Error("chroma_format_idc out of range")
        if chroma_format_idc == 3:
            separate_planes = bool(r.u(1))
        depth_luma = r.ue() + 8
        depth_chroma = r.ue() + 8
        if depth_luma > 14 or depth_chroma > 14:
            raise H264Error("bit depth out of range")
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    if r.ue() > 12:  # log2_max_frame_num_minus4
        raise H264Error("log2_max_frame_num_minus4 out of range")
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            raise H264Error("num_ref_frames_in_pic_order_cnt_cycle out of range")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise H264Error("pic_order_cnt_type out of range")
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = bool(r.u(1))
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop_l = crop_r = crop_t = crop_b = 0
    if r.u(1):  # frame_cropping_flag
        crop_l, crop_r, crop_t, crop_b = r.ue(), r.ue(), r.ue(), r.ue()
    # Crop units (7.4.2.1.1, Table 6-1): ChromaArrayType 0 crops in luma samples.
    chroma_array_type = 0 if separate_planes else chroma_format_idc
    sub_w = 2 if chroma_array_type in (1, 2) else 1
    sub_h = 2 if chroma_array_type == 1 else 1
    crop_x = 1 if chroma_array_type == 0 else sub_w
    crop_y = (2 - frame_mbs_only) * (1 if chroma_array_type == 0 else sub_h)
    width = width_mbs * 16 - crop_x * (crop_l + crop_r)
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop_t + crop_b)
    if width <= 0 or height <= 0:
        raise H264Error("SPS cropping leaves no picture")
    reorder = None
    if r.u(1):  # vui_parameters_present_flag
        reorder = _vui_max_num_reorder_frames(r)
    return SpsInfo(
        profile_idc,
        flags,
        level_idc,
        chroma_format_idc,
        depth_luma,
        depth_chroma,
        width,
        height,
        frame_mbs_only,
        reorder,
    )


def _skip_scaling_list(r: _Bits, size: int) -> None:
    # scaling_list() (7.3.2.1.1.1): delta-coded until nextScale becomes 0.
    last = nxt = 8
    for _ in range(size):
        if nxt:
            delta = r.se()
            if not -128 <= delta <= 127:
                raise H264Error("delta_scale out of range")
            nxt = (last + delta + 256) % 256
        last = nxt or last


def _skip_hrd(r: _Bits) -> None:
    # hrd_parameters() (E.1.2)
    cpb_cnt = r.ue() + 1
    if cpb_cnt > 32:
        raise H264Error("cpb_cnt_minus1 out of range")
    r.u(8)  # bit_rate_scale, cpb_size_scale
    for _ in range(cpb_cnt):
        r.ue()  # bit_rate_value_minus1
        r.ue()  # cpb_size_value_minus1
        r.u(1)  # cbr_flag
    r.u(20)  # four 5-bit delay/offset lengths


def _vui_max_num_reorder_frames(r: _Bits) -> int | None:
    """Walk vui_parameters() (E.1.1) to bitstream_restriction's max_num_reorder_frames."""
    # aspect_ratio_info_present_flag, then aspect_ratio_idc (255: Extended_SAR)
    if r.u(1) and r.u(8) == 255:
        r.u(32)
    if r.u(1):  # overscan_info_present_flag
        r.u(1)
    if r.u(1):  # video_signal_type_present_flag
        r.u(4)  # video_format, video_full_range_flag
        if r.u(1):  # colour_description_present_flag
            r.u(24)
    if r.u(1):  # chroma_loc_info_present_flag
        r.ue()
        r.ue()
    if r.u(1):  # timing_info_present_flag
        r.u(32)
        r.u(32)
        r.u(1)
    nal_hrd = r.u(1)
    if nal_hrd:
        _skip_hrd(r)
    vcl_hrd = r.u(1)
    if vcl_hrd:
        _skip_hrd(r)
    if nal_hrd or vcl_hrd:
        r.u(1)  # low_delay_hrd_flag
    r.u(1)  # pic_struct_present_flag
    if not r.u(1):  # bitstream_restriction_flag
        return None
    r.u(1)  # motion_vectors_over_pic_boundaries_flag
    for _ in range(4):  # max_bytes_per_pic_denom .. log2_max_mv_length_vertical
        r.ue()
    return r.ue()


def baseline_without_bframes(sps: bytes) -> bool:
    """True when the stream is known to have no B-frames/reordering: safe to pass through.

    The rule, cheapest test first (H.264 Annex A, 7.4.2.1.1, E.2.1):

    1. profile_idc 66 (Baseline; Constrained Baseline when constraint_set1 is also set):
       Baseline allows only I and P slices (A.2.1), so never B-frames. Flash Player 11's
       camera, OpenH264 and aiortc send this.
    2. constraint_set0_flag: the stream obeys all Baseline constraints, whatever its
       profile_idc says (e.g. a Main-profile SPS with the Baseline compatibility bit).
    3. profile_idc 77/88/100 with constraint_set5_flag: "no B slices" (Constrained
       High is 100 + constraint_set4 + constraint_set5; Safari's 640c1f).
    4. Otherwise (Main/High may carry B-frames) only a VUI bitstream_restriction with
       max_num_reorder_frames == 0 shows that output order equals decode order.
       An SPS without that field is treated as "may reorder": not passthrough-safe.

    Raises :class:`H264Error` for a malformed SPS.
    """
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise H264Error("not an SPS NAL unit")
    profile_idc, flags = sps[1], sps[2]
    if profile_idc == 66 or flags & 0x80:
        return True
    if profile_idc in (77, 88, 100) and flags & 0x04:
        return True
    return parse_sps(sps).max_num_reorder_frames == 0


def parameter_sets(nals: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The SPS and PPS NAL units among ``nals``, in order."""
    sps: list[bytes] = []
    pps: list[bytes] = []
    for nal in nals:
        t = nal[0] & 0x1F
        if t == NAL_SPS:
            sps.append(nal)
        elif t == NAL_PPS:
            pps.append(nal)
    return sps, pps
