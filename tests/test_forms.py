"""Forms (issue 5 item 4): templates checked against the RELAX NG schema, the checks of
each field type, the filled form as HTML and PDF, and the whole way end to end against
the real gateway: the advisor sends, the customer fills (wrongly, then rightly), both
get the documents, and the end of the consultation deletes them. A Chromium test fills
a form on a phone-sized screen."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pypdf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.testkit.gwproc import ADVISOR_TOKEN, GatewayProcess, flash_client
from gateway.forms import FormLibrary, TemplateError, check_field, check_form, parse_template
from gateway.forms.document import FilledForm, render_html, render_pdf
from gateway.forms.fields import (
    IBAN_LENGTHS,
    Invalid,
    clean_text,
    format_iban,
    format_number,
    iban_checksum,
    parse_date,
    parse_number,
)
from gateway.forms.template import BUILTIN_DIR, FIELD_TYPES, Field, Text
from tests.test_pages import skip_device_check

GREETING = "Grüße aus Köln – 10 €"
NAME = "Jürgen Müßig-Öztürk"

# -- templates ------------------------------------------------------------------------------


def test_builtin_templates_load_and_cover_every_field_type() -> None:
    library = FormLibrary.load()
    ids = {t.id for t in library.list()}
    assert ids == {"kontaktdaten-aendern", "selbstauskunft", "beratungsprotokoll-bestaetigung"}
    used = {f.type for t in library.list() for f in t.fields}
    assert used == set(FIELD_TYPES)
    kontakt = library.get("kontaktdaten-aendern")
    assert kontakt is not None
    assert kontakt.title.de == "Kontaktdaten ändern"
    assert kontakt.title.get("en") == "Change of contact details"
    plz = next(f for f in kontakt.fields if f.name == "plz")
    assert plz.required and plz.pattern == "[0-9]{5}"
    assert plz.pattern_message is not None and "fünfstellige" in plz.pattern_message.de


def _template(fields: str, head: str = "", form_id: str = "probe") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{head}'
        f'<form xmlns="urn:videoberatung:form:1" id="{form_id}">\n'
        "  <title>Probe</title>\n"
        f"{fields}\n"
        "</form>\n"
    ).encode()


GOOD_FIELD = '  <field name="a" type="text"><label>A</label></field>'


def test_a_minimal_template_is_accepted() -> None:
    template = parse_template(_template(GOOD_FIELD), "probe.xml")
    assert [f.name for f in template.fields] == ["a"]


@pytest.mark.parametrize(
    ("fields", "line", "message"),
    [
        # line 4: the <field> element (after the XML declaration, <form> and <title>)
        ('  <field name="a" type="colour"><label>A</label></field>', 4, "type"),
        ('  <field name="a" type="text"></field>', 4, "label"),
        ('  <field name="A b" type="text"><label>A</label></field>', 4, "name"),
        ('  <field name="a" type="choice"><label>A</label></field>', 4, "option"),
        (
            '  <field name="a" type="text"><label>A</label><option value="x">X</option></field>',
            4,
            "option",
        ),
        (
            '  <field name="a" type="text"><label>A</label></field>\n'
            '  <field name="a" type="email"><label>B</label></field>',
            5,
            "twice",
        ),
        (
            '  <field name="a" type="number"><label>A</label><range min="5" max="1"/></field>',
            4,
            "min > max",
        ),
        (
            '  <field name="a" type="text"><label>A</label><length min="9" max="2"/></field>',
            4,
            "min > max",
        ),
        (
            '  <field name="a" type="text"><label>A</label><pattern>([0-9]</pattern></field>',
            4,
            "pattern",
        ),
        ('  <field name="a" type="text"><label>A</label><script/></field>', 4, "script"),
        ('  <field name="a" type="text"><label>A</label>', 5, "well-formed"),
    ],
)
def test_broken_templates_are_refused_naming_file_and_line(
    fields: str, line: int, message: str
) -> None:
    with pytest.raises(TemplateError) as err:
        parse_template(_template(fields), "/srv/forms/kaputt.xml")
    assert err.value.path == "/srv/forms/kaputt.xml"
    assert err.value.line == line, str(err.value)
    assert message in str(err.value)
    assert str(err.value).startswith(f"form template /srv/forms/kaputt.xml:{line}:")


@pytest.mark.parametrize(
    "head",
    [
        # XXE: an external entity reading a local file
        '<!DOCTYPE form [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n',
        # an external DTD fetched over the network
        '<!DOCTYPE form SYSTEM "http://127.0.0.1:9/evil.dtd">\n',
        # "billion laughs": entity expansion
        '<!DOCTYPE form [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n',
    ],
)
def test_doctype_xxe_and_entity_expansion_are_refused(head: str) -> None:
    field = '  <field name="a" type="text"><label>&x;&c;</label></field>'
    with pytest.raises(TemplateError) as err:
        parse_template(_template(field, head), "evil.xml")
    text = str(err.value)
    assert "root:" not in text  # nothing of /etc/passwd came in
    assert "DOCTYPE" in text or "entit" in text.lower() or "well-formed" in text


def test_operator_folder_adds_and_replaces_templates(tmp_path: Path) -> None:
    (tmp_path / "eigenes.xml").write_bytes(_template(GOOD_FIELD, form_id="eigenes"))
    replaced = (
        (BUILTIN_DIR / "selbstauskunft.xml")
        .read_text()
        .replace("<title>Selbstauskunft</title>", "<title>Selbstauskunft (Hausbank)</title>")
    )
    (tmp_path / "selbstauskunft.xml").write_text(replaced)
    library = FormLibrary.load(tmp_path)
    assert library.get("eigenes") is not None
    template = library.get("selbstauskunft")
    assert template is not None and template.title.de == "Selbstauskunft (Hausbank)"
    (tmp_path / "kaputt.xml").write_text("<form>")
    with pytest.raises(TemplateError, match=r"kaputt\.xml:1"):
        FormLibrary.load(tmp_path)
    with pytest.raises(TemplateError, match="does not exist"):
        FormLibrary.load(tmp_path / "missing")


# -- field checks ------------------------------------------------------------------------------


def field(kind: str, **kwargs: Any) -> Field:
    return Field(name="x", type=kind, label=Text("X"), **kwargs)


def problem(f: Field, raw: str | None, today: date | None = None) -> str | None:
    try:
        check_field(f, raw, today)
    except Invalid as exc:
        return exc.problem.key
    return None


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("DE89 3704 0044 0532 0130 00", None),
        ("de89370400440532013000", None),
        ("GB82 WEST 1234 5698 7654 32", None),
        ("DE89 3704 0044 0532 0130 01", "form.error.iban_checksum"),
        ("DE89 3704 0044 0532 0130", "form.error.iban_length"),
        ("89 3704 0044 0532 0130 00", "form.error.iban"),
        ("", "form.error.required"),
    ],
)
def test_iban_examples(raw: str, key: str | None) -> None:
    assert problem(field("iban", required=True), raw) == key


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(IBAN_LENGTHS)))
    bban = draw(
        st.text(
            "0123456789", min_size=IBAN_LENGTHS[country] - 4, max_size=IBAN_LENGTHS[country] - 4
        )
    )
    check = 98 - iban_checksum(country + "00" + bban)
    return f"{country}{check:02d}{bban}"


@given(ibans(), st.data())
def test_valid_ibans_pass_and_any_single_digit_change_is_caught(
    iban: str, data: st.DataObject
) -> None:
    f = field("iban")
    assert check_field(f, format_iban(iban)) == iban
    position = data.draw(st.integers(4, len(iban) - 1))
    original = iban[position]
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != original]))
    changed = iban[:position] + digit + iban[position + 1 :]
    # ISO 7064 MOD 97-10 detects every single substitution
    assert problem(f, changed) == "form.error.iban_checksum"


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_german_numbers_round_trip(value: Decimal) -> None:
    assert parse_number(format_number(value, 2)) == value


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1.234,56", "1234.56"), ("1234,5", "1234.5"), ("1234.5", "1234.5"),
     ("12.345.678", "12345678"), ("2.500 €", "2500"), ("−3", "-3")],
)  # fmt: skip
def test_number_notations(raw: str, value: str) -> None:
    assert parse_number(raw) == Decimal(value)


def test_number_bounds_and_decimals() -> None:
    money = field("number", min_value="0", max_value="1000", decimals=2)
    assert problem(money, "12,345") == "form.error.decimals"
    assert problem(money, "-1") == "form.error.min_value"
    assert problem(money, "1.000,01") == "form.error.max_value"
    assert problem(money, "zwölf") == "form.error.number"
    assert check_field(money, "999,99") == Decimal("999.99")
    assert problem(field("number", decimals=0), "1,5") == "form.error.whole_number"


def test_dates_in_both_notations_and_bounds() -> None:
    assert parse_date("2026-11-26") == parse_date("26.11.2026") == date(2026, 11, 26)
    birthday = field("date", min_value="1900-01-01", max_value="today")
    today = date(2026, 11, 26)
    assert problem(birthday, "31.02.1990", today) == "form.error.date"
    assert problem(birthday, "27.11.2026", today) == "form.error.max_date"
    assert problem(birthday, "1899-12-31", today) == "form.error.min_date"
    assert check_field(birthday, "1.3.1970", today) == date(1970, 3, 1)


@pytest.mark.parametrize(
    ("kind", "raw", "key"),
    [
        ("email", "anna.schmidt@beispiel-bank.de", None),
        ("email", "anna@", "form.error.email"),
        ("email", "anna schmidt@bank.de", "form.error.email"),
        ("phone", "+49 (0)221 123456", None),
        ("phone", "0221/12 34-56", None),
        ("phone", "0800-BANK", "form.error.phone"),
        ("phone", "123", "form.error.phone"),
        ("signature-name", NAME, None),
        ("signature-name", "X", "form.error.name"),
        ("signature-name", "<b>Anna</b>", "form.error.name"),
        ("checkbox", None, None),
    ],
)
def test_typed_fields(kind: str, raw: str | None, key: str | None) -> None:
    assert problem(field(kind), raw) == key


def test_required_checkbox_choices_and_lengths() -> None:
    assert problem(field("checkbox", required=True), None) == "form.error.required_checkbox"
    assert check_field(field("checkbox", required=True), "on") is True
    from gateway.forms.template import Option

    choice = field("choice", required=True, options=(Option("a", Text("A")),))
    assert problem(choice, "") == "form.error.required_choice"
    assert problem(choice, "b") == "form.error.choice"
    assert problem(field("text", min_length=3), "ab") == "form.error.min_length"
    assert problem(field("text"), "x" * 201) == "form.error.max_length"
    assert problem(field("text"), "x" * 100_000) == "form.error.max_length"


@given(st.text())
def test_clean_text_keeps_no_control_or_format_characters(raw: str) -> None:
    import unicodedata

    for multiline in (False, True):
        cleaned = clean_text(raw, multiline=multiline)
        assert all(
            (ch == "\n" and multiline) or unicodedata.category(ch)[0] != "C" for ch in cleaned
        )
        assert clean_text(cleaned, multiline=multiline) == cleaned


def test_bidi_override_is_removed() -> None:
    assert clean_text("Anna\u202eKöln\x00\x1b[31m") == "AnnaKöln[31m"


LIBRARY = FormLibrary.load()
BUILTIN_IDS = {t.id for t in LIBRARY.list()}
SAMPLES: dict[str, list[str]] = {
    "text": ["Anna", "Grüße aus Köln – 10 €", "12345"],
    "multiline": ["a\r\nb", ""],
    "email": ["a@b.de", "x@"],
    "phone": ["0221 123456", "+49 221 1"],
    "date": ["1970-03-01", "01.03.1970", "31.02.2000"],
    "number": ["1.234,56", "2", "-1", "1e9"],
    "iban": ["DE89 3704 0044 0532 0130 00", "DE00"],
    "choice": ["angestellt", "email", "post", "x"],
    "select": ["herr", "ledig", "geldanlage", "x"],
    "checkbox": ["on", ""],
    "signature-name": ["Anna Schmidt", "1"],
}


@given(st.sampled_from(sorted(BUILTIN_IDS)), st.data())
def test_any_input_is_checked_without_crashing_and_what_passes_renders(
    template_id: str, data: st.DataObject
) -> None:
    template = LIBRARY.get(template_id)
    assert template is not None
    sent = {
        f.name: data.draw(st.one_of(st.text(max_size=40), st.sampled_from(SAMPLES[f.type])))
        for f in template.fields
        if data.draw(st.booleans())
    }
    checked = check_form(template, sent)
    assert set(checked.values) | set(checked.problems) == {f.name for f in template.fields}
    if checked.ok:
        filled = FilledForm(template, checked.values, "x", datetime(2026, 1, 1, tzinfo=UTC))
        assert render_html(filled).startswith(b"<!doctype html>")


def test_every_message_key_exists_in_both_languages() -> None:
    from web import i18n

    sources = (Path(__file__).parent.parent / "web" / "forms.py").read_text() + (
        Path(__file__).parent.parent / "gateway" / "forms" / "fields.py"
    ).read_text()
    used = set(re.findall(r'"(forms?\.[a-z_.]+)"', sources))
    assert {"form.error.iban_checksum", "form.done.text", "form.submit"} <= used
    for lang in i18n.LANGUAGES:
        assert used - set(i18n.TABLES[lang]) == set(), lang


def test_desk_tickets_are_one_time_bound_and_expire(tmp_path: Path) -> None:
    from gateway.documents import DocumentStore
    from gateway.forms import FormDesk, FormError

    desk = FormDesk(LIBRARY, DocumentStore(tmp_path), ticket_ttl=60, max_forms=2)
    one = desk.send("c1", "selbstauskunft")
    two = desk.send("c1", "kontaktdaten-aendern")
    with pytest.raises(FormError) as full:
        desk.send("c1", "selbstauskunft")
    assert full.value.status == 409
    with pytest.raises(FormError) as unknown:
        desk.send("c2", "nope")
    assert unknown.value.status == 404
    ticket = desk.mint_ticket("c1", one.id, now=1000)
    assert desk.redeem_ticket(ticket, "c1", two.id, now=1001) is None  # other form: used up
    assert desk.redeem_ticket(ticket, "c1", one.id, now=1001) is None
    ticket = desk.mint_ticket("c1", one.id, now=1000)
    assert desk.redeem_ticket(ticket, "c1", one.id, now=1060) is None  # expired
    ticket = desk.mint_ticket("c1", one.id, now=1000)
    assert desk.redeem_ticket(ticket, "c1", one.id, now=1059) is one
    assert desk.redeem_ticket(ticket, "c1", one.id, now=1059) is None  # once
    # one submission
    desk.begin_submit(one)
    with pytest.raises(FormError):
        desk.begin_submit(one)
    desk.abort_submit(one)
    desk.begin_submit(one)
    docs = desk.store_submission(one, {"name": NAME})
    desk.finish_submit(one, docs)
    assert one.event()["state"] == "submitted" and len(one.event()["documents"]) == 2
    assert len(list((tmp_path / "c1").iterdir())) == 2
    ticket = desk.mint_ticket("c1", two.id)
    desk.remove_session("c1")
    assert desk.forms_of("c1") == [] and desk.redeem_ticket(ticket, "c1", two.id) is None


# -- documents -----------------------------------------------------------------------------------

VALID = {
    "name": NAME,
    "geburtsdatum": "1970-03-01",
    "strasse": GREETING,
    "plz": "50667",
    "ort": "Köln",
    "telefon": "0221 123456",
    "email": "juergen@beispiel.de",
    "kontaktweg": "email",
    "anmerkung": 'Zeile 1\nZeile 2 <script>alert(1)</script> & "Zitat"',
    "bestaetigung": "on",
}


def _filled() -> FilledForm:
    template = FormLibrary.load().get("kontaktdaten-aendern")
    assert template is not None
    checked = check_form(template, VALID)
    assert checked.ok, checked.problems
    return FilledForm(template, checked.values, "F0rm1d", datetime(2026, 11, 26, 9, 5, tzinfo=UTC))


def test_html_document_is_self_contained_and_escapes_input() -> None:
    page = render_html(_filled()).decode()
    assert GREETING in page and NAME in page and "Köln" in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Zitat&quot;" in page
    # nothing to fetch: no src/href, no url(), no @import
    assert not re.search(r"\b(src|href)\s*=|url\(|@import", page)
    assert "26.11.2026 um 10:05 Uhr" in page  # local time (Europe/Berlin)


def test_pdf_document_embeds_a_font_with_umlauts_and_euro() -> None:
    data = render_pdf(_filled())
    assert data.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(data))
    text = "\n".join(page.extract_text() for page in reader.pages)
    for expected in (GREETING, NAME, "Kontaktdaten ändern", "01.03.1970", "E-Mail"):
        assert expected in text
    fonts = reader.pages[0]["/Resources"]["/Font"]
    assert any(
        "/FontFile2"
        in str(f.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object())
        for f in fonts.values()
    )


def test_rendering_logs_nothing_of_the_content(caplog: pytest.LogCaptureFixture) -> None:
    filled = _filled()
    values = {**filled.values, "anmerkung": "Geheimnis 中文 😀 ‮"}
    odd = FilledForm(filled.template, values, filled.form_id, filled.submitted_at)
    with caplog.at_level(logging.DEBUG):
        render_html(odd)
        data = render_pdf(odd)  # DejaVu has no CJK glyphs: fpdf2 would warn, naming them
    assert data.startswith(b"%PDF-")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "中" not in logged and "Geheimnis" not in logged and "u4e2d" not in logged.lower()


# -- end to end ----------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def browser_session() -> aiohttp.ClientSession:
    """A client that keeps cookies like a browser (for 127.0.0.1, too)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def next_event(
    ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any
) -> dict[str, Any]:
    async with asyncio.timeout(10):
        async for msg in ws:
            event = msg.json()
            if event.get("type") == kind and all(event.get(k) == v for k, v in match.items()):
                return dict(event)
    raise AssertionError(f"no {kind} event")


