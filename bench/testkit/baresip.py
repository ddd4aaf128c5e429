"""Debian's baresip as the customer's telephone, configured in a temporary directory.

Its microphone is a WAV file (``ausrc aufile``), what it hears is written to WAV files by
the ``sndfile`` module (baresip 1.0's ``aufile`` has no player; ``auplay aubridge`` to a
device nobody reads stands in for a loudspeaker). It is driven over ``ctrl_tcp``
(netstring JSON commands: ``dial``, ``sndcode`` for DTMF, ``hangup``) and reports its
call events on the same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.testkit.gwproc import free_port

MODULES = "/usr/lib/baresip/modules"


def write_tone(path: Path, freq: float, seconds: float, rate: int = 8000) -> Path:
    """A mono 16-bit WAV of a sine at ``freq``."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(0.4 * 32767 * math.sin(2 * math.pi * freq * i / rate)))
                for i in range(int(rate * seconds))
            )
        )
    return path


@dataclass
class Baresip:
    """One baresip process (one telephone)."""

    workdir: Path
    source_wav: Path
    codecs: str = "PCMA"
    auto_answer: bool = False
    sip_trace: bool = False  # log every SIP message (baresip -s) into baresip.log
    sip_port: int = field(default_factory=free_port)
    ctrl_port: int = field(default_factory=free_port)
    user: str = "+4930123456734"
    proc: subprocess.Popen[bytes] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _pump: asyncio.Task[None] | None = None

    @property
    def recordings(self) -> Path:
        return self.workdir / "rec"

    def _configure(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        modules = ["g711.so", "g722.so", "aufile.so", "aubridge.so", "sndfile.so"]
        config = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            f"audio_source aufile,{self.source_wav}",
            "audio_player aubridge,nobody",
            "audio_alert aubridge,nobody",
            "audio_level no",
            f"module_path {MODULES}",
            *(f"module {m}" for m in modules),
            "module_app account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            f"snd_path {self.recordings}",
            "rtp_timeout 0",
            "net_interface 127.0.0.1",
            "dns_server 127.0.0.1:53",
        ]
        (self.workdir / "config").write_text("\n".join(config) + "\n")
        params = [f"audio_codecs={self.codecs}", "regint=0"]
        if self.auto_answer:
            params.append("answermode=auto")
        account = f"<sip:{self.user}@127.0.0.1:{self.sip_port}>;" + ";".join(params)
        (self.workdir / "accounts").write_text(account + "\n")
        (self.workdir / "contacts").write_text("")

    async def start(self) -> Baresip:
        self._configure()
        self.proc = subprocess.Popen(
            ["baresip", "-f", str(self.workdir), *(["-s"] if self.sip_trace else [])],
            stdin=subprocess.DEVNULL,
            stdout=open(self.workdir / "baresip.log", "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        for _ in range(100):
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    "127.0.0.1", self.ctrl_port
                )
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("baresip's ctrl_tcp never listened: " + self.log())
        self._pump = asyncio.get_running_loop().create_task(self._read_events())
        return self

    def log(self) -> str:
        path = self.workdir / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def _read_events(self) -> None:
        reader = self._reader
        assert reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ValueError):
            while True:
                length = int((await reader.readuntil(b":"))[:-1])
                data = await reader.readexactly(length)
                await reader.readexactly(1)  # the netstring's ","
                self.events.append(json.loads(data))

    async def command(self, command: str, params: str = "") -> None:
        assert self._writer is not None
        body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()

    async def wait_event(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.events:
                if event.get("type") == kind:
                    return event
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"baresip never reported {kind}: {self.events}")
            await asyncio.sleep(0.05)

    async def dial(self, uri: str) -> None:
        await self.command("dial", uri)

    async def send_digits(self, digits: str, gap: float = 0.25) -> None:
        """Key presses during the call (RFC 4733 events: baresip 1.0 has no SIP INFO DTMF,
        SIPp sends those in tests/test_phone_sipp.py), one
        at a time as a person types: baresip merges a repeated digit sent in one
        ``sndcode`` (``33`` becomes one event)."""
        for digit in digits:
            await self.command("sndcode", digit)
            await asyncio.sleep(gap)

    async def hangup(self) -> None:
        await self.command("hangup")

    def received_wavs(self) -> list[Path]:
        """What baresip heard (``sndfile`` writes ``dump-…-dec.wav`` per call)."""
        return sorted(self.recordings.glob("*dec*.wav"))

    async def stop(self, *, kill: bool = False) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
