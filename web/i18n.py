"""Page languages: one string table per language, shared by the server and the browser.

The tables are ``web/static/i18n/{lang}.json``: the server renders pages from them, and
the same file is served to the page's JavaScript (embedded as a JSON data block, and
fetched from ``/static/i18n/`` when the user switches language in place), so every
user-visible string lives in exactly one place per language.

Language choice, first match wins: ``?lang=`` (also remembered in the ``vb_lang``
cookie), the ``vb_lang`` cookie, the browser's ``Accept-Language`` (RFC 9110 §12.5.4),
German.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

LANGUAGES = ("de", "en")
DEFAULT_LANGUAGE = "de"
LANG_COOKIE = "vb_lang"
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600

I18N_DIR = Path(__file__).parent / "static" / "i18n"

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _load() -> dict[str, dict[str, str]]:
    tables = {}
    for lang in LANGUAGES:
        table = json.loads((I18N_DIR / f"{lang}.json").read_text(encoding="utf-8"))
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            raise ValueError(f"{lang}.json must map strings to strings")
        tables[lang] = table
    return tables


TABLES: dict[str, dict[str, str]] = _load()


def translate(lang: str, key: str, **params: Any) -> str:
    """The string for ``key``; ``{name}`` placeholders filled as ``i18n.js`` does.

    A missing key is a programming error: the tests check that every key used in the
    pages and scripts exists in every table.
    """
    text = TABLES[lang][key]
    if not params:
        return text
    return _PLACEHOLDER.sub(lambda m: str(params.get(m.group(1), m.group(0))), text)


def _accept_language(header: str) -> str | None:
    """The supported language the browser prefers most (by q-value, then order)."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if primary in LANGUAGES and q > 0:
            ranked.append((-q, index, primary))
    return min(ranked)[2] if ranked else None


def requested_language(request: web.Request) -> str | None:
    """A valid ``?lang=`` on this request, else None."""
    lang = request.query.get("lang", "").lower()
    return lang if lang in LANGUAGES else None


def negotiate(request: web.Request) -> str:
    lang = requested_language(request)
    if lang:
        return lang
    cookie = request.cookies.get(LANG_COOKIE, "").lower()
    if cookie in LANGUAGES:
        return cookie
    return _accept_language(request.headers.get("Accept-Language", "")) or DEFAULT_LANGUAGE


def remember(request: web.Request, response: web.StreamResponse) -> None:
    """Keep a ``?lang=`` choice for the next pages (a preference, not a secret: the
    page's script sets the same cookie when the user switches in place)."""
    lang = requested_language(request)
    if lang and request.cookies.get(LANG_COOKIE) != lang:
        response.set_cookie(
            LANG_COOKIE, lang, path="/", max_age=LANG_COOKIE_MAX_AGE, samesite="Lax"
        )


def data_block(lang: str) -> str:
    """The language's table as a JSON data block for ``i18n.js`` (never executed, so
    the CSP's script rules do not apply; ``<`` escaped so the text cannot end it)."""
    payload = json.dumps({"lang": lang, "strings": TABLES[lang]}, ensure_ascii=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="vb-i18n">{payload}</script>'
