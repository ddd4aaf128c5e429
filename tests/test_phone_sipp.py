"""SIPp against the telephone leg: the code as SIP INFO, brute-forced codes, hostile and
malformed messages (RFC 4475 style), an INVITE flood from an address outside
``--sip-allow`` (127.0.0.2 plays the scanner, only 127.0.0.1 is allowed), with an honest
call (baresip) unaffected throughout."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bench.testkit.baresip import Baresip, write_tone
from bench.testkit.gwproc import GatewayProcess, free_port
from bench.testkit.sipp import (
    declined_invite,
    dial_in_with_info,
    run_sipp,
    scanner_invite,
    stat,
    torture,
    wait_for_sip,
)
from tests.conftest import require_tool
from tests.test_phone_dialin import _join_by_phone, session_state, wait_state

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sipp_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    require_tool("sipp")
    require_tool("baresip")
    sip_port = free_port()
    gw = GatewayProcess(
        tmp_path_factory.mktemp("sipp-gw"),
        extra=[
            "--sip-port",
            str(sip_port),
            "--sip-allow",
            "127.0.0.1/32",
            "--limit",
            "phone_rtp_timeout=5",
            "--limit",
            "phone_wrong_per_caller=6",
        ],
    )
    gw.sip_port = sip_port  # type: ignore[attr-defined]
    gw.start(timeout=60)
    wait_for_sip(gw, 60)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def alaw_tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw A-law 440 Hz for SIPp's ``rtp_stream`` (looped)."""
    path = tmp_path_factory.mktemp("rtp") / "tone.alaw"
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
            str(path),
            "synth",
            "3",
            "sine",
            "440",
        ],
        check=True,
    )
    return path


@pytest.fixture
async def honest_call(sipp_gateway: GatewayProcess, tmp_path: Path) -> AsyncIterator[dict]:
    """A customer's phone (baresip) joined to a consultation for the whole test."""
    workdir = tmp_path / "honest"
    workdir.mkdir()
    phone = Baresip(workdir, write_tone(workdir / "tone.wav", 440.0, 120.0), user="+4940999888777")
    await phone.start()
    try:
        session = await _join_by_phone(sipp_gateway, phone)
        yield session
    finally:
        await phone.stop()


def target(gw: GatewayProcess) -> str:
    return f"127.0.0.1:{gw.sip_port}"  # type: ignore[attr-defined]


async def _still_joined(gw: GatewayProcess, session: dict) -> None:
    state = await asyncio.to_thread(session_state, gw, session["id"])
    assert state["phone"] is not None, "the honest call is still connected"
    assert state["participants"]["customer"]["present"]


async def test_the_code_as_sip_info_joins(
    sipp_gateway: GatewayProcess, alaw_tone: Path, tmp_path: Path
) -> None:
    gw = sipp_gateway
    session = gw.create_session()
    scenario = dial_in_with_info(
        [session["customer"]["phone"]["code"]], rtp_file=alaw_tone, hold_ms=4000
    )
    run = asyncio.create_task(asyncio.to_thread(run_sipp, tmp_path, scenario, target(gw)))
    state = await wait_state(gw, session["id"], lambda s: s["phone"] is not None, "INFO code", 20)
    assert state["phone"]["number"] == "+49 … 99"
    assert state["streams"]["customer"]["audio_codec"] == "alaw"
    result = await run
    assert result.returncode == 0, result.output
    await wait_state(gw, session["id"], lambda s: s["phone"] is None, "the BYE")


