"""Phone legs under load (docs/phone.md): ``.venv/bin/python -m bench.phone --legs 50``.

N consultations, each with a Flash-like advisor (ffmpeg publishing Speex in real time,
``-c copy``) and a telephone leg from SIPp: INVITE with PCMA, the consultation's code as
SIP INFO digits (one CSV line per call), A-law RTP looped by SIPp's ``rtp_stream``,
held while the gateway's CPU is measured, then BYE. Per leg the gateway receives and
publishes G.711, transcodes the advisor's Speex to A-law in the pool and paces RTP back.

Yardstick, same run: the ffmpeg CLI decoding the same Speex and encoding A-law for the
same media time per leg (``-f null``), its CPU from ``getrusage``. Reported: legs
joined, gateway CPU seconds per leg-second against ffmpeg's, and the gateway's own added
latency p95 (gateway/latency.py, ``rtmp_to_phone``) from ``/api/ops/snapshot``.

What it does not measure (yet): Opus both ways (an aiortc advisor per leg would cost
the shared two cores more than the gateway does), and the time from the last digit to
the advisor's voice (``tests/test_phone_dialin.py`` measures that on baresip's
recording). The machine is shared: read the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bridge import thread_split
from bench.procstat import cpu_delta, cpu_sample
from bench.testkit.gwproc import GatewayProcess, free_port
from bench.testkit.media import ffmpeg_publish, make_flv
from bench.testkit.sipp import ACK, BYE, INFO, INVITE, _send, wait_for_sip


def scenario(digits: int, hold_ms: int, rtp_file: Path) -> str:
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="phone legs">\n',
        _send(INVITE.format(caller="+4930[call_number]"), retrans=True),
        '<recv response="100" optional="true"/>\n<recv response="200" rtd="true"/>\n',
        _send(ACK),
        f'<nop><action><exec rtp_stream="{rtp_file},-1,8"/></action></nop>\n',
        '<pause milliseconds="500"/>\n',
    ]
    for n in range(digits):
        parts.append(_send(INFO.format(cseq=2 + n, digit=f"[field{n}]")))
        parts.append('<recv response="200"/>\n<pause milliseconds="50"/>\n')
    parts.append(f'<pause milliseconds="{hold_ms}"/>\n')
    parts.append(_send(BYE.format(cseq=2 + digits), retrans=True))
    parts.append('<recv response="200"/>\n</scenario>\n')
    return "".join(parts)


def yardstick(flv: Path, seconds: float, work: Path) -> float:
    """ffmpeg's CPU seconds to decode ``seconds`` of the Speex and encode A-law."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-stream_loop",
            "-1",
            "-i",
            str(flv),
            "-t",
            str(seconds),
            "-vn",
            "-c:a",
            "pcm_alaw",
            "-ar",
            "8000",
            "-ac",
            "1",
            "-f",
            "null",
            "-",
        ],
        check=True,
        cwd=work,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, default=50)
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    args = parser.parse_args(argv)
    legs, window = args.legs, args.window
    work = Path(tempfile.mkdtemp(prefix="bench-phone-"))
    sip_port = free_port()
    gw = GatewayProcess(
        work / "gw",
        extra=[
            "--sip-port",
            str(sip_port),
            "--sip-allow",
            "127.0.0.1/32",
            "--limit",
            "phone_wrong_global=100000",
            "--limit",
            "phone_rtp_timeout=20",
        ],
    )
    gw.start(timeout=90)
    wait_for_sip(gw, 90)
    flv = make_flv(work / "advisor.flv", "spark_speex", seconds=10)
    rtp = work / "tone.alaw"
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-e",
            "a-law",
            "-t",
            "raw",
            str(rtp),
            "synth",
            "3",
            "sine",
            "440",
        ],
        check=True,
    )
    sessions = [gw.create_session() for _ in range(legs)]
    publishers = [
        # audio only: the RTMP ingest of a camera is not the phone leg's cost
        ffmpeg_publish(flv, s["advisor"]["rtmp"]["publish_url"], "-vn", loop=True)
        for s in sessions
    ]
    codes = [s["customer"]["phone"]["code"] for s in sessions]
    (work / "codes.csv").write_text("SEQUENTIAL\n" + "".join(";".join(c) + "\n" for c in codes))
    # held through the joining (SIPp starts 10 calls a second; each hears the greeting
    # and sends its code), the measured window and the counting after it
    hold_ms = int((window + 40 + legs * 0.6) * 1000)
    (work / "legs.xml").write_text(scenario(len(codes[0]), hold_ms, rtp))
    sipp = subprocess.Popen(
        [
            "sipp",
            f"127.0.0.1:{sip_port}",
            "-sf",
            str(work / "legs.xml"),
            "-inf",
            str(work / "codes.csv"),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-mp",
            str(free_port() & ~1),
            "-m",
            str(legs),
            "-l",
            str(legs),
            "-r",
            "10",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(work / "s.csv"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=work,
    )
    sipp_started = time.monotonic()
    result: dict[str, object] = {"legs": legs, "window_s": window}
    try:
        deadline = time.monotonic() + 30 + legs
        joined = 0
        while time.monotonic() < deadline:
            joined = sum(1 for s in sessions if gw.get(f"/api/sessions/{s['id']}")["phone"])
            if joined == legs:
                break
            time.sleep(1.0)
        result["joined"] = joined
        result["join_s"] = round(time.monotonic() - sipp_started, 1)
        assert gw.proc is not None
        since = gw.get("/api/ops/snapshot")["latency"]["clock"]
        start = cpu_sample(gw.proc.pid, time.monotonic())
        main0 = thread_split(gw.proc.pid).get(gw.proc.pid, 0.0)
        time.sleep(window)
        end = cpu_sample(gw.proc.pid, time.monotonic())
        result["main_thread_percent_of_core"] = round(
            100 * (thread_split(gw.proc.pid).get(gw.proc.pid, 0.0) - main0) / window, 1
        )
        still = sum(1 for s in sessions if gw.get(f"/api/sessions/{s['id']}")["phone"])
        result["still_joined"] = still
        gateway_cpu = cpu_delta(start, end)
        latency = gw.get(f"/api/ops/snapshot?since={since}")["latency"]
        result["latency_to_phone"] = {
            k: v for k, v in latency.get("added", {}).items() if "phone" in k
        }
    finally:
        sipp.wait(timeout=hold_ms / 1000 + 120)
        for p in publishers:
            p.kill()
            p.wait()
    ffmpeg_cpu = yardstick(flv, window * max(1, joined), work)
    per_leg = gateway_cpu / window / max(1, joined)
    per_leg_ffmpeg = ffmpeg_cpu / window / max(1, joined)
    result.update(
        gateway_cpu_s=round(gateway_cpu, 2),
        ffmpeg_cpu_s=round(ffmpeg_cpu, 2),
        gateway_cpu_per_leg=round(per_leg, 4),
        ffmpeg_cpu_per_leg=round(per_leg_ffmpeg, 4),
        ratio=round(per_leg / per_leg_ffmpeg, 2) if per_leg_ffmpeg else None,
        sipp_stats=(work / "s.csv").read_text().splitlines()[-1:]
        if (work / "s.csv").exists()
        else [],
    )
    gw.stop()
    print(json.dumps(result, indent=2))
    return 0 if result.get("still_joined") == legs else 1


if __name__ == "__main__":
    sys.exit(main())
