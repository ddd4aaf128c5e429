"""The announcements a caller hears (docs/phone.md, "Prompts"): synthesized at start-up.

German first, English on a key press (``*``). The texts are here; Debian's ``espeak-ng``
speaks them once when the telephone leg starts (no network service, nothing shipped as a
binary), and ``gateway/transcode/clips.py`` encodes each for the codecs a call may
negotiate. Without ``espeak-ng`` the leg still works: every prompt is then a short
pattern of tones (and the log says so once).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import shutil
import struct

from gateway.transcode.clips import decode_to_pcm, encode_clip

log = logging.getLogger(__name__)

PCM_RATE = 16000  # the synthesized speech, before encoding per codec

# (prompt, language) -> text. Short sentences: the caller waits through each of them.
TEXTS: dict[tuple[str, str], str] = {
    ("welcome", "de"): "Willkommen bei der Video-Beratung. Bitte geben Sie Ihren "
    "Telefon-Code ein. For English, press star.",
    ("welcome", "en"): "Welcome to the video consultation. Please enter your phone code.",
    ("wrong", "de"): "Dieser Code ist nicht richtig. Bitte versuchen Sie es noch einmal.",
    ("wrong", "en"): "This code is not correct. Please try again.",
    ("goodbye", "de"): "Der Code konnte nicht bestätigt werden. Auf Wiederhören.",
    ("goodbye", "en"): "The code could not be confirmed. Goodbye.",
    ("ended", "de"): "Die Beratung ist beendet. Auf Wiederhören.",
    ("ended", "en"): "The consultation has ended. Goodbye.",
    ("busy", "de"): "Für diese Beratung ist schon ein Telefon verbunden. Auf Wiederhören.",
    ("busy", "en"): "A telephone is already connected to this consultation. Goodbye.",
    ("dialout", "de"): "Hier ist die Video-Beratung. Um das Gespräch anzunehmen, "
    "drücken Sie die Eins.",
    ("dialout", "en"): "This is the video consultation. To accept the call, press one.",
}
VOICES = {"de": "de", "en": "en"}


def tones(freqs: tuple[float, ...], each: float = 0.15, gap: float = 0.05) -> bytes:
    """A short sequence of sine tones as s16 PCM at :data:`PCM_RATE` (the join chime,
    and the fallback for a prompt when no synthesizer is installed)."""
    out = bytearray()
    n = int(PCM_RATE * each)
    for freq in freqs:
        for i in range(n):
            fade = min(1.0, i / 80, (n - i) / 80)  # no clicks at the edges
            value = 0.3 * fade * math.sin(2 * math.pi * freq * i / PCM_RATE)
            out += struct.pack("<h", int(value * 32767))
        out += bytes(2 * int(PCM_RATE * gap))
    return bytes(out)


# the chime on joining: short, so the advisor is heard well within a second of the last
# digit (docs/phone.md)
CHIME = tones((660.0, 990.0), each=0.12, gap=0.02)


class Prompts:
    """Every prompt encoded for every telephone codec: ``frames(name, lang, codec)``."""

    def __init__(self, pcm: dict[tuple[str, str], bytes]) -> None:
        self._pcm = pcm
        self._encoded: dict[tuple[str, str, str], bytes] = {}
        self._silence: dict[str, bytes] = {}
        self._noise: dict[tuple[str, int], list[bytes]] = {}
        self.ready: set[str] = set()  # codecs every prompt is encoded for

    @classmethod
    async def synthesize(cls, espeak: str | None = None) -> Prompts:
        """Speak every text with ``espeak-ng`` (subprocesses, decoding off the loop) and
        encode them for all codecs (in a thread)."""
        espeak = espeak or shutil.which("espeak-ng")
        if espeak is None:
            log.warning("espeak-ng not found: the telephone prompts are tones only")
        keys = list(TEXTS)
        spoken = await asyncio.gather(
            *(_speak(espeak, VOICES[key[1]], TEXTS[key]) for key in keys) if espeak else ()
        )
        wavs = dict(zip(keys, spoken, strict=True)) if espeak else {}

        def decode_all() -> dict[tuple[str, str], bytes]:
            pcm: dict[tuple[str, str], bytes] = {("chime", ""): CHIME}
            for key in keys:
                wav = wavs.get(key)
                fallback = tones((440.0, 660.0) if key[0] != "goodbye" else (660.0, 440.0))
                pcm[key] = decode_to_pcm(wav, PCM_RATE) if wav else fallback
            return pcm

        prompts = cls(await asyncio.to_thread(decode_all))
        # the default codec now; the others on first use (a millisecond or two each)
        await asyncio.to_thread(prompts.encode_for, "alaw")
        return prompts

    def encode_for(self, codec: str) -> None:
        """Every prompt in ``codec`` (G.722: most of a second; call it in a thread)."""
        for key, pcm in self._pcm.items():
            self._encoded[(*key, codec)] = encode_clip(pcm, PCM_RATE, codec)
        self._silence[codec] = encode_clip(bytes(2 * PCM_RATE // 50), PCM_RATE, codec)
        self.ready.add(codec)

    def clip(self, name: str, lang: str, codec: str) -> bytes:
        """Prompt ``name`` in ``codec``; encoded on first use (a few ms a clip: G.711 at
        start-up for all, the rest when a call negotiates them)."""
        key = (name, "" if name == "chime" else lang, codec)
        found = self._encoded.get(key)
        if found is None:
            found = self._encoded[key] = encode_clip(self._pcm[key[:2]], PCM_RATE, codec)
        return found

    def noise(self, codec: str, level: int) -> list[bytes]:
        """200 ms of comfort noise at ``level`` -dBov (RFC 3389 section 3.1), in 20 ms
        frames of ``codec``: white noise of that RMS, made once per codec and 3 dB step."""
        step = min(127, max(0, level)) // 3 * 3
        found = self._noise.get((codec, step))
        if found is None:
            rms = 32767 * 10 ** (-step / 20)
            peak = rms * math.sqrt(3)  # a uniform distribution's RMS is peak / sqrt(3)
            rng = random.Random(step)
            samples = PCM_RATE // 5
            pcm = struct.pack(
                f"<{samples}h", *(round(rng.uniform(-peak, peak)) for _ in range(samples))
            )
            clip = encode_clip(pcm, PCM_RATE, codec)
            size = len(clip) // 10
            found = self._noise[(codec, step)] = [
                clip[i : i + size] for i in range(0, 10 * size, size)
            ]
        return found

    def silence(self, codec: str) -> bytes:
        """20 ms of silence in ``codec``."""
        found = self._silence.get(codec)
        if found is None:
            found = self._silence[codec] = encode_clip(bytes(2 * PCM_RATE // 50), PCM_RATE, codec)
        return found


async def _speak(espeak: str, voice: str, text: str) -> bytes | None:
    proc = await asyncio.create_subprocess_exec(
        espeak,
        "-v",
        voice,
        "-s",
        "150",
        "--stdout",
        text,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0 or not out:
        log.warning("espeak-ng failed for a %s prompt (exit %s)", voice, proc.returncode)
        return None
    return out
