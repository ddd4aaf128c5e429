"""Documents (issue 5, item 3): the sanitiser and the content check as units, then end
to end against the real gateway: upload by one side, download by the other with the
same SHA-256, traversal names, oversize files, wrong types, foreign tokens, one-time
download URLs for Flash, and the ``document`` event on the events socket and RTMP."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import secrets
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.testkit.gwproc import ADVISOR_TOKEN, GatewayProcess, flash_client
from gateway.documents import (
    DOC,
    DOCX,
    GIF,
    JPEG,
    MAX_NAME_CHARS,
    PDF,
    PNG,
    PPTX,
    WEBP,
    XLS,
    XLSX,
    DocumentStore,
    QuotaExceeded,
    TooLarge,
    UnsupportedType,
    name_for_type,
    sanitize_filename,
    sniff_file,
)
from tests.fuzzing import examples
from web.documents import content_disposition

# -- sample files (made here, nothing committed) ------------------------------------------


def pdf_bytes(size: int = 4000) -> bytes:
    head = b"%PDF-1.4\n% Kontoauszug\n"
    return head + secrets.token_bytes(max(0, size - len(head)))


def png_bytes() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(200)


def zip_bytes(members: dict[str, bytes], first: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        if first is not None:
            archive.writestr(zipfile.ZipInfo(first), members[first])  # stored, first
        for name, data in members.items():
            if name != first:
                archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def docx_bytes() -> bytes:
    return zip_bytes(
        {
            "[Content_Types].xml": b"<Types/>",
            "_rels/.rels": b"<Relationships/>",
            "word/document.xml": b"<w:document/>",
        }
    )


def odt_bytes() -> bytes:
    return zip_bytes(
        {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"},
        first="mimetype",
    )


OLE = bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504)


# -- the sanitiser -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\win.ini", "win.ini"),
        ("C:\\Users\\kunde\\Gehaltsnachweis März.pdf", "Gehaltsnachweis März.pdf"),
        ("/abs/path/Vertrag.pdf", "Vertrag.pdf"),
        ("..", "Dokument"),
        ("", "Dokument"),
        ("   ", "Dokument"),
        (".bashrc", "bashrc"),
        ("rechnung\u202efdp.exe", "rechnungfdp.exe"),  # no right-to-left override
        ("a\x00b\r\nc.pdf", "abc.pdf"),
        ('a<b>c:d"e|f?g*h.pdf', "a_b_c_d_e_f_g_h.pdf"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("name. . .", "name"),
        ("Ü\u0308ber.pdf", unicodedata.normalize("NFC", "Ü\u0308ber.pdf")),
    ],
)
def test_sanitize_filename_examples(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_long_names_keep_their_extension() -> None:
    name = sanitize_filename("x" * 500 + ".pdf")
    assert len(name) == MAX_NAME_CHARS
    assert name.endswith(".pdf")


@settings(max_examples=examples(400), deadline=None)
@given(st.text(max_size=400))
def test_sanitized_names_are_harmless(raw: str) -> None:
    name = sanitize_filename(raw)
    assert 0 < len(name) <= MAX_NAME_CHARS + 1  # +1: a reserved device name's "_"
    assert "/" not in name and "\\" not in name
    assert not any(unicodedata.category(ch)[0] == "C" for ch in name)
    assert not name.startswith((".", " ")) and not name.endswith((".", " "))
    assert name not in (".", "..")
    assert sanitize_filename(name) == name  # idempotent
    # used as a path below a folder it stays there, on POSIX and on Windows
    assert PurePosixPath("/base", name).parent == PurePosixPath("/base")
    assert PureWindowsPath("C:/base", name).parent == PureWindowsPath("C:/base")


# -- the content check -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (pdf_bytes(), "a.pdf", PDF),
        (png_bytes(), "a.png", PNG),
        (b"\xff\xd8\xff\xe0" + bytes(100), "a.jpg", JPEG),
        (b"GIF89a" + bytes(100), "a.gif", GIF),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(100), "a.webp", WEBP),
        (docx_bytes(), "a.docx", DOCX),
        (
            zip_bytes({"[Content_Types].xml": b"<T/>", "xl/workbook.xml": b"<w/>"}),
            "a.xlsx",
            XLSX,
        ),
        (
            zip_bytes({"[Content_Types].xml": b"<T/>", "ppt/presentation.xml": b"<p/>"}),
            "a.pptx",
            PPTX,
        ),
        (OLE, "alt.xls", XLS),
        (OLE, "alt.doc", DOC),
    ],
)
def test_types_are_recognised_by_content(
    tmp_path: Path, data: bytes, name: str, expected: Any
) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sniff_file(path, name) == expected


def test_odf_is_named_by_its_mimetype_member(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(odt_bytes())
    found = sniff_file(path, "brief.odt")
    assert found is not None
    assert found.content_type == "application/vnd.oasis.opendocument.text"


@pytest.mark.parametrize(
    "data",
    [
        b"MZ\x90\x00" + bytes(200),  # a Windows executable
        b"<html><script>alert(1)</script></html>",
        b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>",
        b"\x7fELF" + bytes(100),
        zip_bytes({"evil.exe": b"MZ"}),  # a plain ZIP is not an office document
        b"PK\x03\x04 not really a zip",
        b"just text",
    ],
)
def test_other_content_is_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sniff_file(path, "harmlos.pdf") is None


def test_a_name_gets_the_extension_of_its_content() -> None:
    assert name_for_type("rechnung.exe", PDF) == "rechnung.exe.pdf"
    assert name_for_type("scan.JPEG", JPEG) == "scan.JPEG"
    assert name_for_type("Dokument", DOCX) == "Dokument.docx"


def test_content_disposition_has_ascii_fallback_and_rfc5987_name() -> None:
    header = content_disposition('Übersicht "2026"; 100%.pdf')
    assert header.startswith("attachment; ")
    fallback = re.search(r'filename="([^"]*)"', header)
    assert fallback is not None and fallback.group(1).isascii()
    star = re.search(r"filename\*=UTF-8''(\S+)$", header)
    assert star is not None
    assert unquote(star.group(1)) == 'Übersicht "2026"; 100%.pdf'


def test_store_limits_and_tickets(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path, max_bytes=1000, quota_bytes=1500, min_free_bytes=0)
    upload = store.begin_upload("sess1")
    with pytest.raises(TooLarge):
        upload.write(pdf_bytes(1001))
    store.release(upload)
    upload.abort()
    upload = store.begin_upload("sess1")
    upload.write(pdf_bytes(900))
    doc = store.register(upload, *upload.finish("a.pdf"), sender="customer")
    upload = store.begin_upload("sess1")
    with pytest.raises(QuotaExceeded):  # 600 bytes left of the consultation's share
        upload.write(pdf_bytes(700))
    store.release(upload)
    upload.abort()
    upload = store.begin_upload("sess1")
    with pytest.raises(UnsupportedType):  # refused after the first bytes
        upload.write(b"MZ" + bytes(100))
    store.release(upload)
    upload.abort()
    ticket = store.mint_ticket("sess1", doc.id, now=100.0)
    assert store.redeem_ticket(ticket, "sess1", doc.id, now=101.0) == doc
    assert store.redeem_ticket(ticket, "sess1", doc.id, now=101.0) is None  # once
    late = store.mint_ticket("sess1", doc.id, now=100.0)
    assert store.redeem_ticket(late, "sess1", doc.id, now=100.0 + store.ticket_ttl) is None
    other = store.mint_ticket("sess1", doc.id, now=100.0)
    assert store.redeem_ticket(other, "sess2", doc.id, now=101.0) is None
    # minting in a loop pushes out only the same consultation's oldest tickets
    store.tickets.per_consultation = 3
    elsewhere = store.mint_ticket("sess2", "d", now=100.0)
    minted = [store.mint_ticket("sess1", doc.id, now=100.0) for _ in range(5)]
    assert store.redeem_ticket(minted[0], "sess1", doc.id, now=101.0) is None
    assert store.redeem_ticket(minted[-1], "sess1", doc.id, now=101.0) == doc
    assert store.redeem_ticket(elsewhere, "sess2", "d", now=101.0, consume=False) is None
    assert store.tickets.holds("sess2") == 1
    assert [p.name for p in (tmp_path / "sess1").iterdir()] == [doc.path.name]
    store.remove_session("sess1")
    assert list(tmp_path.iterdir()) == []


def test_generated_documents_share_the_consultations_folder_and_end(tmp_path: Path) -> None:
    """What the forms feature uses: a filled form rendered by the gateway."""
    store = DocumentStore(tmp_path, min_free_bytes=0)
    html = "<html><body>Antrag – ausgefüllt</body></html>".encode()
    doc = store.add_generated("sess1", "../Antrag.html", html, "text/html", "customer")
    assert doc.kind == "form" and doc.name == "Antrag.html"
    assert doc.content_type == "text/html" and doc.sha256 == hashlib.sha256(html).hexdigest()
    assert doc.path.parent == tmp_path / "sess1" and doc.path.read_bytes() == html
    assert store.list("sess1") == [doc]
    store.remove_session("sess1")
    assert not (tmp_path / "sess1").exists()


def test_a_full_consultation_refuses_before_reading(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path, max_bytes=100, quota_bytes=150, min_free_bytes=0)
    first = store.begin_upload("s")
    second = store.begin_upload("s")  # 100 + 50 reserved: the share is spoken for
    with pytest.raises(QuotaExceeded):
        store.begin_upload("s")
    for upload in (first, second):
        store.release(upload)
        upload.abort()
    assert list((tmp_path / "s").iterdir()) == []


# -- end to end ------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def upload(
    http: aiohttp.ClientSession,
    gateway: GatewayProcess,
    session_id: str,
    token: str,
    data: bytes,
    filename: str,
    content_type: str = "application/octet-stream",
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
    url = f"{gateway.base}/api/sessions/{session_id}/documents"
    async with http.post(url, data=form, headers=bearer(token)) as resp:
        return resp.status, json.loads(await resp.read())


def session_files(gateway: GatewayProcess, session_id: str) -> list[Path]:
    folder = gateway.data_dir / "data" / "sessions" / session_id
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.e2e
async def test_customer_uploads_and_advisor_downloads_the_same_bytes(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    sid = session["id"]
    data = pdf_bytes(300_000)
    async with http.ws_connect(session["advisor"]["events_url"]) as ws:
        status, doc = await upload(
            http, gateway, sid, session["customer"]["token"], data, "Gehaltsnachweis März.pdf"
        )
        assert status == 201, doc
        assert doc["name"] == "Gehaltsnachweis März.pdf"
        assert doc["size"] == len(data)
        assert doc["sha256"] == hashlib.sha256(data).hexdigest()
        # the advisor's events socket hears of it, with a download URL of its own
        async with asyncio.timeout(5):
            async for msg in ws:
                event = msg.json()
                if event["type"] == "document":
                    break
        assert {k: event[k] for k in ("id", "name", "size", "sha256")} == {
            k: doc[k] for k in ("id", "name", "size", "sha256")
        }
        assert event["from"] == "customer"
        assert event["url"] != doc["url"]  # minted per recipient
    # the advisor lists and downloads it with the advisor token
    url = f"{gateway.base}/api/sessions/{sid}/documents"
    async with http.get(url, headers=bearer(session["advisor"]["token"])) as resp:
        assert resp.status == 200
        assert [d["id"] for d in await resp.json()] == [doc["id"]]
    async with http.get(f"{url}/{doc['id']}", headers=bearer(ADVISOR_TOKEN)) as resp:
        assert resp.status == 200
        body = await resp.read()
        assert resp.headers["Content-Type"] == "application/pdf"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        disposition = resp.headers["Content-Disposition"]
        assert disposition.startswith("attachment;")
        assert "filename*=UTF-8''Gehaltsnachweis%20M%C3%A4rz.pdf" in disposition
    assert hashlib.sha256(body).hexdigest() == doc["sha256"]
    # on disk: one file with a random name, nothing named after the user's file
    files = session_files(gateway, sid)
    assert len(files) == 1 and re.fullmatch(r"[0-9a-f]{32}", files[0].name)
    assert files[0].read_bytes() == data


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("../../etc/passwd", "passwd.pdf"),
        ("..\\..\\..\\Windows\\system.ini", "system.ini.pdf"),
        ("/etc/shadow", "shadow.pdf"),
        ("..", "Dokument.pdf"),
        # a percent-escaped ESC, a right-to-left override and a traversal in one
        ("%2e%2e%2f%1B[31mrot\u202efdp.exe", "[31mrotfdp.exe.pdf"),
    ],
)
async def test_traversal_names_become_harmless_names(
    gateway: GatewayProcess, http: aiohttp.ClientSession, raw: str, shown: str
) -> None:
    session = gateway.create_session()
    # written by hand: well-behaved clients (aiohttp's too) refuse control characters
    boundary = "----vb" + secrets.token_hex(8)
    quoted = raw.replace("\\", "\\\\")  # RFC 9110 quoted-string
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + pdf_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    url = f"{gateway.base}/api/sessions/{session['id']}/documents"
    headers = {
        **bearer(session["customer"]["token"]),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    async with http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        doc = await resp.json()
    assert doc["name"] == shown
    data_dir = gateway.data_dir / "data"
    sessions = data_dir / "sessions"
    for root, _dirs, names in os.walk(sessions):
        for name in names:
            # only random names, only directly inside a consultation's folder
            assert Path(root).parent == sessions, root
            assert re.fullmatch(r"[0-9a-f]{32}", name), name
    stem = shown.partition(".")[0]
    for root, _dirs, names in os.walk(gateway.data_dir):
        assert not [n for n in names if stem in n], (root, names)
    assert not Path("/etc/passwd.pdf").exists()


@pytest.mark.e2e
async def test_raw_control_characters_in_part_headers_are_a_400(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a\x1b[2J.pdf"\r\n\r\n'
        f"%PDF-1.4\r\n--{boundary}--\r\n"
    ).encode()
    headers = {
        **bearer(session["customer"]["token"]),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    url = f"{gateway.base}/api/sessions/{session['id']}/documents"
    async with http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"


@pytest.mark.e2e
async def test_oversize_files_are_refused_with_413(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    sid, token = session["id"], session["customer"]["token"]
    url = f"{gateway.base}/api/sessions/{sid}/documents"
    limit = 20 * 1024 * 1024  # the default
    # streamed without a length (chunked): refused once the 20 MiB are passed
    boundary = "vb" + secrets.token_hex(8)
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="gross.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    big = pdf_bytes(limit + 1)

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        for i in range(0, len(big), 256 * 1024):
            yield big[i : i + 256 * 1024]
        yield tail

    headers = {**bearer(token), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    status = None
    try:
        async with http.post(url, data=chunks(), headers=headers) as resp:
            status = resp.status
            assert resp.content_type == "application/problem+json"
            assert (await resp.json(content_type=None))["status"] == 413
    except aiohttp.ClientError:
        pass  # the server may answer and close before the client finished sending
    assert status in (413, None)
    # a declared length above the limit is refused before a byte is read
    async with http.post(url, data=io.BytesIO(head + big + tail), headers=headers) as resp:
        assert resp.status == 413
        assert resp.content_type == "application/problem+json"
    # nothing of it stayed on disk, and a file of exactly the limit is fine
    assert session_files(gateway, sid) == []
    status, doc = await upload(http, gateway, sid, token, pdf_bytes(limit), "genau.pdf")
    assert status == 201, doc
    assert doc["size"] == limit


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"MZ\x90\x00" + bytes(5000), "rechnung.pdf"),
        (b"<html><script>alert(1)</script></html>", "seite.html"),
        (zip_bytes({"payload.exe": b"MZ" + bytes(100)}), "archiv.docx"),
        (b"", "leer.pdf"),
    ],
)
async def test_wrong_types_are_refused_with_415(
    gateway: GatewayProcess, http: aiohttp.ClientSession, data: bytes, name: str
) -> None:
    session = gateway.create_session()
    status, problem = await upload(
        http, gateway, session["id"], session["customer"]["token"], data, name, "application/pdf"
    )
    assert status == 415, problem
    assert problem["status"] == 415 and problem["detail"]
    assert session_files(gateway, session["id"]) == []


@pytest.mark.e2e
async def test_office_documents_are_accepted_with_their_type(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    token = session["advisor"]["token"]
    for data, name, content_type in (
        (docx_bytes(), "Vertrag.docx", DOCX.content_type),
        (odt_bytes(), "Brief", "application/vnd.oasis.opendocument.text"),
        (OLE, "Tabelle.xls", XLS.content_type),
        (png_bytes(), "scan.png", "image/png"),
    ):
        status, doc = await upload(http, gateway, session["id"], token, data, name)
        assert status == 201, doc
        assert doc["content_type"] == content_type
        assert doc["from"] == "advisor"
    assert (await _names(http, gateway, session))[1] == "Brief.odt"


async def _names(
    http: aiohttp.ClientSession, gateway: GatewayProcess, session: dict[str, Any]
) -> list[str]:
    url = f"{gateway.base}/api/sessions/{session['id']}/documents"
    async with http.get(url, headers=bearer(session["customer"]["token"])) as resp:
        return [d["name"] for d in await resp.json()]


@pytest.mark.e2e
async def test_another_consultations_token_is_refused(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    mine, theirs = gateway.create_session(), gateway.create_session()
    status, doc = await upload(
        http, gateway, mine["id"], mine["customer"]["token"], pdf_bytes(), "a.pdf"
    )
    assert status == 201
    foreign = bearer(theirs["customer"]["token"])
    base = f"{gateway.base}/api/sessions/{mine['id']}/documents"
    async with http.get(base, headers=foreign) as resp:
        assert resp.status == 403
    async with http.get(f"{base}/{doc['id']}", headers=foreign) as resp:
        assert resp.status == 403
        assert b"%PDF" not in await resp.read()
    status, _ = await upload(
        http, gateway, mine["id"], theirs["customer"]["token"], pdf_bytes(), "b.pdf"
    )
    assert status == 403
    # an id that does not exist answers the same as one that does: no probing
    async with http.get(
        f"{gateway.base}/api/sessions/nonexistent00/documents", headers=foreign
    ) as resp:
        assert resp.status == 403
    # a document of another consultation is not found through one's own
    async with http.get(
        f"{gateway.base}/api/sessions/{theirs['id']}/documents/{doc['id']}", headers=foreign
    ) as resp:
        assert resp.status == 404
    async with http.get(base, headers=bearer("not-a-token-at-all-xxxxxxxx")) as resp:
        assert resp.status == 401
    async with http.get(base) as resp:
        assert resp.status == 401


@pytest.mark.e2e
async def test_one_time_url_works_once(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    sid = session["id"]
    data = pdf_bytes()
    status, doc = await upload(http, gateway, sid, session["advisor"]["token"], data, "a.pdf")
    assert status == 201
    url = doc["url"]
    assert "?ticket=" in url and session["advisor"]["token"] not in url
    async with http.head(url) as resp:  # looking does not spend it
        assert resp.status == 200
    async with http.get(url) as resp:  # no credentials: the ticket is enough
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["Content-Disposition"].startswith("attachment;")
    async with http.get(url) as resp:
        assert resp.status == 403
    # a fresh one on request; a ticket for one document does not open another
    mint = f"{gateway.base}/api/sessions/{sid}/documents/{doc['id']}/ticket"
    async with http.post(mint, headers=bearer(session["customer"]["token"])) as resp:
        assert resp.status == 201
        fresh = (await resp.json())["url"]
    status, other = await upload(http, gateway, sid, session["advisor"]["token"], data, "b.pdf")
    wrong = fresh.replace(f"/documents/{doc['id']}?", f"/documents/{other['id']}?")
    async with http.get(wrong) as resp:
        assert resp.status == 403
    async with http.get(fresh) as resp:
        assert resp.status == 403  # used up by the wrong attempt
    # the ticket never reaches the log
    ticket = fresh.rpartition("ticket=")[2]
    assert ticket not in gateway.log()
    assert urlsplit(url).query.partition("=")[2] not in gateway.log()


@pytest.mark.e2e
async def test_flash_client_gets_a_document_event_with_a_url_it_can_open(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    flash = await flash_client(gateway, session["customer"]["token"])
    try:
        data = pdf_bytes()
        status, doc = await upload(
            http, gateway, session["id"], session["advisor"]["token"], data, "Angebot.pdf"
        )
        assert status == 201

        def document_event() -> dict[str, Any] | None:
            for call in flash.calls:
                if call.name == "onSessionEvent" and call.args[0].get("type") == "document":
                    return dict(call.args[0])
            return None

        event = await flash.wait_for(document_event, 5)
        assert event["id"] == doc["id"] and event["from"] == "advisor"
        assert event["name"] == "Angebot.pdf" and event["sha256"] == doc["sha256"]
        # what navigateToURL would do: a plain GET without any credential
        async with http.get(event["url"]) as resp:
            assert resp.status == 200
            assert hashlib.sha256(await resp.read()).hexdigest() == doc["sha256"]
        # later, the SWF asks for the list or a fresh URL over RTMP
        listing = await flash.call("documents")
        assert not listing.error and listing.args[0][0]["id"] == doc["id"]
        again = await flash.call("documentUrl", doc["id"])
        assert not again.error
        async with http.get(again.args[0]) as resp:
            assert resp.status == 200
        missing = await flash.call("documentUrl", "no-such-doc")
        assert missing.error
    finally:
        await flash.close()


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with small document limits (per file 200 kB, per consultation 300 kB)."""
    proc = GatewayProcess(
        tmp_path_factory.mktemp("small"),
        extra=[
            "--limit",
            "document_max_bytes=200000",
            "--limit",
            "document_quota_bytes=300000",
        ],
    ).start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.mark.e2e
