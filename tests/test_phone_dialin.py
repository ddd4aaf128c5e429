"""Dial-in with real peers: Debian's baresip is the customer's telephone (440 Hz from a WAV
as its microphone, what it hears recorded by its ``sndfile`` module), an aiortc advisor
publishes 880 Hz and listens. Frequencies are measured with an FFT on both sides."""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bench.testkit import webrtc_client as wc
from bench.testkit.baresip import Baresip, write_tone
from bench.testkit.gwproc import GatewayProcess, free_port
from bench.testkit.sipp import wait_for_sip
from tests.conftest import require_tool

pytestmark = pytest.mark.e2e


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """The frequency of the strongest bin of a Hann-windowed FFT."""
    samples = samples.astype(np.float64)
    samples -= samples.mean()
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def is_tone(samples: np.ndarray, rate: int, freq: float) -> bool:
    """Whether ``samples`` are a pure tone of ``freq``: most of the energy within 40 Hz
    of it (speech, with its harmonics, never is)."""
    samples = samples.astype(np.float64) - samples.mean()
    power = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / rate)
    total = power.sum()
    return bool(total > 0 and power[np.abs(bins - freq) < 40].sum() / total > 0.8)


def frames_to_mono(frames: list[Any]) -> tuple[np.ndarray, int]:
    """aiortc's decoded frames (s16, interleaved) → mono samples."""
    chunks = []
    for frame in frames:
        data = np.frombuffer(bytes(frame.planes[0]), dtype="<i2")
        channels = len(frame.layout.channels)
        data = data[: frame.samples * channels].reshape(-1, channels).mean(axis=1)
        chunks.append(data)
    return np.concatenate(chunks), frames[0].sample_rate


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        raw = wav.readframes(wav.getnframes())
        return np.frombuffer(raw, dtype="<i2").astype(np.float64), wav.getframerate()


@pytest.fixture
def sip_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    require_tool("baresip")
    sip_port = free_port()
    gw = GatewayProcess(
        tmp_path / "gw",
        extra=[
            "--sip-port",
            str(sip_port),
            "--sip-allow",
            "127.0.0.1/32",
            "--phone-number",
            "+49 30 1234 5678",
            "--limit",
            "phone_rtp_timeout=3",
        ],
    )
    gw.sip_port = sip_port  # type: ignore[attr-defined]
    gw.start(timeout=60)
    wait_for_sip(gw, 60)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
async def phone(tmp_path: Path) -> AsyncIterator[Baresip]:
    workdir = tmp_path / "baresip"
    workdir.mkdir()
    bs = Baresip(workdir, write_tone(workdir / "tone440.wav", 440.0, 60.0))
    await bs.start()
    try:
        yield bs
    finally:
        await bs.stop()


def session_state(gw: GatewayProcess, sid: str) -> dict[str, Any]:
    return gw.get(f"/api/sessions/{sid}")  # type: ignore[no-any-return]


