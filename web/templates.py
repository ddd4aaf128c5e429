"""HTML of the pages, built from the language tables (``web/i18n.py``).

Every user-visible string comes from the table; elements carry ``data-t`` (and
``data-t-params``) so ``static/i18n.js`` can switch the language in place. No inline
script or style: the CSP forbids both; scripts read their parameters from ``data-*``
attributes and ``<meta>`` tags.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from gateway.config import split_ice_url
from gateway.phonecall import group_code
from web.i18n import data_block, translate


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# 24×24 icons drawn here (no icon font, nothing fetched); colour from currentColor.
_ICONS = {
    "camera": '<path d="M3 6.5h11.5a1.5 1.5 0 0 1 1.5 1.5v8a1.5 1.5 0 0 1-1.5 1.5H3A1.5 1.5 0 0 '
    '1 1.5 16V8A1.5 1.5 0 0 1 3 6.5zM17.5 10l5-3v10l-5-3z"/>',
    "mic": '<rect x="8.5" y="2" width="7" height="12.5" rx="3.5"/><path d="M5 11.5a7 7 0 0 0 14 0'
    'M12 18.5V22M8.5 22h7" fill="none" stroke="currentColor" stroke-width="2" '
    'stroke-linecap="round"/>',
    "slash": '<path d="M3 3l18 18" stroke="currentColor" stroke-width="2.4" '
    'stroke-linecap="round"/>',
    "leave": '<path d="M14 4H6a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h8M10 12h11M17 8l4 4-4 4" '
    'fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" '
    'stroke-linejoin="round"/>',
    "chat": '<path d="M4 4h16a1 1 0 0 1 1 1v11a1 1 0 0 1-1 1H9l-5 4v-4a1 1 0 0 1-1-1V5a1 1 0 0 '
    '1 1-1z"/>',
    "person": '<circle cx="12" cy="8" r="4.5"/><path d="M3 21.5c.8-4.6 4.4-7.5 9-7.5s8.2 2.9 9 '
    '7.5z"/>',
    "sound": '<path d="M3 9h4l5-4v14l-5-4H3zM16 8.5a5 5 0 0 1 0 7M18.5 6a8.5 8.5 0 0 1 0 12" '
    'fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" '
    'stroke-linejoin="round"/>',
    "video": '<path d="M3 5h18v14H3zM10 9v6l5-3z"/>',
    "copy": '<path d="M8 8h11v13H8zM5 16H4V3h11v1" fill="none" stroke="currentColor" '
    'stroke-width="2" stroke-linejoin="round"/>',
    "upload": '<path d="M12 16V4M7 9l5-5 5 5M4 16v4h16v-4" fill="none" stroke="currentColor" '
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"/>',
    "download": '<path d="M12 4v12M7 11l5 5 5-5M4 16v4h16v-4" fill="none" '
    'stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"/>',
    "screen": '<path d="M3 4h18a1 1 0 0 1 1 1v11a1 1 0 0 1-1 1H3a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1zM8 '
    '21h8M12 17v4" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>',
    "star": '<path d="M12 2.5l2.9 6.1 6.6.8-4.9 4.6 1.3 6.6L12 17.3l-5.9 3.3 1.3-6.6-4.9-4.6 '
    '6.6-.8z"/>',
    "fullscreen": '<path d="M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5" fill="none" '
    'stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"/>',
    "pip": '<path d="M3 5h18v14H3z" fill="none" stroke="currentColor" stroke-width="2" '
    'stroke-linejoin="round"/><path d="M12 11h7v6h-7z"/>',
}


def icon(name: str, cls: str = "") -> str:
    body = _ICONS[name]
    extra = f" {cls}" if cls else ""
    return (
        f'<svg class="icon{extra}" viewBox="0 0 24 24" width="24" height="24" '
        f'fill="currentColor" aria-hidden="true" focusable="false">{body}</svg>'
    )


def _toggle_icon(name: str) -> str:
    # both states drawn; CSS shows the one matching data-on
    return icon(name, "when-on") + (
        '<svg class="icon when-off" viewBox="0 0 24 24" width="24" height="24" '
        f'fill="currentColor" aria-hidden="true" focusable="false">{_ICONS[name]}'
        f"{_ICONS['slash']}</svg>"
    )


class View:
    """Strings of one language for one page; ``brand``: the bank's look and contact
    (``gateway.config.Bank``), shown on every page (:func:`brand_header`,
    :func:`brand_footer`); None keeps the neutral look."""

    def __init__(self, lang: str, brand: Any = None) -> None:
        self.lang = lang
        self.brand = brand

    def t(self, key: str, **params: Any) -> str:
        return translate(self.lang, key, **params)

    def tr(self, key: str, tag: str = "span", attrs: str = "", **params: Any) -> str:
        """An element whose text is the string ``key`` (re-rendered on a switch)."""
        data = f' data-t="{esc(key)}"'
        if params:
            data += f' data-t-params="{esc(json.dumps(params, ensure_ascii=False))}"'
        space = " " if attrs else ""
        return f"<{tag}{space}{attrs}{data}>{esc(self.t(key, **params))}</{tag}>"

    def attr(self, name: str, key: str) -> str:
        """A translated attribute (aria-label, placeholder, title) that follows a switch."""
        return f'{name}="{esc(self.t(key))}" data-t-{name}="{esc(key)}"'

    # -- the page frame ----------------------------------------------------------------
    def document(
        self,
        title_key: str,
        main: str,
        *,
        heading: str | None = None,
        scripts: tuple[str, ...] = (),
        meta: Mapping[str, str] | None = None,
        body_class: str = "",
        live_language: bool = False,
        nav: str = "",
        title_params: Mapping[str, Any] | None = None,
        stylesheet: str = "style.css",
    ) -> str:
        metas = "".join(
            f'<meta name="{esc(k)}" content="{esc(v)}">' for k, v in (meta or {}).items()
        )
        tags = "".join(f'<script src="/static/{esc(s)}" defer></script>' for s in scripts)
        if scripts:
            tags = data_block(self.lang) + tags
        title = self.t(title_key, **(title_params or {}))
        app_name = self.t("app.name")
        # "Video-Beratung – Video-Beratung" helps no one: a title that already names the
        # service stands alone (static/i18n.js does the same after a language switch)
        tab_title = title if app_name.lower() in title.lower() else self.t("app.title", title=title)
        other = self.t("lang.switch_code")
        switch = (
            f'<a class="lang-switch" href="?lang={esc(other)}" hreflang="{esc(other)}" '
            f'lang="{esc(other)}" data-lang-switch {self.attr("title", "lang.switch_hint")}>'
            f"{self.tr('lang.switch', 'span')}</a>"
        )
        h1 = heading if heading is not None else self.tr(title_key, "span", **(title_params or {}))
        body_attrs = f' class="{esc(body_class)}"' if body_class else ""
        body_attrs += f' data-title-key="{esc(title_key)}"'
        if live_language:
            body_attrs += ' data-live-language="1"'
        return (
            f'<!doctype html>\n<html lang="{esc(self.lang)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(tab_title)}</title>"
            f'<link rel="stylesheet" href="/static/{esc(stylesheet)}">'
            f"{brand_stylesheet(self.brand, stylesheet)}{metas}{tags}</head>"
            f"<body{body_attrs}>"
            f'<header class="topbar">{brand_header(self)}<h1>{h1}</h1>'
            f"<nav>{nav}{switch}</nav></header>"
            f"<main>\n{main}\n</main>{brand_footer(self)}</body></html>\n"
        )


# -- the bank's look (docs/web.md "The bank's look") ---------------------------------------
# The colours come from /brand.css (web/pages.py), a stylesheet the gateway writes from the
# configuration: the CSP allows no inline style, and the Flash page's own stylesheet has no
# custom properties (Internet Explorer 11), so brand.css sets both.
BRAND_CSS_PATH = "/brand.css"
BRAND_FLASH_CSS_PATH = "/brand-flash.css"
BRAND_LOGO_PATH = "/brand/logo"


def brand_stylesheet(brand: Any, stylesheet: str = "style.css") -> str:
    if brand is None or not brand.palette():
        return ""
    path = BRAND_FLASH_CSS_PATH if stylesheet == FLASH_STYLESHEET else BRAND_CSS_PATH
    return f'<link rel="stylesheet" href="{path}">'


def brand_css(brand: Any, *, flash: bool = False) -> str:
    """The stylesheet at ``/brand.css``: the primary colour and its shades as the
    pages' custom properties; at ``/brand-flash.css`` the same as plain rules over the
    Flash page family's stylesheet (Internet Explorer 11 has no custom properties)."""
    palette = brand.palette() if brand is not None else None
    if palette is None:
        return "/* neutral default: no bank colours configured */\n"
    p, d, light = palette["primary"], palette["dark"], palette["light"]
    if not flash:
        return f":root {{ --blue: {p}; --blue-dark: {d}; --blue-light: {light}; }}\n"
    return (
        f"a {{ color: {p}; }}\n"
        f".topbar {{ background: {p}; }}\n"
        f"button, .button {{ border-color: {p}; color: {p}; }}\n"
        f".primary {{ background: {p}; color: #fff; }}\n"
        f".primary:hover {{ background: {d}; border-color: {d}; }}\n"
        f".privacy {{ background: {light}; border-left-color: {p}; }}\n"
    )