async def test_limits_are_configurable_and_the_quota_answers_507(
    small_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    gw = small_gateway
    session = gw.create_session()
    token = session["customer"]["token"]
    status, problem = await upload(http, gw, session["id"], token, pdf_bytes(200_001), "a.pdf")
    assert status == 413, problem
    assert "200000" in problem["detail"]
    assert (await upload(http, gw, session["id"], token, pdf_bytes(150_000), "b.pdf"))[0] == 201
    status, problem = await upload(http, gw, session["id"], token, pdf_bytes(180_000), "c.pdf")
    assert status == 507, problem
    assert problem["detail"]
    assert len(session_files(gw, session["id"])) == 1


@pytest.mark.e2e
async def test_customer_page_uses_its_cookie_and_only_from_our_origin(
    gateway: GatewayProcess,
) -> None:
    session = gateway.create_session()
    sid = session["id"]
    origin = {"Origin": gateway.base}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as page:
        async with page.post(
            f"{gateway.base}/k/{sid}",
            data={"pin": session["customer"]["pin"]},
            headers=origin,
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        data = pdf_bytes()
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename="Ausweis.pdf")
        async with page.post(f"{gateway.base}/k/{sid}/documents", data=form) as resp:
            assert resp.status == 403  # no Origin: not from our page
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename="Ausweis.pdf")
        async with page.post(
            f"{gateway.base}/k/{sid}/documents",
            data=form,
            headers={"Origin": "http://evil.example"},
        ) as resp:
            assert resp.status == 403
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename="Ausweis.pdf")
        async with page.post(
            f"{gateway.base}/k/{sid}/documents", data=form, headers=origin
        ) as resp:
            assert resp.status == 201, await resp.text()
            doc = await resp.json()
        assert doc["from"] == "customer"
        async with page.get(f"{gateway.base}/k/{sid}/documents") as resp:
            assert [d["id"] for d in await resp.json()] == [doc["id"]]
        async with page.get(f"{gateway.base}/k/{sid}/documents/{doc['id']}") as resp:
            assert resp.status == 200
            assert await resp.read() == data
    # without the cookie nothing
    async with (
        aiohttp.ClientSession() as stranger,
        stranger.get(f"{gateway.base}/k/{sid}/documents/{doc['id']}") as resp,
    ):
        assert resp.status == 403


@pytest.mark.e2e
async def test_a_late_events_client_gets_the_documents_with_urls_of_its_own(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    data = pdf_bytes()
    status, doc = await upload(
        http, gateway, session["id"], session["customer"]["token"], data, "früh.pdf"
    )
    assert status == 201
    async with http.ws_connect(session["advisor"]["events_url"]) as ws:
        first = [await ws.receive_json(timeout=5) for _ in range(3)]
    documents = [e for e in first if e["type"] == "document"]
    assert [d["id"] for d in documents] == [doc["id"]]
    async with http.get(documents[0]["url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == data