async def wait_state(
    gw: GatewayProcess, sid: str, predicate: Any, what: str, timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = await asyncio.to_thread(session_state, gw, sid)
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {state}")
        await asyncio.sleep(0.1)


async def test_phone_customer_and_webrtc_advisor_hear_each_other(
    sip_gateway: GatewayProcess, phone: Baresip
) -> None:
    gw = sip_gateway
    session = gw.create_session()
    sid = session["id"]
    code = session["customer"]["phone"]["code"]
    assert len(code) >= 8 and code.isdigit()
    assert session["customer"]["phone"]["number"] == "+49 30 1234 5678"
    async with aiohttp.ClientSession() as http:
        adv = session["advisor"]
        pub, status, _, body = await wc.publisher(
            wc.http_poster(http, adv["whip_url"], adv["token"]), audio_freq=880.0
        )
        assert status == 201, body
        ws = await http.ws_connect(adv["events_url"])
        listener, received, status, _, body = await wc.player(
            wc.http_poster(http, adv["whep_url"], adv["token"])
        )
        assert status == 201, body
        try:
            await phone.dial(f"sip:dialin@127.0.0.1:{gw.sip_port}")  # type: ignore[attr-defined]
            await phone.wait_event("CALL_ESTABLISHED")
            await asyncio.sleep(1.0)  # the caller listens to the welcome a moment
            await phone.send_digits(code)
            state = await wait_state(gw, sid, lambda s: s["phone"] is not None, "the phone joined")
            assert state["phone"]["number"] == "+49 … 34"
            assert state["phone"]["codec"] == "alaw"
            # the advisor's page learns it over the events socket
            event = await _next_event(ws, "phone")
            assert event == {
                "type": "phone",
                "active": True,
                "number": "+49 … 34",
                "since": event["since"],
                "codec": "alaw",
            }
            joined_frames = len(received.audio)
            await wc.wait_for(
                lambda: len(received.audio) - joined_frames >= 150, 20, "3 s of the phone's audio"
            )
            heard, rate = frames_to_mono(received.audio[-100:])  # the last 2 s
            assert abs(dominant_frequency(heard, rate) - 440) < 10, "the advisor hears 440 Hz"
            await asyncio.sleep(1.0)
            await phone.hangup()
            await wait_state(gw, sid, lambda s: s["phone"] is None, "the phone left")
            event = await _next_event(ws, "phone")
            assert event == {"type": "phone", "active": False, "outcome": "hangup"}
        finally:
            await ws.close()
            await wc.close_all(pub, listener, received=received)
    await phone.wait_event("CALL_CLOSED")
    (recording,) = phone.received_wavs()
    samples, rate = await asyncio.to_thread(read_wav, recording)
    tail = samples[-rate:]  # the last second the phone heard: the advisor
    assert abs(dominant_frequency(tail, rate) - 880) < 10, "the phone hears the advisor's 880 Hz"
    assert np.abs(tail).max() > 2000, "and loud enough, not a trace"
    # Time from the last digit to hearing the advisor, on the phone's own recording: the
    # gateway starts its join chime (660 Hz, then 990 Hz) the moment the last digit
    # arrives, so the delay is from the chime's first 20 ms to the first 20 ms of 880 Hz.
    window = rate // 50
    onsets = [
        i
        for i in range(0, len(samples) - 4 * window, window)
        if np.abs(samples[i : i + window]).max() > 2000
    ]
    chime = next(i for i in onsets if is_tone(samples[i : i + 4 * window], rate, 660))
    voice = next(i for i in onsets if i > chime and is_tone(samples[i : i + 4 * window], rate, 880))
    delay = (voice - chime) / rate
    print(f"last digit (chime) to the advisor's voice on the phone: {delay * 1000:.0f} ms")
    assert delay < 1.0, f"{delay:.2f} s from the last digit to hearing the advisor"
    access = gw.access_log()
    assert '+49 … 34 "PHONE IN" hangup' in access
    assert "4930123456734" not in gw.log(), "the caller's number is never logged in full"


async def _next_event(
    ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"events socket: {msg}")
        event = json.loads(msg.data)
        if event.get("type") == kind:
            return event  # type: ignore[no-any-return]


async def _join_by_phone(gw: GatewayProcess, phone: Baresip) -> dict[str, Any]:
    session = gw.create_session()
    await phone.dial(f"sip:dialin@127.0.0.1:{gw.sip_port}")  # type: ignore[attr-defined]
    await phone.wait_event("CALL_ESTABLISHED")
    await phone.send_digits(session["customer"]["phone"]["code"])
    await wait_state(gw, session["id"], lambda s: s["phone"] is not None, "the phone joined")
    return session


async def test_a_phone_gone_without_bye_is_ended_by_the_rtp_timeout(
    sip_gateway: GatewayProcess, phone: Baresip
) -> None:
    gw = sip_gateway
    session = await _join_by_phone(gw, phone)
    await phone.stop(kill=True)  # the PBX vanished: no BYE, no more RTP
    state = await wait_state(gw, session["id"], lambda s: s["phone"] is None, "the timeout", 10)
    assert state["participants"]["customer"]["present"] is False
    await wc.wait_for(lambda: '"PHONE IN" timeout' in gw.access_log(), 5, "the access log line")


async def test_the_consultation_ending_hangs_up_the_phone(
    sip_gateway: GatewayProcess, phone: Baresip
) -> None:
    gw = sip_gateway
    session = await _join_by_phone(gw, phone)
    status, _, body = await asyncio.to_thread(
        gw.request, "DELETE", f"/api/sessions/{session['id']}"
    )
    assert status in (200, 204), body
    # the caller hears "Die Beratung ist beendet …", then the gateway sends BYE
    await phone.wait_event("CALL_CLOSED", timeout=15)
    await wc.wait_for(lambda: '"PHONE IN" ended' in gw.access_log(), 5, "the access log line")


async def test_wrong_codes_three_times_then_goodbye(
    sip_gateway: GatewayProcess, phone: Baresip
) -> None:
    gw = sip_gateway
    session = gw.create_session()
    wrong = "1" + session["customer"]["phone"]["code"][1:]
    if wrong == session["customer"]["phone"]["code"]:
        wrong = "2" + wrong[1:]
    await phone.dial(f"sip:dialin@127.0.0.1:{gw.sip_port}")  # type: ignore[attr-defined]
    await phone.wait_event("CALL_ESTABLISHED")
    for _ in range(3):
        await phone.send_digits(wrong[:4] + "#", gap=0.15)
    await phone.wait_event("CALL_CLOSED", timeout=20)  # goodbye prompt, then BYE
    await wc.wait_for(lambda: '"PHONE IN" wrong-code' in gw.access_log(), 5, "the access log line")
    assert (await asyncio.to_thread(session_state, gw, session["id"]))["phone"] is None