def brand_header(v: View) -> str:
    """The bank's logo (served by the gateway) or name at the start of the top bar."""
    brand = v.brand
    if brand is None:
        return ""
    if brand.logo_type():
        alt = brand.name or v.t("brand.logo_alt")
        return (
            f'<span class="brand"><img class="brand-logo" src="{BRAND_LOGO_PATH}" '
            f'alt="{esc(alt)}" height="32"></span>'
        )
    if brand.name:
        return f'<span class="brand brand-name">{esc(brand.name)}</span>'
    return ""


def brand_footer(v: View) -> str:
    """The bank's name, contact, imprint and privacy links at the foot of every page;
    nothing for the neutral default."""
    brand = v.brand
    if brand is None:
        return ""
    items = []
    if brand.name:
        items.append(f'<span class="footer-name">{esc(brand.name)}</span>')
    if brand.address:
        items.append(f"<span>{esc(brand.address)}</span>")
    if brand.phone:
        tel = "".join(ch for ch in brand.phone if ch.isdigit() or ch == "+")
        items.append(f'<a href="tel:{esc(tel)}">{esc(brand.phone)}</a>')
    if brand.email:
        items.append(f'<a href="mailto:{esc(brand.email)}">{esc(brand.email)}</a>')
    for field, key in (("imprint", "brand.imprint"), ("privacy", "brand.privacy")):
        url = getattr(brand, field)
        if url:
            items.append(
                f'<a href="{esc(url)}" rel="noopener noreferrer" '
                f'data-brand-link="{field}">' + v.tr(key) + "</a>"
            )
    if not items:
        return ""
    return (
        f'<footer class="site-footer" {v.attr("aria-label", "brand.footer")}>'
        + "".join(items)
        + "</footer>"
    )


def not_found_page(v: View) -> str:
    """What a person gets for a mistyped address (API paths keep problem+json)."""
    main = "".join(
        (
            '<section class="card">',
            v.tr("notfound.text", "p"),
            '<p><a class="button primary" href="/">',
            v.tr("notfound.home"),
            "</a></p></section>",
        )
    )
    return v.document("notfound.title", main)


def ice_servers(urls: list[str]) -> str:
    """RTCConfiguration.iceServers for the page: our own STUN and TURN servers only
    (none by default; no third-party default, as the terms of use promise). TURN
    credentials (``turn:user:secret@host``) go to the participant's own page only."""
    servers = []
    for url in urls:
        clean, username, credential = split_ice_url(url)
        server: dict[str, str] = {"urls": clean}
        if username is not None:
            server["username"] = username
            server["credential"] = credential or ""
        servers.append(server)
    return json.dumps(servers)


