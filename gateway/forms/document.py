"""A filled form as documents for both sides: a self-contained HTML page and a PDF.

The HTML needs nothing from anywhere (no script, no external style, font or image: its
own CSP meta says so) and every value is escaped. The PDF is made with fpdf2 and embeds
a TrueType font that has German umlauts, „“, – and € (DejaVu Sans from Debian's
``fonts-dejavu-core``, or Liberation/FreeSans); without one it falls back to the PDF
core font Helvetica in Windows-1252, which still has those characters. Nothing is
fetched at run time.

Both are made in memory and handed to :meth:`DocumentStore.add_generated`: they exist
on disk only in the consultation's folder, deleted with it.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.forms.fields import display
from gateway.forms.template import Field, Template

log = logging.getLogger(__name__)

# fpdf2 names the characters its font lacks in a warning ("missing the following glyphs:
# '中' …), and fontTools logs glyph names while subsetting: both would put what the
# customer typed into the log. Nothing of a form's content may be logged; their failures
# still raise.
for _name in ("fpdf", "fontTools"):
    logging.getLogger(_name).setLevel(logging.CRITICAL + 1)

# (regular, bold) pairs, first found wins.
FONT_CANDIDATES = (
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSansBold.ttf",
    ),
)


@lru_cache(maxsize=1)
def pdf_font() -> tuple[Path, Path] | None:
    for regular, bold in FONT_CANDIDATES:
        if Path(regular).is_file() and Path(bold).is_file():
            return Path(regular), Path(bold)
    log.warning("no TrueType font found (install fonts-dejavu-core); form PDFs use Helvetica")
    return None


def _local_time(moment: datetime) -> datetime:
    # The bank's customers and advisors are in Germany (terms of use: servers in Germany).
    try:
        return moment.astimezone(ZoneInfo("Europe/Berlin"))
    except ZoneInfoNotFoundError:
        return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class FilledForm:
    template: Template
    values: dict[str, Any]
    form_id: str
    submitted_at: datetime

    @property
    def when(self) -> str:
        local = _local_time(self.submitted_at)
        return f"{local:%d.%m.%Y} um {local:%H:%M} Uhr ({local.tzname()})"

    def file_stem(self) -> str:
        local = _local_time(self.submitted_at)
        return f"{self.template.title.de} {local:%Y-%m-%d %H-%M}"

    def rows(self, f: Field) -> str:
        return display(f, self.values.get(f.name))


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


_STYLE = (
    "body{font-family:'DejaVu Sans',Arial,Helvetica,sans-serif;max-width:46rem;"
    "margin:2rem auto;padding:0 1rem;color:#1b2733;line-height:1.45}"
    "h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .4rem;"
    "border-bottom:1px solid #c9d1da;padding-bottom:.2rem}.meta{color:#55616e;margin:0 0 1rem}"
    "dl{margin:0}dt{font-size:.85rem;color:#55616e;margin-top:.7rem}"
    "dd{margin:.1rem 0 0;white-space:pre-wrap;overflow-wrap:anywhere}"
    ".empty{color:#8792a0}.signature dd{font-style:italic;font-size:1.15rem}"
    "footer{margin-top:2rem;font-size:.8rem;color:#55616e;border-top:1px solid #c9d1da;"
    "padding-top:.5rem}"
)


def render_html(filled: FilledForm) -> bytes:
    """The filled form as one self-contained HTML page (UTF-8)."""
    t = filled.template
    parts = [
        '<!doctype html>\n<html lang="de"><head><meta charset="utf-8">',
        # Opened from disk it may still do nothing but show itself.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(t.title.de)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(t.title.de)}</h1>",
        f'<p class="meta">Ausgefüllt und übermittelt am {_esc(filled.when)} '
        "in der Video-Beratung.</p>",
    ]
    parts += [f"<p>{_esc(d.de)}</p>" for d in t.description]
    for section in t.sections:
        if section.heading is not None:
            parts.append(f"<h2>{_esc(section.heading.de)}</h2>")
        parts += [f"<p>{_esc(d.de)}</p>" for d in section.description]
        parts.append("<dl>")
        for f in section.fields:
            value = filled.rows(f)
            cls = ' class="signature"' if f.type == "signature-name" else ""
            shown = _esc(value) if value else '<span class="empty">–</span>'
            if f.type == "signature-name" and value:
                shown += "<br><small>Elektronisch bestätigt durch Eingabe des Namens.</small>"
            parts.append(f"<div{cls}><dt>{_esc(f.label.de)}</dt><dd>{shown}</dd></div>")
        parts.append("</dl>")
    parts.append(
        f"<footer>Formular {_esc(filled.form_id)} · Vorlage {_esc(t.id)} (Version "
        f"{t.version}) · erstellt von der Video-Beratung</footer></body></html>\n"
    )
    return "".join(parts).encode("utf-8")


# -- PDF ------------------------------------------------------------------------------------------

_CORE_REPLACEMENTS = {"☑": "[x]", "☐": "[ ]", "\u2212": "-"}


def render_pdf(filled: FilledForm) -> bytes:
    """The filled form as a PDF (A4) with its font embedded."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    t = filled.template
    font = pdf_font()
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_title(t.title.de)
    pdf.set_creator("Video-Beratung")
    pdf.set_producer("Video-Beratung")
    pdf.set_creation_date(filled.submitted_at)
    if font is not None:
        pdf.add_font("Body", "", str(font[0]))
        pdf.add_font("Body", "B", str(font[1]))
        family = "Body"
    else:
        family = "Helvetica"
        pdf.core_fonts_encoding = "windows-1252"

    def text(value: str) -> str:
        if font is not None:
            return value
        for char, replacement in _CORE_REPLACEMENTS.items():
            value = value.replace(char, replacement)
        return value.encode("windows-1252", "replace").decode("windows-1252")

    footer = f"Formular {filled.form_id} · Vorlage {t.id} (Version {t.version})"

    def write(
        size: float, body: str, *, bold: bool = False, color: int = 27, gap: float = 0
    ) -> None:
        pdf.set_font(family, "B" if bold else "", size)
        pdf.set_text_color(color, color + 12, color + 24)
        pdf.multi_cell(0, size * 0.5, text(body), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if gap:
            pdf.ln(gap)

    pdf.add_page()
    write(17, t.title.de, bold=True, gap=1.5)
    write(
        9.5, f"Ausgefüllt und übermittelt am {filled.when} in der Video-Beratung.", color=85, gap=3
    )
    for d in t.description:
        write(10.5, d.de, gap=2)
    for section in t.sections:
        if section.heading is not None:
            pdf.ln(2)
            write(12.5, section.heading.de, bold=True)
            y = pdf.get_y() + 0.8
            pdf.set_draw_color(201, 209, 218)
            pdf.line(pdf.l_margin, y, pdf.w - pdf.r_margin, y)
            pdf.ln(2.5)
        for d in section.description:
            write(10, d.de, gap=1.5)
        for f in section.fields:
            value = filled.rows(f)
            if f.type == "checkbox":
                mark = "☑" if filled.values.get(f.name) else "☐"
                write(10.5, f"{mark} {f.label.de}", gap=2.2)
                continue
            write(8.5, f.label.de, color=85)
            write(11, value or "–", bold=f.type == "signature-name", gap=0.4)
            if f.type == "signature-name" and value:
                write(8.5, "Elektronisch bestätigt durch Eingabe des Namens.", color=85)
            pdf.ln(2)
    pdf.ln(4)
    write(8, footer, color=85)
    return bytes(pdf.output())
