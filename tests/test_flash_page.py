"""The Flash client (issue 4): the SWF built from Haxe source, the Flash page that embeds
it, ``/crossdomain.xml``; rtmpdump's SWF verification against the SWF the gateway
serves; Ruffle rendering the SWF's UI in headless Chromium.

Ruffle has no RTMP and no camera: here it shows that the SWF's German UI is drawn and
that it tells the customer clearly when no connection can be made. The protocol side is
tested with real RTMP peers (rtmpdump here, ffmpeg and our Flash-like client elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect, sync_playwright

from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import analyse, ffmpeg_publish, make_flv
from gateway.config import Config
from gateway.main import build_app
from gateway.service import Gateway
from rtmp import messages as m
from rtmp.events import CommandReceived, UserControlReceived
from rtmp.messages import ProtocolError
from tests.conftest import require_tool
from tests.test_connection import chunk0, connected, pump
from web import swf

ADVISOR_TOKEN = "static-advisor-token-for-tests"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--no-sandbox",
    "--headless=new",
]
RUFFLE_DIR = Path(__file__).resolve().parent / "node" / "node_modules" / "@ruffle-rs" / "ruffle"
# The key librtmp (and Flash Player) use for the SWF verification hash: the first 30
# bytes of the player key (docs/architecture.md, "Facts the code relies on").
PLAYER_KEY = b"Genuine Adobe Flash Player 001"

Client = TestClient[web.Request, web.Application]
TLS = (Path("cert.pem"), Path("key.pem"))  # only their presence matters to the links


# -- the SWF file ------------------------------------------------------------------------------


@dataclass
class SwfHeader:
    signature: bytes
    version: int
    file_length: int
    width: float  # pixels (the header stores twips)
    height: float
    fps: float
    body: bytes  # everything after the 8-byte header, decompressed


def read_swf(data: bytes) -> SwfHeader:
    """SWF file header (SWF spec 19, chapter 2): signature, version, length of the whole
    uncompressed file, then (zlib-compressed for ``CWS``) a RECT of the frame size, the
    frame rate as 8.8 fixed point and the frame count."""
    signature, version, length = data[:3], data[3], struct.unpack_from("<I", data, 4)[0]
    if signature == b"CWS":
        body = zlib.decompress(data[8:])
    elif signature == b"FWS":
        body = data[8:]
    else:
        raise AssertionError(f"not a SWF file: {signature!r}")
    nbits = body[0] >> 3
    bits = int.from_bytes(body[: (5 + 4 * nbits + 7) // 8], "big")
    total = (5 + 4 * nbits + 7) // 8 * 8
    fields = []
    for i in range(4):
        shift = total - 5 - (i + 1) * nbits
        value = (bits >> shift) & ((1 << nbits) - 1)
        if value & (1 << (nbits - 1)):
            value -= 1 << nbits
        fields.append(value)
    xmin, xmax, ymin, ymax = fields
    rate = struct.unpack_from("<H", body, total // 8)[0]
    return SwfHeader(
        signature, version, length, (xmax - xmin) / 20, (ymax - ymin) / 20, rate / 256, body
    )


def assert_flash_player_11_client(header: SwfHeader) -> None:
    assert header.signature in (b"CWS", b"FWS")
    assert header.version == 13  # -swf-version 11: Flash Player 11.0 writes SWF 13
    assert header.file_length == 8 + len(header.body)
    # 30 fps: the stage redraws the advisor's 30 fps video no faster than its own rate
    assert (header.width, header.height, header.fps) == (800, 560, 30)
    body = header.body
    # the AS3 APIs the client is built on, by name in the ABC constant pool
    for name in (
        b"H264VideoStreamSettings",
        b"setProfileLevel",
        b"setKeyFrameInterval",
        b"getEnhancedMicrophone",
        b"SPEEX",
        b"NELLYMOSER",
        b"navigateToURL",
        b"objectEncoding",
        b"onSessionEvent",
        b"onChat",
        # issue 12: muted devices and the privacy panel, echo cancellation; the upload
        b"muted",
        b"showSettings",
        b"enhancedOptions",
        b"MicrophoneEnhancedOptions",
        b"currentFPS",
        b"NetConnection.Connect.IdleTimeout",
        b"FileReference",
        b"Filedata",
    ):
        assert name in body, name
    # both languages compiled in from web/static/i18n (UTF-8 in the constant pool)
    for text in ("Kamera einschalten", "Beratung verlassen", "Turn camera on"):
        assert text.encode() in body, text


@pytest.mark.e2e  # haxe runs inside web/swf.build (production code, not seen by the scan)
def test_swf_builds_from_its_haxe_source(tmp_path: Path) -> None:
    require_tool("haxe")
    out = swf.build(tmp_path / "videoberatung.swf")
    assert_flash_player_11_client(read_swf(out.read_bytes()))
    # building into another place leaves the shipped copy and its hash alone
    assert swf.shipped_hash() is not None


HAXE_TESTS = Path(__file__).resolve().parent / "haxe"


def test_the_swf_logic_runs_without_a_player() -> None:
    """The client's decisions (web/flash/src/Logic.hx: fallback order and timeouts, the
    muted-device state machine, ticket refresh, camera choice, letterboxing, upload
    errors) under Haxe's own interpreter: tests/haxe/LogicTest.hx. The glue that calls
    Flash APIs (VideoBeratung.hx, Media.hx) cannot run without a player; Ruffle and the
    RTMP tests cover what of it can be seen from outside (docs/flash.md)."""
    haxe = require_tool("haxe")
    result = subprocess.run(
        [
            *(haxe, "--class-path", str(swf.FLASH_SRC / "src")),
            *("--class-path", str(HAXE_TESTS), "--main", "LogicTest", "--interp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks = re.fullmatch(r"ok (\d+)\n", result.stdout)
    assert checks and int(checks[1]) >= 60, result.stdout


def _code(source: str) -> str:
    """Haxe source without comments (what is called, not what is explained)."""
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", source, flags=re.S)


def test_the_swf_opens_links_only_from_the_click_or_key_handler() -> None:
    """Issue 12 item 3: ``navigateToURL`` from a Responder callback is no user event, and
    pop-up blockers drop it. The one call is in ``openLink``, which only a button's
    handler (click, Enter, Space: Ui.Button) calls; no Responder opens anything."""
    code = _code((swf.FLASH_SRC / "src" / "VideoBeratung.hx").read_text())
    assert code.count("Lib.getURL(") == 1 and "navigateToURL" not in code
    body = code[code.index("function openLink(") :]
    body = body[: body.index("\n\t}\n")]
    assert "Lib.getURL(" in body and "Responder" not in body
    callers = [m.start() for m in re.finditer(r"openLink\(", code)]
    assert len(callers) == 2  # the definition and the button's handler
    assert "new Button(label, " in code[callers[0] - 80 : callers[0]]
    # and the state machine decides what media() announces (never a muted device)
    announce = code[code.index("function announceMedia(") :]
    announce = announce[: announce.index("\n\t}\n")]
    assert "cameraGate.announced()" in announce and "micGate.announced()" in announce


def test_shipped_swf_is_built_from_the_current_sources() -> None:
    """``make run`` serves the committed SWF; Haxe output differs per build (a random boot
    class name), so the copy is tied to its sources by their hash, not by its bytes."""
    assert swf.shipped_hash() == swf.source_hash(), (
        "web/static/flash/videoberatung.swf is older than web/flash/ or the swf.* strings: "
        "run `make swf` and commit the SWF with its .sources.sha256"
    )
    assert_flash_player_11_client(read_swf(swf.SWF_PATH.read_bytes()))


def test_the_server_answers_every_call_the_swf_makes() -> None:
    """The SWF's ``nc.call`` names are commands of the ``consult`` application, and the
    callbacks it offers are the ones the server invokes."""
    from rtmp import commands, session

    source = (swf.FLASH_SRC / "src" / "VideoBeratung.hx").read_text()
    calls = set(re.findall(r'nc\.call\("(\w+)"', source))
    listing = re.search(r"for \(command in \[([^]]*)\]", source)
    assert listing is not None
    calls |= set(re.findall(r'"(\w+)"', listing[1]))
    calls |= set(re.findall(r'"(formUrl|documentUrl)"', source))
    assert calls == {"chat", "media", "documents", "forms", "documentUrl", "formUrl", "uploadUrl"}
    body = read_swf(swf.SWF_PATH.read_bytes()).body
    for name in calls:
        assert name in commands.COMMANDS, name
        assert name.encode() in body, name
    server = Path(session.__file__).read_text()
    for callback in ("onChat", "onSessionEvent"):
        assert f'"{callback}"' in server
        assert f"client.{callback} = " in source


def test_source_hash_follows_the_sources_and_only_the_swf_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "flash"
    shutil.copytree(swf.FLASH_SRC, src)
    i18n = tmp_path / "i18n"
    shutil.copytree(swf.I18N_DIR, i18n)
    monkeypatch.setattr(swf, "FLASH_SRC", src)
    monkeypatch.setattr(swf, "I18N_DIR", i18n)
    original = swf.source_hash()
    assert original == swf.source_hash() == swf.shipped_hash()

    de = i18n / "de.json"
    text = de.read_text(encoding="utf-8")

    def edit(key: str, value: str) -> None:
        table = json.loads(text)
        assert key in table
        table[key] = value
        de.write_text(json.dumps(table, ensure_ascii=False, indent=1), encoding="utf-8")

    edit("pin.title", "Ihre Beratung")  # a string of the HTML pages only
    assert swf.source_hash() == original
    edit("swf.camera.turn_on", "Kamera an")
    assert swf.source_hash() != original
    de.write_text(text, encoding="utf-8")
    assert swf.source_hash() == original

    main = src / "src" / "VideoBeratung.hx"
    main.write_text(main.read_text() + "\n// changed\n")
    assert swf.source_hash() != original


# -- the Flash page (in process) ------------------------------------------------------------------


def make_client_app(**config: Any) -> web.Application:
    return build_app(Gateway.from_config(Config(advisor_token=ADVISOR_TOKEN, **config)))


async def new_consultation(client: Client) -> dict[str, Any]:
    resp = await client.post("/api/sessions", headers={"Authorization": f"Bearer {ADVISOR_TOKEN}"})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def path_of(url: str) -> str:
    return urlsplit(url).path


def cookie_pairs(resp: Any) -> list[tuple[str, str, str]]:
    """(name, value, path) of every Set-Cookie header."""
    pairs = []
    for header in resp.headers.getall("Set-Cookie", []):
        first, *attrs = [part.strip() for part in header.split(";")]
        name, _, value = first.partition("=")
        path = next((a.split("=", 1)[1] for a in attrs if a.lower().startswith("path=")), "")
        pairs.append((name, value, path))
    return pairs


def flashvars_of(page: str) -> dict[str, str]:
    values = re.findall(r'<param name="flashvars" value="([^"]*)">', page)
    assert len(values) == 2 and values[0] == values[1]  # the ActiveX and the plugin object
    return dict(parse_qsl(values[0].replace("&amp;", "&"), strict_parsing=True))


async def enter_pin(client: Client, body: dict[str, Any]) -> str:
    """PIN at the Flash page → the cookie header for the Flash and the browser page."""
    flash = path_of(body["customer"]["flash_page_url"])
    origin = {"Origin": f"http://{client.host}:{client.port}"}
    resp = await client.post(
        flash, data={"pin": body["customer"]["pin"]}, headers=origin, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == flash
    cookies = cookie_pairs(resp)
    sid = body["id"]
    token = body["customer"]["token"]
    assert ("vb_customer", token, f"/k/{sid}") in cookies
    assert ("vb_customer", token, f"/flash/{sid}") in cookies
    assert all("HttpOnly" in h for h in resp.headers.getall("Set-Cookie"))
    return f"vb_customer={token}"


async def test_flash_page_asks_for_the_pin_before_it_hands_out_the_token(
    aiohttp_client: Any,
) -> None:
    client: Client = await aiohttp_client(make_client_app())
    body = await new_consultation(client)
    flash = path_of(body["customer"]["flash_page_url"])
    token = body["customer"]["token"]

    resp = await client.get(flash)
    page = await resp.text()
    assert resp.status == 200
    assert f'action="{flash}"' in page and 'name="pin"' in page
    assert token not in page and "<object" not in page

    origin = {"Origin": f"http://{client.host}:{client.port}"}
    # the no-Flash notice (hidden until flash.js finds no player) comes before the PIN
    assert 'id="flash-missing"' in page and page.index('id="flash-missing"') < page.index(
        'id="pin"'
    )
    assert "/static/flash/flash.css" in page and "/static/style.css" not in page
    resp = await client.post(flash, data={"pin": "000000"}, headers=origin)
    assert resp.status == 403 and "Set-Cookie" not in resp.headers
    wrong = await resp.text()
    assert f'action="{flash}"' in wrong and 'id="flash-missing"' in wrong
    # the browser page's PIN form stays as it was: modern stylesheet, no Flash notice
    modern = await (await client.get(f"/k/{body['id']}")).text()
    assert "/static/style.css" in modern and "flash-missing" not in modern

    cookie = await enter_pin(client, body)
    resp = await client.get(flash, headers={"Cookie": cookie})
    page = await resp.text()
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"  # it carries the token
    swf_url = re.search(r'<param name="movie" value="([^"]+)">', page)
    assert swf_url and swf_url.group(1).startswith("/static/flash/videoberatung.swf?v=")
    assert f'data="{swf_url.group(1)}"' in page
    assert 'type="application/x-shockwave-flash"' in page
    assert 'classid="clsid:D27CDB6E-AE6D-11cf-96B8-444553540000"' in page
    assert '<param name="allowScriptAccess" value="never">' in page
    assert "/static/flash.js" in page
    config = Config()
    assert flashvars_of(page) == {
        "token": token,
        "rtmp": f"rtmp://127.0.0.1:{config.rtmp_port}/consult",
        "rtmpt": f"rtmpt://127.0.0.1:{config.http_port}/consult",
        "publish": "customer",
        "play": "advisor",
        "base": f"http://127.0.0.1:{config.http_port}",
        "lang": "de",
    }
    # no Flash: the <object>'s fallback content offers the browser page
    assert f'href="/k/{body["id"]}"' in page and "Beratung im Browser öffnen" in page

    resp = await client.get(flash + "?lang=en", headers={"Cookie": cookie})
    page = await resp.text()
    assert flashvars_of(page)["lang"] == "en"
    assert "Open the consultation in the browser" in page

    # the same cookie opens the browser page (no second PIN)
    resp = await client.get(f"/k/{body['id']}", headers={"Cookie": cookie})
    assert 'id="room"' in await resp.text()

    # the SWF itself, with the classic Flash content type
    resp = await client.get(swf_url.group(1))
    assert resp.status == 200
    assert resp.content_type == "application/x-shockwave-flash"
    assert await resp.read() == swf.SWF_PATH.read_bytes()


async def test_plugins_are_allowed_only_on_the_flash_page(aiohttp_client: Any) -> None:
    client: Client = await aiohttp_client(make_client_app())
    body = await new_consultation(client)
    for path, objects in (
        (path_of(body["customer"]["flash_page_url"]), "object-src 'self'"),
        (path_of(body["customer"]["page_url"]), "object-src 'none'"),
        ("/healthz", "object-src 'none'"),
    ):
        csp = (await client.get(path)).headers["Content-Security-Policy"]
        assert objects in csp, (path, csp)
        assert "default-src 'self'" in csp and "unsafe" not in csp


def test_flash_vars_under_tls_use_native_rtmps_then_rtmpts() -> None:
    config = Config(tls_cert=Path("c"), tls_key=Path("k"), public_url="https://beratung.example.de")
    values = dict(parse_qsl(swf.flash_vars(config, token="T/+", lang="en")))
    assert values["token"] == "T/+"
    # native RTMP over TLS first, then Flash's rtmps:// = RTMPT over HTTPS on the web port
    assert values["rtmp"] == f"rtmps://beratung.example.de:{config.rtmps_port}/consult"
    assert values["rtmpt"] == "rtmps://beratung.example.de/consult"
    assert values["base"] == "https://beratung.example.de"


def test_an_https_page_never_offers_plain_rtmp_to_the_swf() -> None:
    """Issue 12: TLS ended by a proxy in front (``--public-url https://…`` without
    ``--tls-cert``) used to put the token on plain ``rtmp://`` first. Now only the HTTPS
    tunnel is offered; the same when the gateway holds the certificate but native RTMPS
    is off."""
    behind_proxy = Config(public_url="https://beratung.example.de:8443")
    values = dict(parse_qsl(swf.flash_vars(behind_proxy, token="T", lang="de")))
    assert "rtmp" not in values
    assert values["rtmpt"] == "rtmps://beratung.example.de:8443/consult"
    no_native = Config(tls_cert=Path("c"), tls_key=Path("k"), rtmps_port=0)
    values = dict(parse_qsl(swf.flash_vars(no_native, token="T", lang="de")))
    assert "rtmp" not in values and values["rtmpt"].startswith("rtmps://")
    # plain HTTP with plain RTMP switched off (issue 18): the tunnel alone
    values = dict(parse_qsl(swf.flash_vars(Config(rtmp_port=0), token="T", lang="de")))
    assert "rtmp" not in values and values["rtmpt"] == "rtmpt://127.0.0.1:8080/consult"
    assert not any(v.startswith("rtmp://") for v in values.values())


# -- the Flash page against the browsers that ran Flash (doiuse, es-check) -----------------------

NODE_BIN = Path(__file__).resolve().parent / "node" / "node_modules" / ".bin"
STATIC = Path(swf.__file__).resolve().parent / "static"
# browserslist query for the Flash-era browsers (issue 12; docs/flash.md)
FLASH_ERA = "ie 11, firefox 52, chrome 49, safari 9"
# doiuse findings that are false for what the stylesheet uses, each pinned below: IE 11's
# "partial" outline support lacks only outline-offset/auto; the CSS 3 text-decoration
# shorthand is flagged although only the CSS 1 keyword `none` is used.
DOIUSE_IGNORED = ("outline", "mdn-text-decoration-shorthand")


def _node_tool(name: str) -> str:
    tool = NODE_BIN / name
    if not tool.is_file():
        pytest.fail(f"{name} is not installed (make test runs npm ci in tests/node)")
    return str(tool)


async def _flash_page_assets(client: Client) -> tuple[set[str], set[str]]:
    """The stylesheets and scripts the Flash page links, on its PIN form and after it."""
    body = await new_consultation(client)
    flash = path_of(body["customer"]["flash_page_url"])
    pages = [await (await client.get(flash)).text()]
    cookie = await enter_pin(client, body)
    pages.append(await (await client.get(flash, headers={"Cookie": cookie})).text())
    assert "<object" in pages[1]
    styles = {h for p in pages for h in re.findall(r'<link rel="stylesheet" href="([^"]+)"', p)}
    scripts = {h for p in pages for h in re.findall(r'<script src="([^"]+)"', p)}
    return styles, scripts


def _static_file(href: str) -> Path:
    assert href.startswith("/static/"), href
    path = STATIC / href.removeprefix("/static/")
    assert path.is_file(), href
    return path


async def test_flash_page_css_uses_only_what_flash_era_browsers_have(
    aiohttp_client: Any,
) -> None:
    client: Client = await aiohttp_client(make_client_app())
    styles, _ = await _flash_page_assets(client)
    assert styles == {"/static/flash/flash.css"}  # not the modern pages' stylesheet
    doiuse = _node_tool("doiuse")
    for href in styles:
        path = _static_file(href)
        result = subprocess.run(
            [doiuse, "--json", "--browsers", FLASH_ERA, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        findings = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        unsupported = [
            f"{f['feature']}: {f['message']}"
            for f in findings
            if f["feature"] not in DOIUSE_IGNORED
        ]
        assert unsupported == [], unsupported
        css = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)  # rules, not comments
        # what the ignored findings would have caught, and what caniuse has no data for
        for later in ("outline-offset", "aspect-ratio", "var(", "gap:", "grid"):
            assert later not in css, later
        assert set(re.findall(r"text-decoration:\s*([^;]+);", css)) <= {"none"}


def test_doiuse_finds_what_flash_era_browsers_lack(tmp_path: Path) -> None:
    """The check above can fail: the modern pages' CSS is not Flash-era CSS."""
    probe = tmp_path / "modern.css"
    probe.write_text(".a { display: grid; gap: 1rem; } .b { color: var(--x); }\n")
    result = subprocess.run(
        [_node_tool("doiuse"), "--json", "--browsers", FLASH_ERA, str(probe)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    features = {json.loads(line)["feature"] for line in result.stdout.splitlines() if line}
    assert {"css-grid", "css-variables"} <= features, features


async def test_flash_page_scripts_are_es5(aiohttp_client: Any, tmp_path: Path) -> None:
    client: Client = await aiohttp_client(make_client_app())
    _, scripts = await _flash_page_assets(client)
    assert scripts == {"/static/flash.js"}
    es_check = _node_tool("es-check")
    files = [str(_static_file(href)) for href in sorted(scripts)]
    result = subprocess.run([es_check, "es5", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # and it does refuse what Flash-era browsers cannot parse
    modern = tmp_path / "modern.js"
    modern.write_text("const f = () => 1;\n")
    result = subprocess.run([es_check, "es5", str(modern)], capture_output=True, timeout=120)
    assert result.returncode != 0


async def test_crossdomain_xml_allows_only_our_own_origin(aiohttp_client: Any) -> None:
    for config, domain, secure in (
        ({}, "127.0.0.1", None),
        ({"public_url": "https://beratung.example.de/"}, "beratung.example.de", None),
        (
            {
                "public_url": "https://beratung.example.de",
                "tls_cert": Path("c"),
                "tls_key": Path("k"),
            },
            "beratung.example.de",
            "true",
        ),
    ):
        client: Client = await aiohttp_client(make_client_app(**config))
        resp = await client.get("/crossdomain.xml")
        assert resp.status == 200
        assert resp.content_type == "text/x-cross-domain-policy"
        text = await resp.text()
        assert "DOCTYPE" not in text and "adobe.com" not in text  # nothing third-party
        root = ET.fromstring(text)
        assert root.tag == "cross-domain-policy"
        control = root.findall("site-control")
        assert [c.get("permitted-cross-domain-policies") for c in control] == ["master-only"]
        allowed = root.findall("allow-access-from")
        assert [(a.get("domain"), a.get("secure")) for a in allowed] == [(domain, secure)]
        assert "*" not in text
        await client.close()


# -- rtmpdump's SWF verification against the served SWF (end to end) ------------------------------


def test_an_unasked_swf_verification_answer_does_not_end_the_connection() -> None:
    """The server never sends a SWFVerify request (user control 26), so librtmp and Flash
    never answer with 27. Should one arrive anyway — 0x01 0x01, the size twice, the
    32-byte HMAC: 42 bytes, not u32 fields — it is ignored, not a protocol error."""
    client, server = connected()
    swf_size = 30911
    answer = struct.pack(">HBBII", m.UC_SWF_VERIFY_RESPONSE, 1, 1, swf_size, swf_size)
    answer += hashlib.sha256(b"swf").digest()
    server.receive_data(chunk0(2, m.USER_CONTROL, answer))
    assert server.events() == [UserControlReceived(m.UC_SWF_VERIFY_RESPONSE, ())]
    client.call("chat", "still here")  # the connection goes on
    pump(client, server)
    (cmd,) = server.events()
    assert isinstance(cmd, CommandReceived) and cmd.args == ["still here"]
    with pytest.raises(ProtocolError):  # other odd lengths stay errors
        m.parse_user_control(answer[:-1])


@pytest.mark.e2e
def test_rtmpdump_verifies_the_served_swf_and_plays(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    """``rtmpdump -W URL`` fetches the SWF from us, hashes it (HMAC-SHA256 of the
    decompressed file with the player key), and switches to the digest handshake, whose
    server digest it validates; then it plays what ffmpeg publishes."""
    require_tool("rtmpdump")
    require_tool("ffmpeg")
    src = make_flv(tmp_path / "advisor.flv", "h264_aac", seconds=8)
    session = gateway.create_session()
    swf_url = f"{gateway.base}{swf.SWF_URL_PATH}"
    publisher = ffmpeg_publish(src, session["advisor"]["rtmp"]["publish_url"])
    out = tmp_path / "played.flv"
    home = tmp_path / "home"  # librtmp caches SWF hashes in ~/.swfinfo
    home.mkdir()
    try:
        gateway.wait_live(session["id"], "advisor")
        done = subprocess.run(
            [
                "rtmpdump",
                "-V",
                "--live",
                "-r",
                f"rtmp://127.0.0.1:{gateway.rtmp_port}/consult",
                "-y",
                f"advisor?token={session['customer']['token']}",
                "-W",
                swf_url,
                "-o",
                str(out),
                "-B",
                "3",
            ],
            capture_output=True,
            timeout=60,
            env={**os.environ, "HOME": str(home)},
        )
    finally:
        publisher.kill()
        publisher.communicate()
    log = done.stderr.decode(errors="replace")
    assert "Couldn't verify" not in log and "verification failed" not in log.lower(), log
    # the digest handshake, our S1 digest validated (librtmp's debug lines)
    assert "Client digest offset" in log and "Genuine Adobe Flash Media Server" in log, log
    # librtmp fetched our SWF and hashed exactly what we serve
    info = (home / ".swfinfo").read_text()
    body = read_swf(swf.SWF_PATH.read_bytes())
    uncompressed = b"FWS" + bytes([body.version]) + struct.pack("<I", body.file_length)
    uncompressed += body.body
    expected = hmac.new(PLAYER_KEY, uncompressed, hashlib.sha256).hexdigest()
    assert f"url: {swf_url}" in info
    assert f"size: {body.file_length:08x}" in info
    assert f"hash: {expected}" in info
    result = analyse(out)
    assert result.video_codec == "h264" and result.audio_codec == "aac"
    assert result.first_video_keyframe
    assert result.video_frames >= 25, (result, log[-2000:])
    assert not result.decode_errors


# -- the page in Chromium: without Flash, and with Ruffle rendering the SWF ------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed (run `make deps`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


def _pin_in(page: Page, body: dict[str, Any]) -> None:
    page.goto(body["customer"]["flash_page_url"])
    page.fill("#pin", body["customer"]["pin"])
    page.click("button[type=submit]")
    expect(page.locator("#flash-room")).to_have_count(1)


@pytest.mark.e2e
def test_browser_without_flash_is_told_before_the_pin_and_keeps_the_player(
    gateway: GatewayProcess, browser: Browser, artifacts: Path
) -> None:
    """Issue 10 item 12: the notice comes before the PIN is asked for. Issue 12 item 5:
    "no Flash detected" shows the notice but keeps the player (IE 11 and Chrome hide a
    Flash Player that is there)."""
    body = gateway.create_session()
    context = browser.new_context(locale="de-DE")
    problems: list[str] = []
    urls: list[str] = []
    try:
        page = context.new_page()
        page.on(
            "console",
            lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: urls.append(r.url))
        page.goto(body["customer"]["flash_page_url"])
        missing = page.locator("#flash-missing")
        expect(missing).to_be_visible()
        expect(missing).to_contain_text("Dieser Browser zeigt keine Flash-Inhalte an")
        # said first: above the PIN form
        notice_box = missing.bounding_box()
        pin_box = page.locator("#pin").bounding_box()
        assert notice_box and pin_box and notice_box["y"] < pin_box["y"]
        page.screenshot(path=str(artifacts / "flash-pin-no-plugin-de.png"))
        page.fill("#pin", body["customer"]["pin"])
        page.click("button[type=submit]")
        expect(page.locator("#flash-room")).to_have_attribute("data-flash", "missing")
        expect(missing).to_be_visible()
        expect(missing).to_contain_text("Dieser Browser zeigt keine Flash-Inhalte an")
        expect(page.locator("#flash-player")).to_be_visible()
        expect(page.locator("#flash-player object[type]")).to_be_visible()
        page.screenshot(path=str(artifacts / "flash-page-no-plugin-de.png"))
        missing.get_by_role("link", name="Beratung im Browser öffnen").click()
        # the PIN given at the Flash page opens the browser page too
        expect(page.locator("#room")).to_be_visible()
        assert urlsplit(page.url).path == f"/k/{body['id']}"
    finally:
        context.close()
    assert problems == []
    # our own origin only: its pages and its events WebSocket (not any ws:// host)
    own_ws = "ws://" + urlsplit(gateway.base).netloc + "/"
    assert all(u.startswith((gateway.base + "/", own_ws)) for u in urls), urls


def _without_aspect_ratio(route: Route) -> None:
    """A stylesheet as a browser without ``aspect-ratio`` reads it (every browser that
    ran Flash): the declarations dropped."""
    response = route.fetch()
    css = re.sub(r"aspect-ratio\s*:[^;}]*;?", "", response.text())
    route.fulfill(response=response, body=css)


@pytest.mark.e2e
def test_the_player_is_800_by_560_without_aspect_ratio(
    gateway: GatewayProcess, browser: Browser, artifacts: Path
) -> None:
    """Issue 12 item 1: with ``height: auto; aspect-ratio`` a plugin ``<object>`` got
    150 px (or 0) in every browser that can run Flash."""
    body = gateway.create_session()
    context = browser.new_context(locale="de-DE", viewport={"width": 1024, "height": 768})
    try:
        context.route(re.compile(r".*\.css(\?.*)?$"), _without_aspect_ratio)
        page = context.new_page()
        _pin_in(page, body)
        for selector in ("#vb-flash", "#flash-player object[type]"):
            box = page.locator(selector).bounding_box()
            assert box is not None, selector
            assert (round(box["width"]), round(box["height"])) == (800, 560), (selector, box)
        page.screenshot(path=str(artifacts / "flash-page-1024-de.png"), full_page=True)
        # a narrower window scales the stage, keeping 800:560
        page.set_viewport_size({"width": 640, "height": 700})
        box = page.locator("#flash-player object[type]").bounding_box()
        assert box is not None and box["width"] < 640
        assert abs(box["height"] - box["width"] * 0.7) <= 1.5, box
    finally:
        context.close()


def _serve_ruffle(route: Route) -> None:
    """Ruffle's files, from tests/node, as if on our own origin (no CDN)."""
    name = urlsplit(route.request.url).path.rsplit("/", 1)[1]
    path = RUFFLE_DIR / name
    if not path.is_file() or "/" in name:
        route.fulfill(status=404)
        return
    kind = "application/wasm" if name.endswith(".wasm") else "text/javascript"
    route.fulfill(status=200, body=path.read_bytes(), headers={"Content-Type": kind})


def _allow_ruffle(route: Route) -> None:
    """The Flash page with the CSP additions Ruffle itself needs (compiling its
    WebAssembly, its shadow-DOM styles, its blob: audio worker). The gateway's page needs
    none of them: real Flash Player is a plugin, which ``object-src 'self'`` allows."""
    response = route.fetch()
    headers = dict(response.headers)
    headers["content-security-policy"] += (
        "; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'"
        "; worker-src 'self' blob:"
    )
    route.fulfill(response=response, headers=headers)


RUFFLE_CONFIG = """
window.RufflePlayer = {config: {
  publicPath: "/static/ruffle/", preferredRenderer: "canvas", autoplay: "on",
  letterbox: "on", unmuteOverlay: "hidden", splashScreen: false, logLevel: "info",
  allowScriptAccess: false
}};
"""


def _png_pixels(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and unfiltered rows of an 8-bit, non-interlaced PNG
    (what Chromium's screenshots are; PNG spec, chapters 9 and 11)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        tag, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif tag == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind: int = line[0]
        cur = bytearray(line[1:])
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                cur[i] = (cur[i] + a) & 0xFF
            elif kind == 2:
                cur[i] = (cur[i] + b) & 0xFF
            elif kind == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 0xFF
        rows.append(bytes(cur))
        prev = cur
    return width, height, bpp, rows


def _colour_at(png: tuple[int, int, int, list[bytes]], fx: float, fy: float) -> tuple[int, ...]:
    """The colour at a fraction of the image's width and height (the SWF's own
    coordinates divided by its 800×560 stage: Ruffle may scale it)."""
    width, height, bpp, rows = png
    x, y = int(fx * width), int(fy * height)
    return tuple(rows[y][x * bpp : x * bpp + 3])


def _near(colour: tuple[int, ...], rgb: int, tolerance: int = 28) -> bool:
    want = ((rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF)
    return all(abs(a - b) <= tolerance for a, b in zip(colour, want, strict=True))


def _wait_for_trace(page: Page, traces: list[str], prefix: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in traces:
            if line.startswith(prefix):
                return line
        page.wait_for_timeout(200)  # (Playwright delivers console events while it waits)
    raise AssertionError(f"no {prefix!r} trace from the SWF; got {traces}")


def _ocr(image: Any, *, line: bool) -> str:
    """Tesseract (Debian's tesseract-ocr with the German data) on a PIL image."""
    tesseract = require_tool("tesseract")
    with tempfile.NamedTemporaryFile(suffix=".png") as fh:
        image.save(fh.name)
        result = subprocess.run(
            [tesseract, fh.name, "-", "-l", "deu", "--psm", "7" if line else "3"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())


def _read_drawn_text(png: bytes) -> dict[str, str]:
    """What a person reads on the SWF's stage, by OCR: the whole stage, and each button
    and the title bar on its own. A label on a coloured button is made black on white
    first (its distance from the button's own colour), or the light text of a disabled
    button is lost. Coordinates are the SWF's (800×560), scaled to the screenshot."""
    from PIL import Image, ImageChops, ImageOps  # Pillow comes with fpdf2 (forms)

    stage = Image.open(io.BytesIO(png)).convert("RGB")
    sx, sy = stage.width / 800, stage.height / 560
    found = {"stage": _ocr(stage, line=False)}
    for name, (x0, y0, x1, y1) in {
        "title": (0, 0, 400, 40),
        "camera": (18, 426, 164, 456),
        "mic": (178, 426, 334, 456),
        "leave": (348, 426, 494, 456),
        "send": (714, 276, 782, 300),
        "upload": (514, 340, 782, 364),
    }.items():
        part = stage.crop((int(x0 * sx), int(y0 * sy), int(x1 * sx), int(y1 * sy)))
        background = max(part.getcolors(1 << 16) or [(0, (255, 255, 255))])[1]
        ink = ImageChops.difference(part, Image.new("RGB", part.size, background)).convert("L")
        span = max(1, ink.getextrema()[1])
        ink = ink.point(lambda v, span=span: 255 - min(255, v * 255 // span))
        ink = ImageOps.expand(ink.resize((ink.width * 3, ink.height * 3)), 20, fill=255)
        found[name] = _ocr(ink, line=True)
    return found


@pytest.mark.e2e
# Ruffle has no RTMP: each attempt runs into its timeout (6 s native, 20 s for the tunnel,
# issue 12) before the failure banner shows; and OCR takes its seconds.
@pytest.mark.timeout(300)
def test_ruffle_renders_the_german_ui_of_the_swf(
    gateway: GatewayProcess, browser: Browser, artifacts: Path
) -> None:
    if not (RUFFLE_DIR / "ruffle.js").is_file():
        pytest.fail("Ruffle is not installed (make test runs npm ci in tests/node)")
    body = gateway.create_session()
    context = browser.new_context(locale="de-DE", viewport={"width": 1000, "height": 900})
    traces: list[str] = []
    urls: list[str] = []
    problems: list[str] = []
    renderers: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        renderers.extend(re.findall(r"Used renderer: (\w[\w-]*)", msg.text))
        # Ruffle logs the SWF's trace() lines ("vb-…: text") at info level
        found = re.search(r"(vb-[a-z]+: .*?)(?: color: whitesmoke|$)", msg.text)
        if found:
            traces.append(found.group(1).strip())
        if msg.type == "error":
            problems.append(msg.text)

    try:
        context.route(f"{gateway.base}/static/ruffle/*", _serve_ruffle)
        page_url = re.compile(re.escape(f"{gateway.base}/flash/{body['id']}") + r"(\?lang=en)?$")
        context.route(page_url, _allow_ruffle)
        context.add_init_script(RUFFLE_CONFIG)
        context.add_init_script(path=str(RUFFLE_DIR / "ruffle.js"))
        page = context.new_page()
        page.on("console", on_console)
        page.on("request", lambda r: urls.append(r.url))
        page.on("pageerror", lambda e: problems.append(str(e)))
        _pin_in(page, body)
        player = page.locator("ruffle-object")
        expect(player).to_have_count(1)

        t0 = time.monotonic()
        ui = _wait_for_trace(page, traces, "vb-ui: ")
        for label in (
            "Ihre Video-Beratung",
            "Kamera einschalten",
            "Mikrofon einschalten",
            "Beratung verlassen",
            "Chat",
            "Senden",
            "Dokumente und Formulare",
            "Kamera und Mikrofon sind aus.",
        ):
            assert label in ui, ui
        # It tries RTMP first, then RTMPT on the web port (Ruffle can do neither) and then
        # says so in plain German.
        error = _wait_for_trace(page, traces, "vb-error: ")
        # the tunnel was given its 20 s (Ruffle cannot connect, so each attempt times out)
        assert time.monotonic() - t0 >= 20, traces
        connects = [t for t in traces if t.startswith("vb-connect: ")]
        # (native RTMP may take 6 s, the tunnel through a proxy 20 s: issue 12)
        assert connects[:2] == [
            f"vb-connect: rtmp://127.0.0.1:{gateway.rtmp_port} 6000ms",
            f"vb-connect: rtmpt://127.0.0.1:{gateway.http_port} 20000ms",
        ], traces
        assert "Keine Verbindung zum Beratungsserver" in error, error
        assert renderers == ["canvas"], renderers
        page.wait_for_timeout(500)  # the next frame shows the banner
        shot = player.screenshot()
        (artifacts / "flash-ruffle-de.png").write_bytes(shot)
        page.screenshot(path=str(artifacts / "flash-page-ruffle-de.png"))

        # drawn, not only traced: what OCR reads where a person looks (issue 12)
        drawn = _read_drawn_text(shot)
        for where, label in (
            ("title", "Ihre Video-Beratung"),
            ("camera", "Kamera einschalten"),
            ("mic", "Mikrofon einschalten"),
            ("leave", "Beratung verlassen"),
            ("send", "Senden"),
            ("upload", "Datei hochladen"),
            ("stage", "Dokumente und Formulare"),
            ("stage", "Kamera und Mikrofon sind aus."),
            ("stage", "Keine Verbindung zum Beratungsserver."),
            ("stage", "höchstens 20 MB"),
        ):
            assert label in drawn[where], (where, label, drawn)

        png = _png_pixels(shot)
        # title bar, the advisor's (dark) video area, the red leave button, the white chat log
        assert _near(_colour_at(png, 600 / 800, 5 / 560), 0x0B5CAD), _colour_at(png, 0.75, 0.01)
        assert _near(_colour_at(png, 40 / 800, 300 / 560), 0x1F2933)
        assert _near(_colour_at(png, 352 / 800, 428 / 560), 0xB3261E)
        assert _near(_colour_at(png, 760 / 800, 260 / 560), 0xFFFFFF)
        # the failure banner across the top of the video
        assert _near(_colour_at(png, 30 / 800, 56 / 560), 0xB3261E, tolerance=40)

        # English on request: the page's language switch reaches the SWF's FlashVars
        traces.clear()
        page.goto(f"{gateway.base}/flash/{body['id']}?lang=en")
        ui = _wait_for_trace(page, traces, "vb-ui: ")
        assert "Turn camera on" in ui and "Leave the consultation" in ui, ui
        page.wait_for_timeout(500)
        page.locator("ruffle-object").screenshot(path=str(artifacts / "flash-ruffle-en.png"))
    finally:
        context.close()
    assert all(u.startswith(gateway.base + "/") for u in urls), urls
    assert problems == [], problems
