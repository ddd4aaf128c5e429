"""The audio pipe: decoder -> resampler -> encoder with sample-counted timestamps.

Worker thread only. Output audio is counted in samples from the first input timestamp
so it is continuous and monotonic on the source's clock; AAC has its
AudioSpecificConfig first.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
import av.error
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.codec.context import CodecContext

from gateway.codecs.aac import audio_specific_config
from gateway.media import AUDIO, AudioParams, MediaUnit
from gateway.transcode.formats import (
    AUDIO_DECODERS,
    AUDIO_DEFAULTS,
    AUDIO_ENCODERS,
    AUDIO_RATES,
    AUDIO_RESYNC_MS,
    MS,
    NATIVE_RATES,
    TIMELINE_JUMP_MS,
    TS_MASK,
)
from gateway.transcode.pipe import Pipe


class AudioPipe(Pipe):
    """Decoder -> resampler -> encoder, with sample-counted timestamps. Worker only."""

    def reset(self) -> None:
        self.dec: AudioCodecContext | None = None
        self.dec_key: tuple[str, int, int, bytes | None] | None = None
        self.asc: bytes | None = None  # source AudioSpecificConfig (AAC extradata)
        self.resampler: AudioResampler | None = None
        self.rs_key: tuple[str, str, int] | None = None
        self.enc: AudioCodecContext | None = None
        # the open encoder's time base, read once: PyAV makes a new Fraction on every
        # read of ``time_base``, and frames are stamped with it one by one (issue 14)
        self.enc_time_base = Fraction(1, 1000)
        self.rate = AUDIO_RATES[self.target]
        self.channels = 1
        self.out_params: AudioParams | None = None
        self.anchor_ms: float | None = None  # session ms of encoder sample 0
        self.fed = 0  # samples given to the encoder
        self.last_out_ms = -1
        self.config_sent = False

    def handle(self, unit: MediaUnit, ts: int) -> list[MediaUnit]:
        if unit.config:
            if unit.codec == "aac" and unit.payload:
                self.asc = unit.payload
            return []
        frames, rate = self._decode(unit, ts)
        out: list[MediaUnit] = []
        offset = 0
        for frame in frames:
            out += self._encode(frame, ts + offset * 1000 / rate)
            offset += frame.samples
        return out

    def _spec(self, unit: MediaUnit) -> tuple[str, int, int, bytes | None] | None:
        codec = unit.codec
        params = unit.audio
        rate, channels = AUDIO_DEFAULTS.get(codec, (44100, 1))
        if params is not None and params.sample_rate is not None:
            rate = params.sample_rate
            channels = params.channels or channels
        if codec in ("pcm", "pcm_le"):
            # FLV SoundFormat 0 is "platform endian": little endian in practice.
            bits = params.sample_bits if params is not None else None
            name = "pcm_u8" if bits == 8 else "pcm_s16le"
        else:
            found = AUDIO_DECODERS.get(codec)
            if found is None:
                return None
            name = found
        extradata = self.asc if codec == "aac" else None
        return name, rate, channels, extradata

    def _decode(self, unit: MediaUnit, ts: int) -> tuple[list[AudioFrame], int]:
        stats = self.stats
        spec = self._spec(unit)
        if spec is None or not unit.payload:
            stats.decode_errors += 1
            stats.last_error = f"no decoder for audio codec {unit.codec!r}"
            return [], 1
        name, rate, channels, extradata = spec
        if unit.codec == "aac" and extradata is None:
            stats.skipped_waiting_keyframe += 1  # raw AAC is undecodable without its ASC
            return [], 1
        if self.dec is None or self.dec_key != spec:
            self.dec = _audio_decoder(name, rate, channels, extradata)
            self.dec_key = spec
        packet = av.Packet(unit.payload)
        packet.pts = ts
        packet.time_base = MS
        frames = self.decode(self.dec.decode, packet, name, unit.codec)
        if frames is None:
            return [], 1
        stats.audio_frames_decoded += len(frames)
        out_rate = frames[0].sample_rate if frames else rate
        stats.audio_media_seconds += sum(f.samples for f in frames) / (out_rate or 1)
        return frames, out_rate or 1

    def _open_encoder(self, channels: int, in_rate: int) -> None:
        target = self.target
        native = NATIVE_RATES.get(target, ())
        self.rate = in_rate if in_rate in native else AUDIO_RATES[target]
        # Nellymoser and the telephone codecs are mono
        mono = target in ("nellymoser", "alaw", "mulaw", "g722")
        self.channels = 1 if mono else max(1, min(2, channels))
        layout = "mono" if self.channels == 1 else "stereo"
        ctx = CodecContext.create(AUDIO_ENCODERS[target], "w")
        assert isinstance(ctx, AudioCodecContext)
        formats = [f.name for f in ctx.codec.audio_formats or ()]
        ctx.format = next((f for f in ("fltp", "flt", "s16") if f in formats), formats[0])
        ctx.sample_rate = self.rate
        ctx.layout = layout
        ctx.time_base = Fraction(1, self.rate)
        if target not in ("nellymoser", "alaw", "mulaw", "g722"):  # rates fixed by the codec
            ctx.bit_rate = self.control.target.audio_bitrate * self.channels
        if target == "opus":
            # 20 ms frames (WebRTC's default ptime), tuned for speech.
            ctx.options = {"application": "voip", "frame_duration": "20"}
        elif target == "mp3":
            # No bit reservoir: each MP3 frame decodes alone, so a player that joins
            # mid-stream (or after a drop) does not start with broken frames.
            ctx.options = {"reservoir": "0"}
        ctx.open()
        self.enc = ctx
        self.enc_time_base = ctx.time_base
        self.stats.encoder_opens += 1
        # Opus is 48 kHz on the wire (RFC 7587) whatever rate the encoder was fed
        self.out_params = AudioParams(48000 if target == "opus" else self.rate, self.channels)
        # PyAV's encode() wraps every frame in an AudioResampler of its own that cuts the
        # encoder's frame_size; ours only converts rate/format/layout, so the pair never
        # converts twice.

    def _encode(self, frame: AudioFrame, ms: float) -> list[MediaUnit]:
        if self.enc is None:
            self._open_encoder(frame.layout.nb_channels, frame.sample_rate)
        enc = self.enc
        assert enc is not None
        out: list[MediaUnit] = []
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self.resampler is None or key != self.rs_key:
            if self.resampler is not None:
                for rest in self.resampler.resample(None):
                    out += self._feed(rest)
            self.resampler = AudioResampler(
                format=enc.format.name, layout=enc.layout.name, rate=self.rate
            )
            self.rs_key = key
        if self.anchor_ms is None:
            self.anchor_ms = ms - self.fed * 1000 / self.rate
        else:
            drift = ms - (self.anchor_ms + self.fed * 1000 / self.rate)
            if drift > AUDIO_RESYNC_MS or drift < -TIMELINE_JUMP_MS:
                # A gap in the source (or a new timeline): follow its clock.
                self.anchor_ms = ms - self.fed * 1000 / self.rate
                if drift < 0:
                    self.last_out_ms = -1
            elif drift < -AUDIO_RESYNC_MS:
                self.stats.audio_resync_drops += 1
                return out
        for converted in self.resampler.resample(frame):
            out += self._feed(converted)
        return out

    def _feed(self, frame: AudioFrame) -> list[MediaUnit]:
        enc = self.enc
        assert enc is not None and self.anchor_ms is not None
        stats = self.stats
        frame.pts = self.fed
        frame.time_base = self.enc_time_base
        self.fed += frame.samples
        packets = self.encode(enc.encode, frame, enc.name)
        if packets is None:
            return []
        out: list[MediaUnit] = []
        params = self.out_params
        for packet in packets:
            pts = max(0, packet.pts or 0)
            ms = max(self.last_out_ms, math.floor(self.anchor_ms + pts * 1000 / self.rate))
            self.last_out_ms = ms
            if not self.config_sent:
                self.config_sent = True
                if self.target == "aac":
                    asc = enc.extradata or audio_specific_config(self.rate, self.channels)
                    out.append(
                        MediaUnit(AUDIO, "aac", ms & TS_MASK, bytes(asc), config=True, audio=params)
                    )
                    stats.config_out += 1
            stats.audio_out += 1
            data = bytes(packet)
            stats.bytes_out += len(data)
            out.append(MediaUnit(AUDIO, self.target, ms & TS_MASK, data, audio=params))
        return out


def _audio_decoder(
    name: str, rate: int, channels: int, extradata: bytes | None
) -> AudioCodecContext:
    ctx = CodecContext.create(name, "r")
    assert isinstance(ctx, AudioCodecContext)
    ctx.sample_rate = rate
    ctx.layout = "stereo" if channels == 2 else "mono"
    if extradata:
        ctx.extradata = extradata
    ctx.open()
    return ctx