def _chat(v: View) -> str:
    return "".join(
        (
            '<section id="chat" class="chat card" aria-labelledby="chat-title">',
            '<div class="chat-head">',
            v.tr("chat.title", "h2", 'id="chat-title"'),
            # notification sounds (static/sounds.js), the choice kept on this device
            '<button type="button" id="sound-toggle" class="sound-toggle secondary" '
            'data-on="true">',
            _toggle_icon("sound"),
            v.tr("sound.mute", "span", 'class="toggle-label"'),
            "</button></div>",
            '<ol class="chat-log" aria-live="polite"></ol>',
            v.tr("chat.empty", "p", 'class="chat-empty"'),
            # "… schreibt" (chat.js, from the other side's typing events)
            '<p id="typing" class="typing" aria-live="polite" hidden></p>',
            '<form class="chat-form" autocomplete="off">',
            v.tr("chat.label", "label", 'for="chat-text" class="visually-hidden"'),
            '<input id="chat-text" name="text" maxlength="2000" enterkeyhint="send" ',
            v.attr("placeholder", "chat.placeholder"),
            ">",
            '<button type="submit" class="primary">',
            v.tr("chat.send"),
            "</button></form></section>",
        )
    )


def _stage(
    v: View,
    remote_label: str,
    self_label: str,
    placeholder: str,
    label_params: Mapping[str, Any] | None = None,
    extra: str = "",
) -> str:
    return "".join(
        (
            '<section class="stage" aria-label="Video">',
            '<video id="remote-video" autoplay playsinline hidden></video>',
            '<div id="remote-placeholder" class="placeholder">',
            icon("person", "big"),
            v.tr(placeholder, "p", 'id="remote-placeholder-text"'),
            '<button type="button" id="remote-retry" class="secondary" hidden>',
            v.tr("media.show_here"),
            "</button></div>",
            v.tr(remote_label, "span", 'class="label remote-label"', **(label_params or {})),
            '<figure id="self-view" class="self-view" hidden>',
            '<video id="self-video" autoplay muted playsinline></video>',
            v.tr(self_label, "figcaption"),
            "</figure>",
            _stage_tools(v),
            '<button type="button" id="unmute" class="unmute" hidden>',
            icon("sound"),
            v.tr("cust.unmute"),
            "</button>",
            extra,
            "</section>",
        )
    )


def _screen_view(v: View, named: Mapping[str, Any]) -> str:
    """The advisor's shared screen on the customer's page (``static/screen.js``), over
    the advisor's picture while it is shared (the voice goes on), with the line that
    says what it is."""
    return "".join(
        (
            '<section id="screen-share" class="screen-share" '
            'aria-labelledby="screen-label" hidden>',
            '<video id="screen-video" autoplay muted playsinline></video>',
            v.tr(
                "cust.named.screen_label" if named else "cust.screen.label",
                "p",
                'id="screen-label" class="screen-label" role="status"',
                **named,
            ),
            "</section>",
        )
    )


def _screen_controls(v: View) -> str:
    """The advisor's "Bildschirm teilen" / "Teilen beenden" (``static/screen.js``);
    hidden where the browser cannot share a screen (phones)."""
    return "".join(
        (
            '<div class="screen-controls">',
            '<button type="button" id="share-screen" class="toggle" data-on="false" hidden>',
            icon("screen"),
            v.tr("screen.share", "span", 'class="toggle-label"'),
            "</button>",
            '<p id="screen-status" class="screen-status" role="status" hidden></p>',
            "</div>",
        )
    )


def _stage_tools(v: View) -> str:
    """Full screen and picture-in-picture for the other side's picture (static/room.js
    shows each only where the browser has it, and only while there is a picture)."""
    return "".join(
        (
            '<div class="stage-tools">',
            '<button type="button" id="pip" class="stage-tool" hidden>',
            icon("pip"),
            v.tr("media.pip", "span", 'class="stage-tool-label"'),
            "</button>",
            '<button type="button" id="fullscreen" class="stage-tool" hidden>',
            icon("fullscreen"),
            v.tr("media.fullscreen", "span", 'class="stage-tool-label"'),
            "</button></div>",
        )
    )


def _device_check(v: View, advisor: bool = False) -> str:
    """The device check between the PIN and the room (static/devices.js): the camera's
    picture, the microphone's level, a test sound and the choice of devices, remembered
    on this device. Shown only while ``body.stage-check``; nothing is sent from here.
    ``advisor``: the same in the advisor's room, as a dialog ("Geräte wählen")."""
    selects = "".join(
        f'<p class="check-field" id="check-{kind}-field">'
        + v.tr(f"check.{kind}", "label", f'for="check-{kind}"')
        + f'<select id="check-{kind}" name="{kind}"></select></p>'
        for kind in ("camera", "microphone", "speaker")
    )
    return "".join(
        (
            '<section id="device-check" class="card device-check" aria-labelledby="check-title">',
            v.tr("check.title", "h2", 'id="check-title"'),
            v.tr("check.intro_advisor" if advisor else "check.intro", "p", 'class="privacy"'),
            '<div class="check-grid"><figure class="check-preview">',
            '<video id="check-video" autoplay muted playsinline></video>',
            v.tr("check.starting", "p", 'id="check-video-note" class="check-video-note"'),
            v.tr("check.preview_label", "figcaption"),
            '</figure><div class="check-controls">',
            selects,
            '<p class="check-level">',
            v.tr("check.level", "label", 'for="check-level" id="check-level-label"'),
            '<meter id="check-level" min="0" max="1" low="0.05" optimum="0.5" value="0" '
            'aria-describedby="check-level-hint"></meter>',
            v.tr("check.level_hint", "span", 'id="check-level-hint" class="hint"'),
            "</p>",
            '<p class="check-tone"><button type="button" id="check-tone" class="secondary">',
            icon("sound"),
            v.tr("check.tone"),
            "</button> ",
            v.tr("check.tone_hint", "span", 'class="hint"'),
            "</p></div></div>",
            '<p id="check-error" class="error" role="alert" hidden></p>',
            '<button type="button" id="check-retry" class="secondary" hidden>',
            v.tr("check.retry"),
            "</button>",
            "" if advisor else v.tr("check.off_note", "p", 'class="privacy"'),
            '<div class="check-actions">',
            '<button type="button" id="check-join" class="primary">',
            v.tr("check.apply" if advisor else "check.join"),
            "</button>",
            '<button type="button" id="check-skip" class="secondary">',
            v.tr("check.cancel" if advisor else "check.skip"),
            "</button></div>",
            v.tr("check.remembered", "p", 'class="hint"'),
            "</section>",
        )
    )


