"""Configuration precedence (flags > VB_* > TOML > defaults) and the CLI's lifecycle."""

from __future__ import annotations

import argparse
import dataclasses
import signal
from pathlib import Path

import pytest

from bench.testkit.gwproc import GatewayProcess
from gateway import config as config_mod
from gateway.main import build_parser


def _load(argv: list[str], env: dict[str, str] | None = None) -> config_mod.Config:
    args = build_parser().parse_args(["serve", *argv])
    return config_mod.load(args, env or {})


def test_defaults_serve_on_loopback_with_local_state() -> None:
    cfg = _load([])
    assert (cfg.host, cfg.http_port, cfg.rtmp_port, cfg.rtmps_port) == (
        "127.0.0.1",
        8080,
        1935,
        1936,
    )
    assert cfg.data_dir == Path("var")
    assert cfg.stun == [] and cfg.turn == []  # never a third-party default
    assert cfg.access_log_days == 7
    assert cfg.effective_ice_hosts() == ["127.0.0.1"]


def test_toml_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text(
        'http_port = 9000\nrtmp_port = 9935\nice_host = ["10.0.0.1"]\n'
        "[limits]\nidle_timeout = 5.5\n",
        encoding="utf-8",
    )
    cfg = _load(["--config", str(toml)])
    assert (cfg.http_port, cfg.rtmp_port, cfg.ice_host) == (9000, 9935, ["10.0.0.1"])
    assert cfg.limits.idle_timeout == 5.5
    env = {"VB_HTTP_PORT": "9100", "VB_ICE_HOST": "10.0.0.2,10.0.0.3"}
    cfg = _load(["--config", str(toml)], env)
    assert cfg.http_port == 9100 and cfg.rtmp_port == 9935
    assert cfg.ice_host == ["10.0.0.2", "10.0.0.3"]
    cfg = _load(
        ["--config", str(toml), "--http-port", "9200", "--limit", "idle_timeout=7"],
        {"VB_HTTP_PORT": "9100"},
    )
    assert cfg.http_port == 9200 and cfg.limits.idle_timeout == 7.0


