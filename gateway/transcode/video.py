"""The video pipe: decoder -> yuv420p -> encoder for one output codec (worker thread).

Output H.264 is Baseline without B-frames, AVCC, with an AVCDecoderConfigurationRecord
config unit first and whenever SPS/PPS change. Key frames are forced on request
(PLI/FIR, through :class:`PipeControl`), at least every 2-3 s and after every encoder
(re)open (resolution or bitrate change, source restart).
"""

from __future__ import annotations

from fractions import Fraction

import av
import av.error
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from gateway.codecs import h264
from gateway.media import VIDEO, MediaUnit, VideoParams
from gateway.transcode.formats import (
    BITRATE_HYSTERESIS,
    KEYFRAME_INTERVAL_MS,
    MIN_KEYFRAME_GAP_MS,
    MS,
    TIMELINE_JUMP_MS,
    TS_MASK,
    URGENT_BITRATE_DROP,
    VIDEO_DECODERS,
    VIDEO_ENCODERS,
    record_error,
)
from gateway.transcode.pipe import Pipe


class VideoPipe(Pipe):
    """Decoder -> yuv420p -> encoder for one output codec. Worker thread only."""

    def reset(self) -> None:
        self.dec: VideoCodecContext | None = None  # dropping these frees the codecs
        self.dec_key: tuple[str, bytes | None] | None = None
        self.avcc: bytes | None = None  # source avcC record (H.264 extradata)
        self.need_key = True
        self.last_in_ms: int | None = None
        self.fps: float | None = None
        self._close_encoder()
        self.params: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = None
        self.key_served = self.control.key_requests

    def _close_encoder(self) -> None:
        self.enc: VideoCodecContext | None = None
        # the open encoder's time base, read once: PyAV makes a new Fraction on every
        # read of ``time_base``, and frames are stamped with it one by one (issue 14)
        self.enc_time_base = Fraction(1, 1000)
        self.enc_size = (0, 0)
        self.enc_params: VideoParams | None = None
        self.enc_bitrate = 0
        self.enc_maxrate = 0
        self.enc_fps = 0
        self.enc_counter = 0
        self.last_pts_ms: int | None = None
        self.last_key_ms: int | None = None  # a new encoder starts with a key frame
        self.pts_map: dict[int, int] = {}

    # -- decoding -------------------------------------------------------------------------
    def handle(self, unit: MediaUnit, ts: int) -> list[MediaUnit]:
        if unit.config:
            if unit.codec == "h264" and unit.payload:
                try:
                    h264.parse_avc_config(unit.payload)
                except ValueError as exc:
                    self.stats.decode_errors += 1
                    record_error(self.stats, "avcC", exc)
                    return []
                self.avcc = unit.payload
            return []  # info/end-of-sequence units carry no picture
        frames = self._decode(unit, ts)
        out: list[MediaUnit] = []
        for frame in frames:
            out += self._encode(frame)
        return out

    def _decode(self, unit: MediaUnit, ts: int) -> list[VideoFrame]:
        stats = self.stats
        name = VIDEO_DECODERS.get(unit.codec)
        if name is None or not unit.payload:
            stats.decode_errors += 1
            stats.last_error = f"no decoder for video codec {unit.codec!r}"
            return []
        payload = unit.payload
        extradata: bytes | None = None
        if unit.codec == "h264":
            if self.avcc is not None:
                extradata = self.avcc
            else:
                # No sequence header seen: let the decoder find in-band SPS/PPS.
                try:
                    payload = h264.avcc_to_annexb(payload)
                except ValueError as exc:
                    stats.decode_errors += 1
                    record_error(stats, "AVCC", exc)
                    return []
        elif unit.codec in ("vp6", "vp6a"):
            # FLV's VP6 body starts with the crop adjustment byte, which FFmpeg's VP6
            # decoders take as 1-byte extradata (as its FLV demuxer passes it).
            extradata, payload = payload[:1], payload[1:]
        key = (name, extradata)
        if self.dec is None or self.dec_key != key:
            if not unit.keyframe:
                stats.skipped_waiting_keyframe += 1
                return []
            self.dec = _video_decoder(name, extradata)
            self.dec_key = key
            self.need_key = False
        elif self.need_key:
            if not unit.keyframe:
                stats.skipped_waiting_keyframe += 1
                return []
            self.need_key = False
        packet = av.Packet(payload)
        packet.pts = ts + unit.cts
        packet.dts = ts
        packet.time_base = MS
        frames = self.decode(self.dec.decode, packet, name, unit.codec)
        if frames is None:
            self.need_key = True
            return []
        stats.video_frames_decoded += len(frames)
        return frames

    # -- encoding -------------------------------------------------------------------------
    def _encode(self, frame: VideoFrame) -> list[MediaUnit]:
        ms = frame.pts if frame.pts is not None else self.last_in_ms
        if ms is None:
            return []
        ms = int(ms)
        self._track_rate(ms)
        width, height = frame.width & ~1, frame.height & ~1  # 4:2:0 needs even sizes
        if width < 16 or height < 16:
            return []
        if self.last_pts_ms is not None and ms < self.last_pts_ms - TIMELINE_JUMP_MS:
            self._close_encoder()  # the publisher's clock jumped back: a new timeline
        if self.last_pts_ms is not None and ms <= self.last_pts_ms:
            ms = self.last_pts_ms + 1  # encoders need strictly increasing time
        force = False
        control = self.control
        if control.key_requests != self.key_served and (
            self.last_key_ms is None or ms - self.last_key_ms >= MIN_KEYFRAME_GAP_MS
        ):
            force = True
            self.key_served = control.key_requests
        if self.last_key_ms is None or ms - self.last_key_ms >= KEYFRAME_INTERVAL_MS[self.target]:
            force = True
        if self.enc is not None and (
            (width, height) != self.enc_size or self._reopen_due(force, control.video_bitrate)
        ):
            self._close_encoder()
        if self.enc is None:
            self._open_encoder(width, height, control.video_bitrate)
            force = True
        enc = self.enc
        assert enc is not None
        if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
            frame = frame.reformat(width=width, height=height, format="yuv420p")
        if self.target == "spark":
            enc_pts = self.enc_counter  # mpegvideo rate control counts frames
            self.enc_counter += 1
        else:
            enc_pts = ms
        self.pts_map[enc_pts] = ms
        self.last_pts_ms = ms
        frame.pts = enc_pts
        frame.time_base = self.enc_time_base
        frame.pict_type = PictureType.I if force else PictureType.NONE
        packets = self.encode(enc.encode, frame, enc.name)
        if packets is None:
            self._close_encoder()
            return []
        return self._units(packets)

    def _track_rate(self, ms: int) -> None:
        last = self.last_in_ms
        self.last_in_ms = ms
        if last is None:
            return
        delta = ms - last
        if 0 < delta <= 1000:
            self.stats.video_media_seconds += delta / 1000
        if 5 <= delta <= 1000:
            rate = 1000 / delta
            self.fps = rate if self.fps is None else 0.9 * self.fps + 0.1 * rate

    def _reopen_due(self, force: bool, bitrate: int) -> bool:
        """Whether a new bitrate (or, for Spark, frame rate) warrants a reopen now."""
        enc = self.enc
        assert enc is not None
        current = self.enc_bitrate
        if abs(bitrate - current) > BITRATE_HYSTERESIS * current:
            if self.target == "h264" and bitrate <= self.enc_maxrate:
                # x264 retunes ABR under VBV on the fly (libx264.c reconfig_encoder), no
                # key frame needed; above the VBV rate it was opened with, reopen.
                enc.bit_rate = bitrate
                self.enc_bitrate = bitrate
                return False
            if force or bitrate <= URGENT_BITRATE_DROP * current:
                return True
        if self.target == "spark" and force and self.fps is not None:
            return abs(self.fps - self.enc_fps) > 0.3 * self.enc_fps
        return False

    def _open_encoder(self, width: int, height: int, bitrate: int) -> None:
        target = self.target
        fps = self.fps or (15.0 if self.dec_key and self.dec_key[0] in ("flv", "vp6f") else 30.0)
        fps_int = max(1, min(60, round(fps)))
        ctx = CodecContext.create(VIDEO_ENCODERS[target], "w")
        assert isinstance(ctx, VideoCodecContext)
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = bitrate
        ctx.framerate = Fraction(fps_int, 1)
        ctx.thread_count = self.control.threads
        rate = str(bitrate)
        if target == "vp8":
            ctx.time_base = MS
            ctx.gop_size = 100 * fps_int  # backstop; key frames are forced on time
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",  # no look-ahead: a frame in, a packet out
                "auto-alt-ref": "0",
                "error-resilient": "default",
                "max-intra-rate": "300",  # key frames at most 3x a frame's budget
                # CBR (minrate == maxrate == bitrate) with a 1 s buffer, like WebRTC
                "minrate": rate,
                "maxrate": rate,
                "bufsize": rate,
            }
        elif target == "h264":
            ctx.time_base = MS
            ctx.gop_size = 100 * fps_int
            ctx.options = {
                "preset": "veryfast",
                "tune": "zerolatency",  # no frame threads, no look-ahead, no B-frames
                "profile": "baseline",
                "bf": "0",
                "forced-idr": "1",  # a forced key frame is an IDR
                "maxrate": rate,
                "bufsize": rate,
                # In-band SPS/PPS on every IDR (no global header): we rebuild the avcC
                # from them. No scene-cut key frames: we decide when to key.
                "x264-params": "repeat-headers=1:scenecut=0",
            }
        else:  # Spark (FLV1, Sorenson H.263)
            ctx.time_base = Fraction(1, fps_int)
            ctx.gop_size = 100 * fps_int
        ctx.open()
        self.enc = ctx
        self.enc_time_base = ctx.time_base
        self.enc_size = (width, height)
        self.enc_params = VideoParams(width, height)
        self.enc_bitrate = self.enc_maxrate = bitrate
        self.enc_fps = fps_int
        self.stats.encoder_opens += 1

    def _units(self, packets: list[av.Packet]) -> list[MediaUnit]:
        out: list[MediaUnit] = []
        stats = self.stats
        params = self.enc_params
        for packet in packets:
            pts = packet.pts
            ms = self.pts_map.pop(pts, None) if pts is not None else None
            if ms is None:
                ms = self.last_pts_ms or 0
            if len(self.pts_map) > 64:  # frames an encoder never returned
                self.pts_map.clear()
            data = bytes(packet)
            keyframe = bool(packet.is_keyframe)
            annexb: bytes | None = None
            if self.target == "h264":
                nals = h264.split_annexb(data)
                sps, pps = h264.parameter_sets(nals)
                if sps and pps and (tuple(sps), tuple(pps)) != self.params:
                    self.params = (tuple(sps), tuple(pps))
                    record = h264.build_avc_config(sps, pps)
                    out.append(MediaUnit(VIDEO, "h264", ms & TS_MASK, record, config=True))
                    stats.config_out += 1
                if self.params is None:
                    continue  # nothing decodable before the first SPS/PPS
                annexb = data  # x264 repeats SPS/PPS before every IDR (repeat-headers=1)
                data = h264.join_avcc(
                    n for n in nals if n[0] & 0x1F not in (h264.NAL_SPS, h264.NAL_PPS, h264.NAL_AUD)
                )
            if keyframe:
                self.last_key_ms = ms
                stats.keyframes_out += 1
            stats.video_out += 1
            stats.bytes_out += len(data)
            out.append(
                MediaUnit(
                    VIDEO, self.target, ms & TS_MASK, data, keyframe, video=params, annexb=annexb
                )
            )
        return out


def _video_decoder(name: str, extradata: bytes | None) -> VideoCodecContext:
    ctx = CodecContext.create(name, "r")
    assert isinstance(ctx, VideoCodecContext)
    if extradata:
        ctx.extradata = extradata
    # One thread: frame threading would add a frame of delay per thread, and the
    # gateway gets its parallelism from running many transcoders.
    ctx.thread_count = 1
    ctx.open()
    return ctx