def _customer_lobby(v: View, bank_name: str | None, advisor_name: str | None) -> str:
    """The waiting room as the customer sees it (static/customer.js shows it while the
    advisor has not let them in): the bank's greeting and whom they wait for."""
    greeting = (
        v.tr("lobby.greeting_bank", "p", 'class="lobby-greeting"', bank=bank_name)
        if bank_name
        else v.tr("lobby.greeting", "p", 'class="lobby-greeting"')
    )
    wait = (
        v.tr("lobby.named_wait", "p", 'id="lobby-wait"', name=advisor_name)
        if advisor_name
        else v.tr("lobby.wait", "p", 'id="lobby-wait"')
    )
    return "".join(
        (
            '<section id="lobby" class="card lobby" aria-labelledby="lobby-title" hidden>',
            v.tr("lobby.title", "h2", 'id="lobby-title"'),
            greeting,
            wait,
            v.tr("lobby.chat_hint", "p", 'class="hint"'),
            "</section>",
        )
    )


def _advisor_lobby(v: View, consultation_id: str) -> str:
    """The waiting customer on the advisor's room: "Einlassen" (static/advisor-room.js)
    and, once, the offer to allow desktop notifications."""
    return "".join(
        (
            f'<section id="lobby-card" class="card lobby-card" data-admit='
            f'"/api/sessions/{esc(consultation_id)}/admission" role="alert" hidden>',
            v.tr("lobby.advisor_waiting", "p", 'class="question"'),
            v.tr("lobby.advisor_hint", "p"),
            '<div class="dialog-buttons">',
            '<button type="button" id="admit" class="primary">',
            v.tr("lobby.admit"),
            "</button>",
            '<button type="button" id="notify-enable" class="secondary" hidden>',
            v.tr("lobby.notify"),
            "</button></div></section>",
        )
    )


def _toggle(v: View, ident: str, name: str, key: str, pressed: bool) -> str:
    state = "true" if pressed else "false"
    return (
        f'<button type="button" id="{ident}" class="toggle" data-on="{state}">'
        + _toggle_icon(name)
        + v.tr(key, "span", 'class="toggle-label"')
        + "</button>"
    )


def _status_bar(v: View, presence_key: str, **presence_params: Any) -> str:
    return "".join(
        (
            '<div class="status-bar">',
            v.tr(
                "status.connecting",
                "p",
                'id="status" class="status" role="status" data-state="connecting"',
            ),
            # what the other side does: announced politely when it changes
            v.tr(
                presence_key,
                "p",
                'id="presence" class="presence" aria-live="polite"',
                **presence_params,
            ),
            "</div>",
            '<p id="notice" class="notice" role="alert" hidden></p>',
            f'<noscript><p class="notice">{esc(v.t("app.noscript"))}</p></noscript>',
        )
    )


def _forms_card(v: View, role: str, consultation_id: str) -> str:
    """Forms in the consultation (``static/forms.js`` fills the list from ``form``
    events); the advisor also picks a template and sends it. The customer's card stays
    hidden until a form arrives."""
    cid = esc(consultation_id)
    if role == "advisor":
        data = (
            f'data-api="/api/sessions/{cid}/forms" data-templates="/api/forms" '
            f'data-view="/advisor/{cid}/forms/" data-documents="/api/sessions/{cid}/documents/"'
        )
        top = "".join(
            (
                '<form id="forms-send" class="forms-send">',
                v.tr("forms.choose", "label", 'for="form-template"'),
                '<select id="form-template" name="template"></select>',
                '<button type="submit" class="primary">',
                v.tr("forms.send"),
                "</button></form>",
                '<p id="forms-note" class="notice" role="status" hidden></p>',
            )
        )
        hidden = ""
    else:
        data = f'data-base="/k/{cid}/forms/"'
        top = v.tr("forms.customer.new", "p", 'id="forms-alert" class="forms-alert" role="alert"')
        hidden = " hidden"
    return "".join(
        (
            f'<section id="forms" class="card forms-card" data-role="{esc(role)}" {data} '
            f'aria-labelledby="forms-title"{hidden}>',
            v.tr("forms.title", "h2", 'id="forms-title"'),
            top,
            '<ul id="forms-list" class="forms-list"></ul>',
            v.tr("forms.none", "p", 'class="forms-empty"') if role == "advisor" else "",
            "</section>",
        )
    )


# -- documents panel and end screen (docs/web.md) ---------------------------------------------


def size_text(lang: str, size: int) -> str:
    """A byte count as people read it (binary units, written "MB" as file managers do);
    ``documents.js`` formats the same way."""
    units = ((1024**3, "GB"), (1024**2, "MB"), (1024, "KB"))
    for factor, unit in units:
        if size >= factor:
            value = f"{size / factor:.1f}".removesuffix(".0")
            return f"{value.replace('.', ',') if lang == 'de' else value} {unit}"
    return f"{size} B"