async def test_brute_forced_codes_are_declined(
    sipp_gateway: GatewayProcess, alaw_tone: Path, tmp_path: Path, honest_call: dict
) -> None:
    gw = sipp_gateway
    session = gw.create_session()
    real = session["customer"]["phone"]["code"]
    guesses = [str(int(real) + n) for n in (1, 2, 3)]
    caller = "+4930555000111"
    # two calls of three wrong codes each: each ends with the goodbye and the gateway's BYE
    for n in range(2):
        scenario = dial_in_with_info(guesses, caller=caller, rtp_file=alaw_tone, expect_bye=True)
        result = await asyncio.to_thread(run_sipp, tmp_path / f"call{n}", scenario, target(gw))
        assert result.returncode == 0, result.output
    # six wrong codes from this number: its next call is declined before it is answered
    result = await asyncio.to_thread(
        run_sipp, tmp_path / "declined", declined_invite(caller), target(gw)
    )
    assert result.returncode == 0, result.output
    # even with the right code now: the lock holds for this caller
    scenario = dial_in_with_info([real], caller=caller, rtp_file=alaw_tone, hold_ms=0)
    result = await asyncio.to_thread(run_sipp, tmp_path / "locked", scenario, target(gw))
    assert result.returncode != 0, "a locked caller is not answered"
    assert (await asyncio.to_thread(session_state, gw, session["id"]))["phone"] is None
    await _still_joined(gw, honest_call)
    access = gw.access_log()
    # the first call ran out of tries; the second's last code locked the caller; then the
    # declined INVITE and the locked one with the right code
    assert access.count('+49 … 11 "PHONE IN" wrong-code') == 1
    assert access.count('+49 … 11 "PHONE IN" locked') == 3
    assert "4930555000111" not in gw.log()


HOSTILE = [
    # oversized header (beyond the 16 KiB a datagram may have here)
    "OPTIONS sip:x@[remote_ip] SIP/2.0\nVia: SIP/2.0/UDP [local_ip]:[local_port];branch=z9hG4bK1\n"
    "Call-ID: big1\nCSeq: 1 OPTIONS\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\nX-Big: "
    + "a" * 20000
    + "\nContent-Length: 0\n\n",
    # 300 headers (aiosipua's cap is 256)
    "OPTIONS sip:x@[remote_ip] SIP/2.0\nVia: SIP/2.0/UDP [local_ip]:[local_port];branch=z9hG4bK2\n"
    "Call-ID: many2\nCSeq: 1 OPTIONS\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\n"
    + "".join(f"X-H{i}: v\n" for i in range(300))
    + "Content-Length: 0\n\n",
    # RFC 4475 3.1.2.1-like: Content-Length larger than the body
    "INVITE sip:x@[remote_ip] SIP/2.0\nVia: SIP/2.0/UDP [local_ip]:[local_port];branch=z9hG4bK3\n"
    "Call-ID: clen3\nCSeq: 1 INVITE\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\nMax-Forwards: 70\n"
    "Content-Type: application/sdp\nContent-Length: 9999\n\nv=0\n",
    # no Call-ID, no CSeq (RFC 3261 8.1.1: mandatory)
    "INVITE sip:x@[remote_ip] SIP/2.0\nVia: SIP/2.0/UDP [local_ip]:[local_port];branch=z9hG4bK4\n"
    "From: <sip:a@b>;tag=1\nTo: <sip:x@y>\nContent-Length: 0\n\n",
    # garbage SDP in an INVITE
    "INVITE sip:x@[remote_ip] SIP/2.0\nVia: SIP/2.0/UDP [local_ip]:[local_port];branch=z9hG4bK5\n"
    "Call-ID: sdp5\nCSeq: 1 INVITE\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\nMax-Forwards: 70\n"
    "Content-Type: application/sdp\nContent-Length: 30\n\nm=audio banana RTP/AVP 8 8 8 8\n",
    # an unknown method and a bad version (RFC 4475 3.1.2.16-like)
    "NOTAMETHOD sip:x@[remote_ip] SIP/7.0\n"
    "Via: SIP/2.0/UDP [local_ip]:[local_port];branch=z9hG4bK6\n"
    "Call-ID: meth6\nCSeq: 1 NOTAMETHOD\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\n"
    "Content-Length: 0\n\n",
    # a negative CSeq and a Via without a port
    "OPTIONS sip:x@[remote_ip] SIP/2.0\nVia: SIP/2.0/UDP [local_ip]\n"
    "Call-ID: cseq7\nCSeq: -1 OPTIONS\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\nContent-Length: 0\n\n",
    # an unsolicited response and a BYE/INFO for dialogs that do not exist
    "SIP/2.0 200 OK\nVia: SIP/2.0/UDP [local_ip]:[local_port];branch=z9hG4bK8\nCall-ID: r8\n"
    "CSeq: 1 INVITE\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>;tag=2\nContent-Length: 0\n\n",
    "INFO sip:x@[remote_ip] SIP/2.0\nVia: SIP/2.0/UDP [local_ip]:[local_port];branch=z9hG4bK9\n"
    "Call-ID: nodialog9\nCSeq: 5 INFO\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>;tag=2\n"
    "Content-Type: application/dtmf-relay\nContent-Length: 9\n\nSignal=1\n",
    # binary noise
    "\x01\x02\x03\x04 SIP/2.0 \x7f\x7f\n\n",
]


