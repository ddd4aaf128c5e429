"""SIPp (Debian ``sip-tester``) scenarios for the telephone leg, written out per test.

The scenarios are generated (the digits of a code become one INFO each; a list of
hostile messages becomes one ``<send>`` each), run with ``sipp`` against the gateway's SIP
port and judged by SIPp's exit code and statistics (``-trace_stat``/``-trace_err``).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from bench.testkit.gwproc import GatewayProcess, free_port

SDP = """v=0
o=- 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [rtpstream_audio_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
"""

INVITE = (
    """INVITE sip:dialin@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Kunde" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:dialin@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:kunde@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

"""
    + SDP
)

ACK = """ACK sip:dialin@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:kunde@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

"""

INFO = """INFO sip:dialin@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} INFO
Contact: <sip:kunde@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/dtmf-relay
Content-Length: [len]

Signal={digit}
Duration=160
"""

BYE = """BYE sip:dialin@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} BYE
Contact: <sip:kunde@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

"""

OK_TO_BYE = """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

"""


def _send(text: str, retrans: bool = False) -> str:
    attr = ' retrans="500"' if retrans else ""
    return f"<send{attr}><![CDATA[\n{text}]]></send>\n"


def dial_in_with_info(
    codes: list[str],
    *,
    caller: str = "+4930123456799",
    rtp_file: Path | None = None,
    hold_ms: int = 0,
    expect_bye: bool = False,
) -> str:
    """One call: INVITE, ACK, RTP from ``rtp_file`` (A-law, looped), each code as SIP INFO
    digits (``#`` after each), then either wait ``hold_ms`` and hang up, or wait for the
    gateway's BYE (``expect_bye``: after the last wrong code)."""
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="dial-in, code by INFO">\n',
        _send(INVITE.format(caller=escape(caller)), retrans=True),
        '<recv response="100" optional="true"/>\n<recv response="200" rtd="true"/>\n',
        _send(ACK),
    ]
    if rtp_file is not None:
        parts.append(f'<nop><action><exec rtp_stream="{rtp_file},-1,8"/></action></nop>\n')
    parts.append('<pause milliseconds="300"/>\n')
    cseq = 2
    for code in codes:
        for digit in [*code, "#"]:
            parts.append(_send(INFO.format(cseq=cseq, digit=digit)))
            parts.append('<recv response="200"/>\n<pause milliseconds="60"/>\n')
            cseq += 1
        parts.append('<pause milliseconds="400"/>\n')
    if expect_bye:
        parts.append('<recv request="BYE" timeout="20000"/>\n')
        parts.append(_send(OK_TO_BYE))
    else:
        parts.append(f'<pause milliseconds="{hold_ms}"/>\n')
        parts.append(_send(BYE.format(cseq=cseq), retrans=True))
        parts.append('<recv response="200"/>\n')
    parts.append("</scenario>\n")
    return "".join(parts)


def declined_invite(caller: str = "+4930123456799", status: int = 603) -> str:
    """One INVITE expected to be refused with ``status`` (then ACKed, RFC 3261 17.1.1.3)."""
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="declined">\n'
        + _send(INVITE.format(caller=escape(caller)), retrans=True)
        + f'<recv response="100" optional="true"/>\n<recv response="{status}"/>\n'
        + _send(ACK)
        + "</scenario>\n"
    )


def scanner_invite() -> str:
    """What a scanner sends: one INVITE. The call succeeds on a 403 and fails on silence
    (past the refusal budget), so SIPp's counts say how many were answered."""
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="scanner">\n'
        + _send(INVITE.format(caller="100"))
        + '<recv response="403" timeout="500"/>\n'
        + "</scenario>\n"
    )


def torture(messages: list[str], *, probe: bool = True) -> str:
    """Each hostile message sent once (answers ignored), then an honest OPTIONS that must
    get its 200: the server is still there."""
    parts = ['<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="torture">\n']
    for message in messages:
        parts.append(_send(message))
        parts.append('<pause milliseconds="50"/>\n')
    if probe:
        parts.append(
            _send(
                """OPTIONS sip:dialin@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:probe@[local_ip]:[local_port]>;tag=[pid]probe
To: <sip:dialin@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

""",
                retrans=True,
            )
        )
        parts.append('<recv response="200" timeout="5000"/>\n')
    parts.append("</scenario>\n")
    return "".join(parts)


@dataclass
class SippRun:
    returncode: int
    output: str
    stats: str


def run_sipp(
    workdir: Path,
    scenario: str,
    target: str,
    *,
    local_ip: str = "127.0.0.1",
    calls: int = 1,
    rate: float = 1.0,
    concurrent: int | None = None,
    timeout: float = 60.0,
    name: str = "scenario",
) -> SippRun:
    """Run ``scenario`` (XML text) against ``target`` (``host:port``) and wait for it."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.xml"
    path.write_text(scenario)
    cmd = [
        "sipp",
        target,
        "-sf",
        str(path),
        "-i",
        local_ip,
        "-mi",
        local_ip,
        "-p",
        str(free_port()),
        "-mp",
        str(free_port() & ~1),
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(workdir / f"{name}.stat.csv"),
        "-trace_err",
        "-error_file",
        str(workdir / f"{name}.err.log"),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
    ]
    if concurrent is not None:
        cmd += ["-l", str(concurrent)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, cwd=workdir)
    stat_path = workdir / f"{name}.stat.csv"
    err_path = workdir / f"{name}.err.log"
    stats = stat_path.read_text() if stat_path.exists() else ""
    errors = err_path.read_text(errors="replace") if err_path.exists() else ""
    return SippRun(
        proc.returncode, proc.stdout[-4000:] + proc.stderr[-4000:] + errors[-4000:], stats
    )


def stat(run: SippRun, column: str) -> int:
    """The last value of a column of SIPp's ``-trace_stat`` CSV (``SuccessfulCall(C)``)."""
    lines = [line for line in run.stats.splitlines() if line.strip()]
    if len(lines) < 2:
        raise AssertionError(f"no SIPp statistics: {run.output}")
    header = lines[0].split(";")
    values = lines[-1].split(";")
    return int(values[header.index(column)])


def wait_for_sip(gw: GatewayProcess, timeout: float = 60.0) -> None:
    """Wait until a started gateway's SIP port listens: it logs "SIP on" once the prompts
    are synthesized (espeak-ng at start-up), some seconds after HTTP answers."""
    deadline = time.monotonic() + timeout
    while "SIP on" not in gw.log():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway's SIP never listened:\n{gw.log()[-2000:]}")
        time.sleep(0.1)