def _documents_card(v: View, role: str, consultation_id: str, limits: Mapping[str, Any]) -> str:
    """Documents of the consultation (``static/documents.js``): the limits stated before
    anything is chosen, a file input (and dropping files on the card), the upload's
    progress and errors, and the list from the ``document`` events with a download
    link each. ``limits``: ``web.documents.page_limits`` (the store's real limits)."""
    cid = esc(consultation_id)
    base = f"/k/{cid}/documents" if role == "customer" else f"/api/sessions/{cid}/documents"
    accept = ",".join(f".{ext}" for ext in limits["extensions"])
    data = (
        f'data-role="{esc(role)}" data-upload="{base}" data-download="{base}/" '
        f'data-max-bytes="{int(limits["max_bytes"])}" '
        f'data-quota-bytes="{int(limits["quota_bytes"])}" '
        f'data-max-files="{int(limits["max_files"])}"'
    )
    return "".join(
        (
            f'<section id="documents" class="card documents-card" {data} '
            'aria-labelledby="documents-title">',
            v.tr("docs.title", "h2", 'id="documents-title"'),
            v.tr(
                "docs.limits",
                "p",
                'id="documents-limits" class="documents-limits"',
                size=size_text(v.lang, int(limits["max_bytes"])),
                total=size_text(v.lang, int(limits["quota_bytes"])),
                files=int(limits["max_files"]),
            ),
            '<div id="documents-drop" class="documents-drop">',
            '<label class="file-button button primary">',
            icon("upload"),
            v.tr("docs.choose"),
            f'<input type="file" id="documents-file" multiple accept="{esc(accept)}" '
            'aria-describedby="documents-limits">',
            "</label>",
            v.tr("docs.drop", "span", 'class="drop-hint"'),
            "</div>",
            '<div id="documents-progress" class="documents-progress" hidden>',
            '<progress id="documents-bar" max="100" value="0"></progress>',
            '<span id="documents-progress-text" role="status"></span>',
            '<button type="button" id="documents-cancel" class="secondary">',
            v.tr("docs.cancel"),
            "</button></div>",
            '<p id="documents-error" class="error" role="alert" hidden></p>',
            '<ul id="documents-list" class="documents-list" aria-live="polite"></ul>',
            v.tr("docs.none", "p", 'class="documents-empty"'),
            "</section>",
        )
    )


def _customer_leave_dialog(v: View) -> str:
    """Asked before the customer leaves while documents are there (``documents.js``)."""
    return "".join(
        (
            '<dialog id="leave-dialog" aria-labelledby="leave-question"><form method="dialog">',
            v.tr("cust.leave.question", "p", 'id="leave-question" class="question"'),
            v.tr("docs.save_reminder.none", "p", 'id="leave-documents"'),
            '<div class="dialog-buttons">',
            '<button value="cancel" class="secondary" autofocus>',
            v.tr("cust.leave.cancel"),
            '</button><button value="confirm" id="leave-confirm" class="danger">',
            v.tr("cust.leave.confirm"),
            "</button></div></form></dialog>",
        )
    )


def _contact(v: View, bank: Any) -> str:
    """The bank's contact on the end screen (``[bank]`` in the configuration); without
    one, a neutral hint where to find it."""
    rows = []
    if bank is not None and bank.phone:
        tel = "".join(ch for ch in bank.phone if ch.isdigit() or ch == "+")
        rows.append(
            v.tr("end.contact.phone", "dt")
            + f'<dd><a href="tel:{esc(tel)}">{esc(bank.phone)}</a></dd>'
        )
    if bank is not None and bank.email:
        rows.append(
            v.tr("end.contact.email", "dt")
            + f'<dd><a href="mailto:{esc(bank.email)}">{esc(bank.email)}</a></dd>'
        )
    if bank is not None and bank.website:
        rows.append(
            v.tr("end.contact.website", "dt")
            + f'<dd><a href="{esc(bank.website)}" rel="noopener">{esc(bank.website)}</a></dd>'
        )
    if bank is not None and bank.hours:
        rows.append(v.tr("end.contact.hours", "dt") + f"<dd>{esc(bank.hours)}</dd>")
    name = bank.name if bank is not None else ""
    if rows:
        intro = (
            v.tr("end.contact.intro_named", "p", name=name)
            if name
            else v.tr("end.contact.intro", "p")
        )
        body = intro + '<dl class="contact-list">' + "".join(rows) + "</dl>"
    else:
        body = v.tr("end.contact.none", "p")
    return "".join(
        (
            '<section class="end-contact" aria-labelledby="end-next-title">',
            v.tr("end.next.title", "h2", 'id="end-next-title"'),
            body,
            "</section>",
        )
    )


def _feedback_form(v: View, consultation_id: str) -> str:
    stars = []
    for n in range(1, 6):
        stars.append(
            f'<input type="radio" name="rating" value="{n}" id="rating-{n}">'
            f'<label for="rating-{n}" class="star">{icon("star")}'
            + v.tr(f"end.feedback.star{n}", "span", 'class="visually-hidden"')
            + "</label>"
        )
    return "".join(
        (
            f'<form id="feedback-form" class="feedback" data-url="/k/{esc(consultation_id)}'
            '/feedback">',
            '<fieldset><legend id="feedback-title">',
            v.tr("end.feedback.question"),
            "</legend>",
            '<div class="stars">',
            "".join(stars),
            "</div>",
            v.tr("end.feedback.anonymous", "p", 'class="feedback-privacy"'),
            '<button type="submit" class="primary">',
            v.tr("end.feedback.send"),
            "</button></fieldset>",
            '<p id="feedback-note" role="status" hidden></p>',
            "</form>",
        )
    )


def _end_screen(v: View, consultation_id: str, bank: Any) -> str:
    """What the customer sees when the consultation is over or they left: what was (or
    will be) deleted, whom to contact, and an anonymous rating (``static/end.js``)."""
    return "".join(
        (
            '<div id="end-screen" class="end-screen" hidden>',
            '<p id="end-deleted" class="privacy"></p>',  # end.js: what was deleted
            _contact(v, bank),
            _feedback_form(v, consultation_id),
            "</div>",
        )
    )