async def test_hostile_messages_leave_the_server_and_an_honest_call_alone(
    sipp_gateway: GatewayProcess, tmp_path: Path, honest_call: dict
) -> None:
    gw = sipp_gateway
    result = await asyncio.to_thread(run_sipp, tmp_path, torture(HOSTILE), target(gw))
    assert result.returncode == 0, "the OPTIONS after the torture got its 200: " + result.output
    await asyncio.sleep(1.0)
    await _still_joined(gw, honest_call)
    # a dropped INFO for no dialog is told so (481), nothing else leaks
    assert "Traceback" not in gw.log()


async def test_a_scanner_outside_the_allow_list_gets_little_and_nothing_more(
    sipp_gateway: GatewayProcess, tmp_path: Path, honest_call: dict
) -> None:
    gw = sipp_gateway
    # 300 INVITEs at 100/s from 127.0.0.2: at 2 refusals a second (burst 4) the scanner
    # gets a handful of 403s and silence for the rest
    result = await asyncio.to_thread(
        run_sipp,
        tmp_path,
        scanner_invite(),
        target(gw),
        local_ip="127.0.0.2",
        calls=300,
        rate=100,
        concurrent=300,
        timeout=30,
    )
    answered = stat(result, "SuccessfulCall(C)")
    silent = stat(result, "FailedCall(C)")
    assert answered + silent == 300, result.output
    assert 1 <= answered <= 4 + 2 * 5, f"{answered} refusals answered (budget: about 2/s)"
    assert silent >= 250
    await _still_joined(gw, honest_call)
    print(f"scanner: {answered} of 300 INVITEs answered with 403, {silent} met silence")


async def test_a_retransmitted_invite_is_one_call(sipp_gateway: GatewayProcess) -> None:
    """RFC 3261 17.2.1: an INVITE sent again (a lost 200, a slow answer) is the same call:
    one answer, one dialog (one To tag), one leg."""
    import re
    import socket

    gw = sipp_gateway
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    port = sock.getsockname()[1]
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
    )
    invite = (
        f"INVITE sip:dialin@127.0.0.1:{gw.sip_port} SIP/2.0\r\n"  # type: ignore[attr-defined]
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKretrans1\r\n"
        f"From: <sip:+4930777000111@127.0.0.1:{port}>;tag=r1\r\n"
        f"To: <sip:dialin@127.0.0.1:{gw.sip_port}>\r\n"  # type: ignore[attr-defined]
        "Call-ID: retransmitted-invite-1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:x@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()
    tags: set[str] = set()
    loop = asyncio.get_running_loop()
    for _ in range(2):  # the INVITE and a retransmission before the answer, then again
        sock.sendto(invite, ("127.0.0.1", gw.sip_port))  # type: ignore[attr-defined]
        sock.sendto(invite, ("127.0.0.1", gw.sip_port))  # type: ignore[attr-defined]
        deadline = loop.time() + 1.0
        while loop.time() < deadline:
            try:
                data = await asyncio.to_thread(sock.recv, 65535)
            except TimeoutError:
                break
            text = data.decode(errors="replace")
            if text.startswith("SIP/2.0 200"):
                found = re.search(r"^To:.*;tag=([^;\r\n]+)", text, re.MULTILINE)
                assert found, text
                tags.add(found.group(1))
    assert len(tags) == 1, f"one dialog, not {tags}"
    ack = invite.split(b"\r\n\r\n")[0].replace(b"INVITE sip", b"ACK sip", 1)
    ack = ack.replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK").replace(
        b"To: <sip:dialin@", b"To: <sip:dialin@", 1
    )
    ack = re.sub(rb"(To: <[^>]+>)", rb"\1;tag=" + next(iter(tags)).encode(), ack)
    ack = re.sub(rb"Content-Length: \d+", b"Content-Length: 0", ack) + b"\r\n\r\n"
    ack = ack.replace(b"Content-Type: application/sdp\r\n", b"")
    sock.sendto(ack, ("127.0.0.1", gw.sip_port))  # type: ignore[attr-defined]
    sock.close()
    # no RTP comes: the one leg ends by the RTP timeout (5 s here), logged once
    deadline = loop.time() + 15
    while '+49 … 11 "PHONE IN" timeout' not in gw.access_log():
        assert loop.time() < deadline, gw.access_log()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    assert gw.access_log().count('"PHONE IN" timeout') == 1