async def send_form(
    http: aiohttp.ClientSession, gateway: GatewayProcess, sid: str, token: str, template: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{gateway.base}/api/sessions/{sid}/forms",
        json={"template": template},
        headers=bearer(token),
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


@pytest.mark.e2e
async def test_advisor_sends_customer_fills_and_both_get_html_and_pdf(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    sid = session["id"]
    advisor_token = session["advisor"]["token"]
    async with http.get(f"{gateway.base}/api/forms", headers=bearer(ADVISOR_TOKEN)) as resp:
        assert resp.status == 200
        templates = {t["id"]: t for t in await resp.json()}
    assert templates["kontaktdaten-aendern"]["title"] == "Kontaktdaten ändern"

    async with (
        http.ws_connect(session["advisor"]["events_url"]) as advisor_ws,
        http.ws_connect(session["customer"]["events_url"]) as customer_ws,
    ):
        status, sent = await send_form(http, gateway, sid, advisor_token, "kontaktdaten-aendern")
        assert status == 201, sent
        assert sent["state"] == "sent" and sent["template"] == "kontaktdaten-aendern"
        fid = sent["id"]
        for_customer = await next_event(customer_ws, "form", id=fid)
        for_advisor = await next_event(advisor_ws, "form", id=fid)
        assert for_customer["title"] == "Kontaktdaten ändern" and for_customer["state"] == "sent"
        fill_url = for_customer["url"]
        assert urlsplit(fill_url).path == f"/k/{sid}/forms/{fid}"
        assert "ticket=" in fill_url
        assert urlsplit(for_advisor["url"]).path == f"/advisor/{sid}/forms/{fid}"

        async with browser_session() as phone:
            # the one-time URL works without any header or cookie, and only once
            async with phone.get(fill_url, allow_redirects=False) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == f"/k/{sid}/forms/{fid}"
            async with phone.get(fill_url, allow_redirects=False) as resp:
                assert resp.status == 303  # used, but this browser has the form's cookie
            async with browser_session() as stranger, stranger.get(fill_url) as resp:
                assert resp.status == 403
                assert "bereits verwendet" in await resp.text()
            page_url = f"{gateway.base}/k/{sid}/forms/{fid}"
            async with phone.get(page_url) as resp:
                assert resp.status == 200
                page = await resp.text()
            assert "Straße und Hausnummer" in page and 'name="plz"' in page
            csrf = csrf_of(page)
            origin = {"Origin": gateway.base}

            # wrong: errors next to the fields, in German, what was typed shown again
            wrong = {
                "csrf": csrf,
                "plz": "123",
                "email": "juergen@",
                "geburtsdatum": "31.02.1970",
                "strasse": GREETING,
                "kontaktweg": "fax",
            }
            async with phone.post(page_url, data=wrong, headers=origin) as resp:
                assert resp.status == 422
                page = await resp.text()
            assert "Bitte geben Sie eine fünfstellige Postleitzahl ein." in page
            assert "Bitte geben Sie eine gültige E-Mail-Adresse ein" in page
            assert "Bitte geben Sie ein gültiges Datum ein (TT.MM.JJJJ)." in page
            assert "Bitte füllen Sie dieses Feld aus." in page  # name, ort
            assert "Bitte bestätigen Sie dies" in page  # the checkbox
            assert re.search(r'id="f-plz"[^>]*aria-describedby="f-plz-error"', page)
            assert 'value="Grüße aus Köln – 10 €"' in page
            # no document yet
            async with http.get(
                f"{gateway.base}/api/sessions/{sid}/documents", headers=bearer(advisor_token)
            ) as resp:
                assert await resp.json() == []

            # right
            async with phone.post(
                page_url, data={"csrf": csrf, **VALID}, headers=origin, allow_redirects=False
            ) as resp:
                assert resp.status == 303, await resp.text()
            async with phone.get(page_url) as resp:
                done = await resp.text()
            assert "Vielen Dank" in done
            # a second submission is refused
            async with phone.post(page_url, data={"csrf": csrf, **VALID}, headers=origin) as resp:
                assert resp.status == 409

            # both sides hear of two documents and the filled form
            for ws in (advisor_ws, customer_ws):
                html_event = await next_event(
                    ws, "document", content_type="text/html; charset=utf-8"
                )
                pdf_event = await next_event(ws, "document", content_type="application/pdf")
                done_event = await next_event(ws, "form", id=fid, state="submitted")
                assert html_event["kind"] == pdf_event["kind"] == "form"
                assert html_event["from"] == "customer" and html_event["url"]
                assert {d["id"] for d in done_event["documents"]} == {
                    html_event["id"],
                    pdf_event["id"],
                }
            assert pdf_event["name"].startswith("Kontaktdaten ändern ")
            assert pdf_event["name"].endswith(".pdf")

            # the customer's copy, through the form's own cookie
            copy = re.search(r'href="(/k/[^"]+/documents/[^"]+)"', done)
            assert copy
            async with phone.get(gateway.base + copy.group(1)) as resp:
                assert resp.status == 200

    # the advisor downloads both
    docs_url = f"{gateway.base}/api/sessions/{sid}/documents"
    async with http.get(docs_url, headers=bearer(advisor_token)) as resp:
        listing = await resp.json()
    assert sorted(d["content_type"] for d in listing) == [
        "application/pdf",
        "text/html; charset=utf-8",
    ]
    by_type = {d["content_type"]: d for d in listing}
    async with http.get(
        f"{docs_url}/{by_type['application/pdf']['id']}", headers=bearer(advisor_token)
    ) as resp:
        assert resp.status == 200
        pdf = await resp.read()
    assert pdf.startswith(b"%PDF")
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    for value in (GREETING, NAME, "50667", "01.03.1970", "juergen@beispiel.de"):
        assert value in text
    async with http.get(
        f"{docs_url}/{by_type['text/html; charset=utf-8']['id']}", headers=bearer(advisor_token)
    ) as resp:
        html = (await resp.read()).decode()
    assert GREETING in html and NAME in html
    assert "&lt;script&gt;" in html and "<script" not in html

    # nothing of the content in the gateway's log
    log = gateway.log()
    assert "Köln" not in log and "Müßig" not in log and "50667" not in log

    # the end deletes them
    folder = gateway.data_dir / "data" / "sessions" / sid
    assert len(list(folder.iterdir())) == 2
    status, _, _ = gateway.request("DELETE", f"/api/sessions/{sid}")
    assert status == 204
    assert not folder.exists()
    # the anonymous statistics row says forms were used, and nothing of what was in them
    rows: list[dict[str, Any]] = []
    for _ in range(50):
        async with http.get(f"{gateway.base}/api/stats", headers=bearer(ADVISOR_TOKEN)) as resp:
            rows = [r for r in (await resp.json())["rows"] if r["forms"]]
        if rows:
            break
        await asyncio.sleep(0.1)
    assert rows
    raw = (gateway.data_dir / "data" / "stats.sqlite").read_bytes()
    assert "Köln".encode() not in raw and b"50667" not in raw
    async with http.get(
        f"{docs_url}/{by_type['application/pdf']['id']}", headers=bearer(ADVISOR_TOKEN)
    ) as resp:
        assert resp.status == 404


@pytest.mark.e2e
async def test_only_the_advisor_sends_and_the_page_needs_access_and_our_origin(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    sid = session["id"]
    status, problem = await send_form(
        http, gateway, sid, session["customer"]["token"], "selbstauskunft"
    )
    assert status == 403, problem
    status, problem = await send_form(http, gateway, sid, ADVISOR_TOKEN, "gibt-es-nicht")
    assert status == 404 and "GET /api/forms" in problem["detail"]
    other = gateway.create_session()
    status, _ = await send_form(http, gateway, sid, other["advisor"]["token"], "selbstauskunft")
    assert status == 403
    async with http.get(
        f"{gateway.base}/api/forms", headers=bearer(session["customer"]["token"])
    ) as resp:
        assert resp.status == 403
    async with http.get(
        f"{gateway.base}/api/forms", headers=bearer(session["advisor"]["token"])
    ) as resp:
        assert resp.status == 200

    status, sent = await send_form(http, gateway, sid, ADVISOR_TOKEN, "selbstauskunft")
    assert status == 201
    page_url = f"{gateway.base}/k/{sid}/forms/{sent['id']}"
    async with http.get(page_url) as resp:  # no cookie, no ticket
        assert resp.status == 403
    # the customer page's cookie (after the PIN) opens every form of its consultation
    async with browser_session() as phone:
        async with phone.post(
            f"{gateway.base}/k/{sid}",
            data={"pin": session["customer"]["pin"]},
            headers={"Origin": gateway.base},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        async with phone.get(page_url) as resp:
            assert resp.status == 200
            csrf = csrf_of(await resp.text())
        async with phone.post(
            page_url, data={"csrf": csrf}, headers={"Origin": "http://evil.example"}
        ) as resp:
            assert resp.status == 403
        async with phone.post(
            page_url, data={"csrf": "falsch"}, headers={"Origin": gateway.base}
        ) as resp:
            assert resp.status == 403
        async with phone.post(
            page_url, data={"csrf": csrf}, headers={"Origin": gateway.base}
        ) as resp:
            assert resp.status == 422
            page = await resp.text()
        assert "Bitte prüfen Sie die markierten Angaben" in page
        async with phone.get(page_url + "?lang=en") as resp:
            assert "Net income (€ per month)" in await resp.text()
    # the customer's state view and a fresh link
    async with http.get(
        f"{gateway.base}/api/sessions/{sid}/forms", headers=bearer(session["customer"]["token"])
    ) as resp:
        forms = await resp.json()
    assert [f["state"] for f in forms] == ["sent"] and "ticket=" in forms[0]["url"]
    async with http.post(
        f"{gateway.base}/api/sessions/{sid}/forms/{sent['id']}/ticket",
        headers=bearer(session["customer"]["token"]),
    ) as resp:
        assert resp.status == 201
        fresh = (await resp.json())["url"]
    async with browser_session() as other_browser, other_browser.get(fresh) as resp:
        assert resp.status == 200 and "Selbstauskunft" in await resp.text()


@pytest.mark.e2e
async def test_flash_client_gets_a_form_event_whose_url_opens_the_page(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gateway.create_session()
    flash = await flash_client(gateway, session["customer"]["token"])
    try:
        status, sent = await send_form(
            http, gateway, session["id"], ADVISOR_TOKEN, "beratungsprotokoll-bestaetigung"
        )
        assert status == 201

        def form_event() -> dict[str, Any] | None:
            for call in flash.calls:
                if call.name == "onSessionEvent" and call.args[0].get("type") == "form":
                    return dict(call.args[0])
            return None

        event = await flash.wait_for(form_event, 5)
        assert event["id"] == sent["id"] and event["state"] == "sent"
        assert event["title"] == "Bestätigung des Beratungsprotokolls"
        # what navigateToURL does: a browser without the token or the page's cookie
        async with browser_session() as browser, browser.get(event["url"]) as resp:
            assert resp.status == 200
            assert "Beratungsprotokoll" in await resp.text()
        listing = await flash.call("forms")
        assert not listing.error and listing.args[0][0]["id"] == sent["id"]
        again = await flash.call("formUrl", sent["id"])
        assert not again.error and again.args[0] != event["url"]
        async with browser_session() as browser, browser.get(again.args[0]) as resp:
            assert resp.status == 200
        assert (await flash.call("formUrl", "no-such-form")).error
    finally:
        await flash.close()


@pytest.mark.e2e
def test_a_broken_operator_template_stops_the_start_naming_file_and_line(
    tmp_path: Path,
) -> None:
    forms = tmp_path / "formulare"
    forms.mkdir()
    (forms / "kaputt.xml").write_bytes(
        _template('  <field name="a" type="choice"><label>A</label></field>')
    )
    proc = GatewayProcess(tmp_path / "gw", extra=["--forms-dir", str(forms)])
    with pytest.raises(RuntimeError, match=r"kaputt\.xml:4: field 'a' of type choice needs"):
        proc.start()
    assert proc.proc is not None and proc.proc.wait(5) != 0
    proc._log.close()


# -- Chromium on a phone -------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
# Collected before any of the page's scripts run (init scripts are not subject to its CSP).
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def ui_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path_factory.mktemp("forms-ui")).start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.mark.e2e
def test_customer_fills_a_form_on_a_phone_in_chromium(
    ui_gateway: GatewayProcess, artifacts: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed (run `make deps`)")
    gw = ui_gateway
    deadline = time.monotonic() + 10
    login = None
    while login is None and time.monotonic() < deadline:
        login = re.search(r"One-time advisor login: (\S+)", gw.log())
        time.sleep(0.05)
    assert login, gw.log()
    session = gw.create_session()
    sid = session["id"]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking", "--headless=new"],
            headless=True,
        )
        try:
            foreign: list[str] = []
            errors: list[str] = []
            # the advisor sends the form from the room page
            advisor = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 900})
            advisor.add_init_script(CSP_PROBE)
            page = advisor.new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(login.group(1))
            page.goto(f"{gw.base}/advisor/{sid}")
            select = page.locator("#form-template")
            expect(select.locator("option")).to_have_count(3)
            select.select_option("selbstauskunft")
            page.click("#forms-send button")
            expect(page.locator("#forms-list li")).to_have_count(1)
            expect(page.locator("#forms-list li")).to_contain_text("wartet auf Ihren Kunden")

            # the customer, on a phone, sees it in the room and opens it
            phone = browser.new_context(
                locale="de-DE",
                viewport=PHONE,
                is_mobile=True,
                has_touch=True,
                device_scale_factor=2,
            )
            phone.add_init_script(CSP_PROBE)
            room = phone.new_page()
            room.on("pageerror", lambda err: errors.append(str(err)))
            room.on(
                "request",
                lambda r: (
                    foreign.append(r.url)
                    if not r.url.startswith((gw.base, "ws://127.0.0.1", "data:"))
                    else None
                ),
            )
            room.goto(session["customer"]["page_url"])
            room.fill("#pin", session["customer"]["pin"])
            room.click("button[type=submit]")
            skip_device_check(room)
            expect(room.locator("#forms")).to_be_visible()
            expect(room.locator("#forms-alert")).to_be_visible()
            with phone.expect_page() as opened:
                room.click("#forms-list a.primary")
            form = opened.value
            form.on("pageerror", lambda err: errors.append(str(err)))
            form.on(
                "request",
                lambda r: foreign.append(r.url) if not r.url.startswith(gw.base) else None,
            )
            expect(form.locator("h1")).to_have_text("Selbstauskunft")

            # first wrong: an IBAN with a typo and nothing else
            form.fill("#f-iban", "DE89 3704 0044 0532 0130 01")
            form.click("button[type=submit]")
            expect(form.locator("#f-iban-error")).to_contain_text("Prüfziffern")
            expect(form.locator(".error-summary")).to_be_visible()
            form.screenshot(path=str(artifacts / "forms-phone-errors.png"), full_page=True)

            # then right
            form.select_option("#f-anrede", "herr")
            form.fill("#f-name", NAME)
            form.fill("#f-geburtsdatum", "1970-03-01")
            form.select_option("#f-familienstand", "verheiratet")
            form.fill("#f-kinder", "2")
            form.check("#f-beschaeftigung-0")
            form.fill("#f-arbeitgeber", GREETING)
            form.fill("#f-einkommen", "3.250,50")
            form.fill("#f-miete", "1.100")
            form.fill("#f-iban", "DE89 3704 0044 0532 0130 00")
            form.check("#f-richtigkeit")
            form.fill("#f-unterschrift", NAME)
            form.screenshot(path=str(artifacts / "forms-phone-filled.png"), full_page=True)
            form.click("button[type=submit]")
            expect(form.locator(".form-done .done")).to_contain_text("Vielen Dank")
            expect(form.locator(".form-docs a")).to_have_count(2)
            form.screenshot(path=str(artifacts / "forms-phone-done.png"), full_page=True)

            # both rooms show it filled, with the documents
            expect(room.locator("#forms-list li")).to_contain_text("übermittelt")
            expect(room.locator("#forms-list a")).to_have_count(2)
            expect(page.locator("#forms-list li")).to_contain_text("ausgefüllt")
            expect(page.locator("#forms-list a[download]")).to_have_count(2)
            room.screenshot(path=str(artifacts / "forms-phone-room.png"), full_page=True)
            # the advisor downloads the PDF from the room (cookie) and opens the view
            pdf_href = page.locator("#forms-list a[download]", has_text="PDF").get_attribute("href")
            assert pdf_href
            pdf = page.request.get(gw.base + pdf_href)
            assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
            text = "\n".join(
                p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf.body())).pages
            )
            assert NAME in text and GREETING in text and "3.250,50" in text
            with advisor.expect_page() as viewed:
                page.click("#forms-list a:has-text('Ansehen')")
            view = viewed.value
            expect(view.locator(".form-state")).to_have_text("Ausgefüllt und übermittelt.")
            expect(view.locator(".form-docs a")).to_have_count(2)
            assert view.locator("input:disabled").count() > 5
            assert view.evaluate("window.__cspViolations || []") == []
            assert errors == []
            assert foreign == []
            for watched in (page, room, form):
                assert watched.evaluate("window.__cspViolations || []") == []
        finally:
            browser.close()