def customer_room(
    v: View,
    consultation_id: str,
    token: str,
    ice_urls: list[str],
    *,
    documents: Mapping[str, Any] | None = None,
    bank: Any = None,
    advisor_name: str | None = None,
    waiting_room: bool = False,
    phone: Mapping[str, str] | None = None,
    device_check: bool = True,
) -> str:
    """The customer's consultation page (after the PIN: the device check, the waiting
    room if the advisor lets people in, then the room); ``documents``: the store's
    limits (``web.documents.page_limits``), no panel without; ``bank``: the contact for
    the end screen (``gateway.config.Bank``); ``advisor_name``: the advisor's display
    name (``Consultation.owner_display_name``), else the neutral wording;
    ``waiting_room``: the customer waits to be let in (``admission`` events say when);
    ``phone``: the dial-in number and code when the telephone leg is on (docs/phone.md);
    ``device_check``: the device check comes first (the customer's first entry)."""
    cid = esc(consultation_id)
    named = {"name": advisor_name} if advisor_name else {}
    main = "".join(
        (
            f'<div id="room" class="room room-customer" data-role="customer" '
            f'data-events="/k/{cid}/events" data-whip="/whip/{cid}/customer" '
            f'data-whep="/whep/{cid}/customer" data-page="/k/{cid}"'
            + (f' data-advisor-name="{esc(advisor_name)}"' if advisor_name else "")
            + (' data-waiting-room="1"' if waiting_room else "")
            + (' data-check="1"' if device_check else "")
            + ">",
            _device_check(v),
            _status_bar(v, "cust.named.absent" if named else "cust.advisor.absent", **named),
            _customer_lobby(v, getattr(bank, "name", None), advisor_name),
            '<div class="room-grid"><div class="media-column">',
            _stage(
                v,
                "cust.named.remote_label" if named else "cust.remote.label",
                "cust.self_label",
                "cust.remote.connecting",
                named,
                extra=_screen_view(v, named),
            ),
            '<div class="controls" id="media-controls">',
            _toggle(v, "camera", "camera", "media.camera.turn_on", False),
            _toggle(v, "microphone", "mic", "media.mic.turn_on", False),
            "</div>",
            v.tr("cust.privacy.off", "p", 'id="privacy" class="privacy" data-state="off"'),
            '</div><div class="side-column">',
            _phone_join(v, phone),
            _forms_card(v, "customer", consultation_id),
            _documents_card(v, "customer", consultation_id, documents) if documents else "",
            _chat(v),
            '<div class="actions">',
            '<button type="button" id="chat-only" class="secondary" data-on="false">',
            icon("chat"),
            v.tr("cust.chat_only", "span", 'class="chat-only-label"'),
            "</button>",
            '<button type="button" id="leave" class="danger">',
            icon("leave"),
            v.tr("cust.leave"),
            "</button></div></div></div>",
            '<section id="left" class="left card" hidden>',
            v.tr("cust.left", "p", 'id="left-text"'),
            f'<a class="button primary" href="/k/{cid}">',
            v.tr("cust.rejoin"),
            "</a>",
            _end_screen(v, consultation_id, bank),
            "</section>",
            _customer_leave_dialog(v),
            "</div>",
        )
    )
    return v.document(
        "cust.title",
        main,
        scripts=(
            "i18n.js",
            "rtc.js",
            "chat.js",
            "forms.js",
            "documents.js",
            "end.js",
            "sounds.js",
            "devices.js",
            "room.js",
            "screen.js",
            "customer.js",
        ),
        meta={"vb-token": token, "vb-ice-servers": ice_servers(ice_urls)},
        body_class="page-customer stage-check" if device_check else "page-customer",
        live_language=True,
    )


def _copy_button(v: View, target: str) -> str:
    return (
        f'<button type="button" class="copy secondary" data-copy="{esc(target)}">'
        + icon("copy")
        + v.tr("room.copy")
        + "</button>"
    )


def _phone_join(v: View, phone: Mapping[str, str] | None) -> str:
    """The dial-in for the customer (docs/phone.md): the bank's number and the phone code,
    and the line that says the phone carries the audio now (customer.js)."""
    if not phone:
        return ""
    number = phone.get("number") or ""
    return "".join(
        (
            '<section class="card phone-join" aria-labelledby="phone-title">',
            v.tr("phone.join.title", "h2", 'id="phone-title"'),
            v.tr("phone.join.text", "p"),
            "<dl>",
            v.tr("phone.number", "dt") + f'<dd id="phone-number">{esc(number)}</dd>'
            if number
            else "",
            v.tr("phone.code", "dt"),
            f'<dd><span id="phone-code" class="pin">{esc(group_code(phone["code"]))}</span></dd>',
            "</dl>",
            v.tr("phone.customer.active", "p", 'id="phone-status" class="notice" hidden'),
            "</section>",
        )
    )


def _phone_call(v: View) -> str:
    """The advisor's view of a telephone leg: "Telefon verbunden", the masked number, the
    call's duration and a way to hang up (phone.js)."""
    return "".join(
        (
            '<section id="phone-call" class="card phone-call" aria-live="polite" hidden>',
            v.tr("phone.connected", "h2"),
            '<p><span id="phone-call-number"></span> · ',
            '<span id="phone-call-duration">0:00</span></p>',
            '<button type="button" id="phone-hangup" class="danger">',
            v.tr("phone.hangup"),
            "</button></section>",
        )
    )


def _quality(v: View) -> str:
    rows = []
    for direction, key in (
        ("receive", "room.quality.receive"),
        ("send", "room.quality.send"),
        # the customer's own connection, measured by the gateway (a "quality" event)
        ("uplink", "room.quality.uplink"),
    ):
        rows.append(
            v.tr(key, "dt")
            + f'<dd><span class="dot" id="{direction}-dot" data-quality=""></span>'
            + v.tr("pc.off", "span", f'id="{direction}-state"')
            + f' <span id="{direction}-stats" class="stats"></span></dd>'
        )
    return (
        '<section class="card quality" aria-labelledby="quality-title">'
        + v.tr("room.quality.title", "h2", 'id="quality-title"')
        + "<dl>"
        + "".join(rows)
        + "</dl></section>"
    )