def test_unknown_settings_and_half_tls_are_errors(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("htp_port = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="htp_port"):
        _load(["--config", str(toml)])
    with pytest.raises(ValueError, match="unknown limit"):
        _load(["--limit", "nonsense=1"])
    with pytest.raises(ValueError, match="go together"):
        _load(["--tls-cert", "c.pem"])
    with pytest.raises(ValueError, match="IP address"):
        _load(["--ice-host", "my-laptop"])
    with pytest.raises(ValueError, match="stun:"):
        _load(["--stun", "stun.l.google.com:19302"])
    assert _load(["--turn", "turn:turn.bank.example:3478?transport=udp"]).turn


def test_rtp_receive_flags(tmp_path: Path) -> None:
    """The WebRTC receive side (docs/webrtc.md): reorder-only with forwarding by default,
    a reorder window of at most 20 ms; wrong values are refused at start-up."""
    cfg = _load([])
    assert (cfg.rtp_receive, cfg.rtp_reorder_ms, cfg.rtp_video_wait_ms) == ("forward", 20.0, 100.0)
    cfg = _load(
        ["--rtp-receive", "aiortc", "--rtp-reorder-ms", "5"], {"VB_RTP_VIDEO_WAIT_MS": "50"}
    )
    assert (cfg.rtp_receive, cfg.rtp_reorder_ms, cfg.rtp_video_wait_ms) == ("aiortc", 5.0, 50.0)
    with pytest.raises(ValueError, match="--rtp-receive must be one of forward, reorder, aiortc"):
        _load(["--rtp-receive", "jitter"])
    with pytest.raises(ValueError, match="--rtp-reorder-ms must be between 0 and 1000"):
        _load(["--rtp-reorder-ms", "-1"])
    with pytest.raises(ValueError, match="--rtp-video-wait-ms"):
        _load(["--rtp-video-wait-ms", "5000"])


def test_sip_register_flag() -> None:
    """--sip-register sip:EXT@PBX[:PORT] (docs/phone.md), the password from the
    environment; a malformed value or one without --sip-port is refused at start-up."""
    sip = ["--sip-port", "5062", "--sip-allow", "192.0.2.1"]
    cfg = _load([*sip, "--sip-register", "sip:4711@pbx.bank.test"], {"VB_SIP_PASSWORD": "s3"})
    assert (cfg.sip_register, cfg.sip_password) == ("sip:4711@pbx.bank.test", "s3")
    reg = config_mod.sip_registration
    assert reg("sip:4711@pbx.bank.test") == (
        "sip:4711@pbx.bank.test",
        "4711",
        ("pbx.bank.test", 5060),
    )
    assert reg("sip:4711@192.0.2.7:5080") == ("sip:4711@192.0.2.7", "4711", ("192.0.2.7", 5080))
    assert reg("sip:4711@[2001:db8::7]")[2] == ("2001:db8::7", 5060)
    assert reg("sip:4711@[2001:db8::7]:5070")[2] == ("2001:db8::7", 5070)
    for bad in ("4711@pbx", "sip:pbx.bank.test", "sip:@pbx", "sip:4711@", "sip:4711@pbx:x"):
        with pytest.raises(ValueError, match="--sip-register"):
            _load([*sip, "--sip-register", bad])
    with pytest.raises(ValueError, match="--sip-register needs --sip-port"):
        _load(["--sip-register", "sip:4711@pbx.bank.test"])


def test_repeatable_ice_host_flag() -> None:
    cfg = _load(["--ice-host", "127.0.0.1", "--ice-host", "::1"])
    assert cfg.ice_host == ["127.0.0.1", "::1"]
    assert _load(["--host", "0.0.0.0"]).effective_ice_hosts() == []


def test_urls_use_public_url_when_set() -> None:
    cfg = _load(["--public-url", "https://beratung.example.de/"])
    assert cfg.base_url() == "https://beratung.example.de"
    assert cfg.rtmp_base() == "rtmp://beratung.example.de:1935"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_sessions_and_exits_zero(tmp_path: Path, sig: int) -> None:
    gw = GatewayProcess(tmp_path).start()
    session = gw.create_session()
    assert gw.stop(sig) == 0, gw.log()
    assert "shutting down" in gw.log()
    assert session["customer"]["token"] not in gw.log()


def test_banner_prints_one_time_login(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        log = gw.log()
        assert "One-time advisor login: http://127.0.0.1:" in log
        assert "/login?token=" in log
    finally:
        gw.stop()


def test_help_lists_every_interface_flag() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "serve"
    ]
    text = sub.format_help()
    for flag in (
        "--host",
        "--http-port",
        "--rtmp-port",
        "--data-dir",
        "--advisor-token",
        "--tls-cert",
        "--tls-key",
        "--rtmps-port",
        "--ice-host",
        "--stun",
        "--turn",
        "--access-log-days",
        "--config",
    ):
        assert flag in text


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_serves_rtmp_on_either_event_loop(tmp_path: Path, loop: str) -> None:
    from rtmp.client import RtmpClient

    gw = GatewayProcess(tmp_path, extra=["--event-loop", loop]).start()
    try:
        session = gw.create_session()
        client = await RtmpClient.open("127.0.0.1", gw.rtmp_port)
        result = await client.connect(
            "consult", session["customer"]["rtmp"]["connect_url"], session["customer"]["token"]
        )
        assert not result.error
        await client.close()
    finally:
        assert gw.stop() == 0, gw.log()
    with pytest.raises(ValueError, match="event-loop"):
        _load(["--event-loop", "tokio"])


def test_every_limit_is_documented() -> None:
    """docs/operations.md lists every protection limit with its default (issue 11):
    a new field of ``Limits`` needs its row there."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    rows = {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")}
    fields = {f.name for f in dataclasses.fields(config_mod.Limits)}
    assert fields - rows == set(), "limits missing from docs/operations.md"