# -- the gateway as an extension of the PBX (--sip-register), SIPp as the registrar --------


def _registrar_answer(status: str, extra: str = "") -> str:
    """A registrar's response to the REGISTER just received (SIPp keywords)."""
    return f"""  <send><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
{extra}Content-Length: 0

]]></send>
"""


CHALLENGE = 'WWW-Authenticate: Digest realm="pbx.bank.test", nonce="[pid]a1b2c3[call_number]"'
REGISTRAR = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="registrar with digest">\n'
    '  <recv request="REGISTER"/>\n'
    + _registrar_answer("401 Unauthorized", CHALLENGE + ", algorithm=MD5\n")
    + """  <recv request="REGISTER">
    <action>
      <verifyauth assign_to="authvalid" username="4711" password="{password}"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
"""
    + _registrar_answer("403 Forbidden").replace("<send>", '<send next="end">')
    + '  <label id="good"/>\n'
    + _registrar_answer("200 OK", "[last_Contact:];expires=120\n")
    + """  <recv request="REGISTER" timeout="60000">
    <action>
      <ereg regexp="Expires: 0" search_in="msg" check_it="true" assign_to="gone"/>
    </action>
  </recv>
"""
    + _registrar_answer("200 OK")
    + '  <label id="end"/>\n  <Reference variables="gone"/>\n</scenario>\n'
)


@pytest.mark.parametrize("password", ["geheim-4711", "falsch"])
def test_the_gateway_registers_as_an_extension_with_digest_and_unregisters(
    tmp_path: Path, password: str
) -> None:
    """SIPp plays the PBX's registrar: it challenges the REGISTER (401, digest), checks
    the answer with its own digest code (``verifyauth``), grants 120 s; when the gateway
    stops it removes the binding (``Expires: 0``). With the wrong password SIPp answers
    403 and the gateway says so in its log and tries again later, serving on."""
    require_tool("sipp")
    registrar_port = free_port()
    scenario = tmp_path / "registrar.xml"
    scenario.write_text(REGISTRAR.format(password="geheim-4711"))
    sipp = subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(registrar_port),
         "-m", "1", "-nostdin", "-timeout", "90s", "-trace_err",
         "-error_file", str(tmp_path / "err.log")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sip_port = free_port()
    gw = GatewayProcess(
        tmp_path / "gw",
        extra=["--sip-port", str(sip_port), "--sip-allow", "127.0.0.2/32",
               "--sip-register", f"sip:4711@127.0.0.1:{registrar_port}"],
        env={"VB_SIP_PASSWORD": password},
    )  # fmt: skip
    try:
        gw.start(timeout=60)
        wait_for_sip(gw, 60)
        want = "SIP: registered at" if password == "geheim-4711" else "refused (403"
        deadline = time.monotonic() + 20
        while want not in gw.log():
            assert time.monotonic() < deadline, gw.log()[-2000:]
            time.sleep(0.1)
        if password != "geheim-4711":
            # SIPp's digest check failed, so it answered 403 (its scenario's other end)
            assert "next try in 30 s" in gw.log()
            assert gw.get("/healthz") is not None  # and the gateway serves on
        else:
            assert sipp.poll() is None  # the registrar holds the binding until the stop
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.stop()
    # the good password: SIPp saw the binding removed with Expires: 0 when the gateway
    # stopped (its last <recv> checks it); both: SIPp's scenario ran to its end
    errors = tmp_path / "err.log"
    assert sipp.wait(20) == 0, errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