def _customer_card(v: View) -> str:
    badges = []
    for ident, name, key in (
        ("customer-camera", "camera", "room.camera_off"),
        ("customer-mic", "mic", "room.mic_off"),
    ):
        badges.append(
            f'<span id="{ident}" class="badge" data-on="false">'
            + icon(name)
            + v.tr(key, "span", 'class="badge-text"')
            + "</span>"
        )
    return (
        '<section class="card customer-card" aria-labelledby="customer-title">'
        + v.tr("room.customer.title", "h2", 'id="customer-title"')
        + '<p class="badges" aria-live="polite">'
        + "".join(badges)
        + "</p></section>"
    )


def _access(v: View, links: Mapping[str, Any]) -> str:
    page_url = esc(links["page_url"])
    flash_url = esc(links["flash_page_url"])
    return "".join(
        (
            '<section class="card access" aria-labelledby="access-title">',
            v.tr("room.access.title", "h2", 'id="access-title"'),
            # the lock after too many wrong PINs, and the way out (access.js)
            v.tr(
                "access.locked",
                "p",
                'id="access-locked" class="error" role="alert"'
                + ("" if links.get("locked") else " hidden"),
            ),
            '<button type="button" id="new-pin" class="secondary"'
            + ("" if links.get("locked") else " hidden")
            + ">"
            + v.tr("access.new_pin")
            + "</button>",
            "<dl>",
            v.tr("room.access.link", "dt"),
            f'<dd><a id="customer-link" class="link" href="{page_url}" target="_blank" '
            f'rel="noopener">{page_url}</a>',
            _copy_button(v, "customer-link"),
            "</dd>",
            v.tr("room.access.pin", "dt"),
            f'<dd><span id="customer-pin" class="pin">{esc(links["pin"])}</span>',
            _copy_button(v, "customer-pin"),
            "</dd>",
            v.tr("room.access.flash", "dt"),
            f'<dd><a id="flash-link" class="link" href="{flash_url}" target="_blank" '
            f'rel="noopener">{flash_url}</a></dd>',
            _access_phone(v, links.get("phone")),
            "</dl></section>",
        )
    )


def _phone_dial(v: View) -> str:
    """The advisor's dial-out (docs/phone.md): the number is sent for this call and not
    kept, not even in the field (phone.js empties it)."""
    return "".join(
        (
            '<section id="phone-dial-card" class="card phone-dial" '
            'aria-labelledby="phone-dial-title">',
            v.tr("phone.dial.title", "h2", 'id="phone-dial-title"'),
            '<form id="phone-dial" class="inline-form">',
            v.tr("phone.dial.label", "label", 'for="phone-dial-number"'),
            '<input id="phone-dial-number" name="number" type="tel" inputmode="tel" '
            'autocomplete="off" maxlength="30" required>',
            '<button type="submit" class="secondary">',
            v.tr("phone.dial.submit"),
            "</button></form>",
            '<p id="phone-dial-status" role="status"></p>',
            "</section>",
        )
    )


def _access_phone(v: View, phone: Mapping[str, str] | None) -> str:
    """The dial-in number and phone code in the advisor's access card (docs/phone.md)."""
    if not phone:
        return ""
    return (
        v.tr("phone.code", "dt")
        + f'<dd><span id="advisor-phone-code" class="pin">{esc(group_code(phone["code"]))}</span>'
        + (f" ({esc(phone['number'])})" if phone.get("number") else "")
        + "</dd>"
    )


def _end_dialog(v: View) -> str:
    return "".join(
        (
            '<dialog id="end-dialog" aria-labelledby="end-question"><form method="dialog">',
            v.tr("room.end.question", "p", 'id="end-question" class="question"'),
            v.tr("room.end.detail", "p"),
            v.tr("docs.save_reminder.none", "p", 'id="end-documents" class="end-documents"'),
            '<div class="dialog-buttons">',
            '<button value="cancel" class="secondary" autofocus>',
            v.tr("room.end.cancel"),
            '</button><button value="confirm" id="end-confirm" class="danger">',
            v.tr("room.end.confirm"),
            "</button></div></form></dialog>",
        )
    )


def _advisor_leave_dialog(v: View) -> str:
    """Asked before "Zur Übersicht" leaves a running call (advisor-room.js)."""
    return "".join(
        (
            '<dialog id="leave-dialog" aria-labelledby="leave-question"><form method="dialog">',
            v.tr("room.leave.question", "p", 'id="leave-question" class="question"'),
            v.tr("room.leave.detail", "p"),
            '<div class="dialog-buttons">',
            '<button value="cancel" class="secondary" autofocus>',
            v.tr("room.leave.stay"),
            '</button><button value="confirm" id="leave-confirm" class="primary">',
            v.tr("room.leave.confirm"),
            "</button></div></form></dialog>",
        )
    )


def advisor_room(
    v: View,
    consultation_id: str,
    links: Mapping[str, Any],
    token: str,
    csrf: str,
    ice_urls: list[str],
    *,
    documents: Mapping[str, Any] | None = None,
    dial_out: bool = False,
) -> str:
    """The advisor's consultation page; ``documents`` as for :func:`customer_room`;
    ``dial_out``: the gateway can call the customer's phone (``--sip-trunk``)."""
    cid = esc(consultation_id)
    main = "".join(
        (
            f'<div id="room" class="room room-advisor" data-role="advisor" data-id="{cid}" '
            f'data-events="/api/sessions/{cid}/events" data-whip="/whip/{cid}/advisor" '
            f'data-whep="/whep/{cid}/advisor" data-session="/api/sessions/{cid}" '
            f'data-page="/advisor/{cid}">',
            _status_bar(v, "room.customer.absent"),
            _advisor_lobby(v, consultation_id),
            '<div class="room-grid"><div class="media-column">',
            _stage(v, "room.remote_label", "room.self_label", "room.remote.absent"),
            '<div class="controls" id="media-controls">',
            _toggle(v, "camera", "camera", "media.camera.turn_on", False),
            _toggle(v, "microphone", "mic", "media.mic.turn_on", False),
            "</div>",
            _screen_controls(v),
            # the advisor's choice of devices (static/devices.js), the customer's check
            '<p class="devices-open"><button type="button" id="devices-open" class="secondary">',
            v.tr("check.open"),
            "</button></p>",
            '<dialog id="devices-dialog" class="devices-dialog" aria-labelledby="check-title">',
            _device_check(v, advisor=True),
            "</dialog>",
            _quality(v),
            '</div><div class="side-column">',
            _customer_card(v),
            _phone_call(v),
            _phone_dial(v) if dial_out else "",
            _access(v, links),
            _forms_card(v, "advisor", consultation_id),
            _documents_card(v, "advisor", consultation_id, documents) if documents else "",
            _chat(v),
            '<div class="actions">',
            f'<button type="button" id="end-session" class="danger" data-id="{cid}">',
            icon("leave"),
            v.tr("room.end"),
            "</button></div></div></div>",
            _end_dialog(v),
            _advisor_leave_dialog(v),
            "</div>",
        )
    )
    nav = '<a class="nav-link nav-back" href="/advisor">' + v.tr("room.back") + "</a>"
    heading = v.tr("room.title") + f' <small class="sid">{cid}</small>'
    return v.document(
        "room.title",
        main,
        heading=heading,
        scripts=(
            "i18n.js",
            "copy.js",
            "rtc.js",
            "chat.js",
            "forms.js",
            "documents.js",
            "sounds.js",
            "devices.js",
            "room.js",
            "screen.js",
            "advisor-room.js",
            "access.js",
            "phone.js",
        ),
        meta={"csrf-token": csrf, "vb-token": token, "vb-ice-servers": ice_servers(ice_urls)},
        body_class="page-advisor",
        live_language=True,
        nav=nav,
    )


# Flash Player's ActiveX class id: Internet Explorer embeds by it (and ignores ``data``).
_FLASH_CLASSID = "clsid:D27CDB6E-AE6D-11cf-96B8-444553540000"
FLASH_WIDTH, FLASH_HEIGHT = 800, 560


def _flash_params(swf_url: str, flashvars: str) -> str:
    params = (
        ("movie", swf_url),
        ("flashvars", flashvars),
        ("quality", "high"),
        ("bgcolor", "#f4f6f8"),
        # the SWF calls no page script: none may be called (nor may it navigate the page)
        ("allowScriptAccess", "never"),
        ("allowFullScreen", "false"),
    )
    return "".join(f'<param name="{esc(k)}" value="{esc(v)}">' for k, v in params)


# The Flash page family (PIN form and player) has its own small stylesheet, held to the
# browsers that ran Flash (IE 11, Firefox ESR, Chrome <= 87, Safari <= 13): doiuse checks
# it (tests/test_flash_page.py), and the modern pages keep their modern CSS.
FLASH_STYLESHEET = "flash/flash.css"


def flash_missing_notice(v: View, consultation_id: str) -> str:
    """The notice that this browser shows no Flash content, with the way to the browser
    page; hidden until ``flash.js`` finds no Flash Player (also on the PIN form, so it is
    said before anyone types a PIN)."""
    modern = f"/k/{esc(consultation_id)}"
    return (
        '<div id="flash-missing" class="notice" role="alert" hidden>'
        + _flash_fallback(v, modern)
        + "</div>"
    )


def _flash_fallback(v: View, modern: str) -> str:
    return (
        '<div class="flash-fallback">'
        + v.tr("flash.no_plugin", "p")
        + f'<p><a class="button primary" href="{modern}">'
        + v.tr("flash.modern")
        + "</a></p></div>"
    )


def flash_room(
    v: View,
    consultation_id: str,
    *,
    swf_url: str,
    flashvars: str,
    phone: Mapping[str, str] | None = None,
) -> str:
    """The customer's Flash page (after the PIN): the SWF client, embedded the way
    SWFObject's static publishing does it (an ActiveX ``<object>`` for Internet Explorer
    with a nested ``type``/``data`` ``<object>`` for the others), and a way to the
    browser page when Flash is missing. The nested object's fallback content shows
    without any script; ``flash.js`` also checks ``navigator.plugins`` and shows the
    notice above the player area, but keeps the player: IE 11 hides ActiveX from scripts
    in some modes and Chrome hides Flash from ``navigator.plugins`` until the site is
    allowed, so "not detected" is not "not there" (Chrome's click-to-enable placeholder
    is the object itself).

    Sizing the Flash-era way: a plugin ``<object>`` has no intrinsic ratio and those
    browsers have no ``aspect-ratio``, so a padding-ratio box (70 % = 560/800) holds
    both objects at 100 % × 100 %, at most 800 px wide."""
    cid = esc(consultation_id)
    modern = f"/k/{cid}"
    size = f'width="{FLASH_WIDTH}" height="{FLASH_HEIGHT}"'
    params = _flash_params(swf_url, flashvars)
    main = "".join(
        (
            f'<section class="card flash-card" id="flash-room" data-modern="{modern}">',
            v.tr("flash.intro", "p", 'class="privacy"'),
            flash_missing_notice(v, consultation_id),
            '<div id="flash-player" class="flash-player"><div class="flash-ratio">',
            f'<object classid="{_FLASH_CLASSID}" {size} id="vb-flash">',
            params,
            "<!--[if !IE]>-->",
            f'<object type="application/x-shockwave-flash" data="{esc(swf_url)}" {size}>',
            params,
            "<!--<![endif]-->",
            _flash_fallback(v, modern),
            "<!--[if !IE]>-->",
            "</object>",
            "<!--<![endif]-->",
            "</object></div></div>",
            '<p class="flash-hint">',
            v.tr("flash.hint"),
            f' <a href="{modern}">',
            v.tr("flash.modern"),
            "</a></p></section>",
            _phone_join(v, phone),
        )
    )
    return v.document(
        "flash.title",
        main,
        scripts=("flash.js",),
        body_class="page-flash",
        stylesheet=FLASH_STYLESHEET,
    )
