"""Checking what a customer typed into a form, field by field, as its template says.

Every check returns either the clean value or a :class:`Problem`: an i18n key with its
parameters (the page shows it in the page's language, German by default) or the
template's own message for a failed pattern. Nothing here logs: the values are the
customer's personal data.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.forms.template import CHOICE_TYPES, Field, Template, Text

# Far more than any field allows: longer input is refused before any other work.
MAX_RAW_CHARS = 10_000
CHECKED = frozenset({"on", "1", "true", "yes", "ja"})


@dataclass(frozen=True, slots=True)
class Problem:
    key: str  # i18n key, e.g. "form.error.required"
    params: Mapping[str, Any] = field(default_factory=dict)
    text: Text | None = None  # the template's own message (pattern), overrides the key


class Invalid(Exception):
    def __init__(self, key: str, text: Text | None = None, **params: Any) -> None:
        super().__init__(key)
        self.problem = Problem(key, params, text)


# -- clean text -------------------------------------------------------------------------------


def clean_text(raw: str, *, multiline: bool = False) -> str:
    """NFC, without control and format characters (bidi overrides, NUL, ESC …); line
    breaks kept (as ``\\n``) only where the field has several lines."""
    text = unicodedata.normalize("NFC", raw.replace("\r\n", "\n").replace("\r", "\n"))
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\n" if multiline else " ")
        elif ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch)[0] == "C":
            continue
        else:
            out.append(ch)
    cleaned = "".join(out)
    if multiline:
        lines = [line.rstrip() for line in cleaned.split("\n")]
        return "\n".join(lines).strip()
    return " ".join(cleaned.split())


# -- IBAN (ISO 13616) -------------------------------------------------------------------------

# Lengths of the SEPA countries' IBANs (ISO 13616 registry); others: 15–34 characters.
IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "VA": 22,
}  # fmt: skip
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")


def iban_checksum(iban: str) -> int:
    """ISO 7064 MOD 97-10 over the rearranged IBAN (1 for a valid one)."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97


def normalize_iban(raw: str) -> str:
    """The IBAN in electronic form: upper case, without spaces (or the dashes and dots
    some people type between the groups)."""
    return re.sub(r"[\s.\-]", "", raw).upper()


def check_iban(raw: str) -> str:
    iban = normalize_iban(raw)
    if not _IBAN_SHAPE.fullmatch(iban):
        raise Invalid("form.error.iban")
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        raise Invalid("form.error.iban_length", country=iban[:2], n=expected)
    if iban_checksum(iban) != 1:
        raise Invalid("form.error.iban_checksum")
    return iban


def format_iban(iban: str) -> str:
    """Paper form: groups of four (ISO 13616-1, 5.3)."""
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


# -- numbers (German notation first) -----------------------------------------------------------

_GERMAN_NUMBER = re.compile(r"-?\d{1,3}(\.\d{3})*(,\d+)?|-?\d+(,\d+)?")
_DOT_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def parse_number(raw: str) -> Decimal:
    """``1.234,56`` (German, as the page asks for), also ``1234,56`` and ``1234.56``.

    A dot followed by exactly three digits in groups (``1.234``, ``12.345.678``) is a
    thousands separator, as a German reader means it; otherwise a lone dot is taken as
    the decimal point someone used to English notation typed.
    """
    text = raw.strip().replace(" ", "").replace("\u00a0", "").replace("€", "")
    text = text.replace("−", "-")  # U+2212 minus sign
    if _GERMAN_NUMBER.fullmatch(text):
        text = text.replace(".", "").replace(",", ".")
    elif not _DOT_NUMBER.fullmatch(text):
        raise Invalid("form.error.number")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Invalid("form.error.number") from None
    if not value.is_finite():
        raise Invalid("form.error.number")
    return value


def format_number(value: Decimal, decimals: int | None = None) -> str:
    """German notation: ``1.234,56``."""
    if decimals is not None:
        value = value.quantize(Decimal(1).scaleb(-decimals))
    sign = "-" if value < 0 else ""
    text = format(abs(value), "f")
    whole, _, frac = text.partition(".")
    groups: list[str] = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    return sign + ".".join(groups) + ("," + frac if frac else "")


def _decimal_places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def check_number(raw: str, f: Field) -> Decimal:
    value = parse_number(raw)
    if f.decimals is not None and _decimal_places(value) > f.decimals:
        if f.decimals == 0:
            raise Invalid("form.error.whole_number")
        raise Invalid("form.error.decimals", n=f.decimals)
    if f.min_value is not None and value < Decimal(f.min_value):
        raise Invalid("form.error.min_value", min=format_number(Decimal(f.min_value)))
    if f.max_value is not None and value > Decimal(f.max_value):
        raise Invalid("form.error.max_value", max=format_number(Decimal(f.max_value)))
    return value


# -- dates ---------------------------------------------------------------------------------------

_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_GERMAN_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")


def parse_date(raw: str) -> date:
    """``2026-11-26`` (what ``<input type=date>`` sends) or ``26.11.2026`` (typed where the
    browser shows a plain text box)."""
    text = raw.strip()
    m = _ISO.fullmatch(text)
    if m:
        year, month, day = (int(g) for g in m.groups())
    else:
        m = _GERMAN_DATE.fullmatch(text)
        if not m:
            raise Invalid("form.error.date")
        day, month, year = (int(g) for g in m.groups())
    try:
        return date(year, month, day)
    except ValueError:
        raise Invalid("form.error.date") from None


def format_date(value: date) -> str:
    return f"{value.day:02d}.{value.month:02d}.{value.year:04d}"


def _bound(value: str, today: date) -> date:
    return today if value == "today" else date.fromisoformat(value)


def check_date(raw: str, f: Field, today: date) -> date:
    value = parse_date(raw)
    if f.min_value is not None and value < _bound(f.min_value, today):
        raise Invalid("form.error.min_date", min=format_date(_bound(f.min_value, today)))
    if f.max_value is not None and value > _bound(f.max_value, today):
        raise Invalid("form.error.max_date", max=format_date(_bound(f.max_value, today)))
    return value


# -- e-mail, phone, names ------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]{1,64}@(?:" + _LABEL + r"\.)+[A-Za-z]{2,63}")
_PHONE = re.compile(r"\+?[0-9][0-9 ()/\-]*")


def check_email(text: str) -> str:
    if not _EMAIL.fullmatch(text) or ".." in text or text.startswith("."):
        raise Invalid("form.error.email")
    return text


def check_phone(text: str) -> str:
    digits = sum(ch.isdigit() for ch in text)
    if not _PHONE.fullmatch(text) or not 6 <= digits <= 17:
        raise Invalid("form.error.phone")
    return text


def check_signature_name(text: str) -> str:
    """A typed name: letters (any script), spaces, hyphens, apostrophes and dots, with at
    least two letters."""
    letters = 0
    for ch in text:
        if unicodedata.category(ch).startswith("L"):
            letters += 1
        elif unicodedata.category(ch).startswith("M") and letters:
            continue
        elif ch not in " -'.’":
            raise Invalid("form.error.name")
    if letters < 2:
        raise Invalid("form.error.name")
    return text


# -- one field, a whole form ----------------------------------------------------------------


def check_field(f: Field, raw: str | None, today: date | None = None) -> Any:
    """The clean value of one field (None when empty and optional); raises
    :class:`Invalid`. ``raw`` is what the browser sent (None when it sent nothing)."""
    today = today or date.today()
    if f.type == "checkbox":
        checked = raw is not None and raw.strip().lower() in CHECKED
        if f.required and not checked:
            raise Invalid("form.error.required_checkbox")
        return checked
    raw = raw or ""
    if len(raw) > MAX_RAW_CHARS:
        raise Invalid("form.error.max_length", n=f.effective_max_length)
    text = clean_text(raw, multiline=f.type == "multiline")
    if not text:
        if f.required:
            raise Invalid(
                "form.error.required_choice" if f.type in CHOICE_TYPES else "form.error.required"
            )
        return None
    if f.type in CHOICE_TYPES:
        if text not in {o.value for o in f.options}:
            raise Invalid("form.error.choice")
        return text
    if f.type == "iban":
        return check_iban(text)
    if f.type == "number":
        return check_number(text, f)
    if f.type == "date":
        return check_date(text, f, today)
    if f.min_length is not None and len(text) < f.min_length:
        raise Invalid("form.error.min_length", n=f.min_length)
    if len(text) > f.effective_max_length:
        raise Invalid("form.error.max_length", n=f.effective_max_length)
    if f.type == "email":
        check_email(text)
    elif f.type == "phone":
        check_phone(text)
    elif f.type == "signature-name":
        check_signature_name(text)
    if f.pattern is not None and not re.fullmatch(f.pattern, text):
        raise Invalid("form.error.pattern", text=f.pattern_message)
    return text


def display(f: Field, value: Any, lang: str = "de") -> str:
    """A clean value as it is printed in the filled form."""
    if value is None:
        return ""
    if f.type == "checkbox":
        return {"de": "Ja", "en": "Yes"}[lang] if value else {"de": "Nein", "en": "No"}[lang]
    if f.type in CHOICE_TYPES:
        return f.option_label(str(value), lang)
    if f.type == "iban":
        return format_iban(str(value))
    if isinstance(value, Decimal):
        return format_number(value, f.decimals)
    if isinstance(value, date):
        return format_date(value)
    return str(value)


@dataclass(slots=True)
class Checked:
    """A whole form checked: the clean values, the problems, and what was sent (to show
    it again next to the problems)."""

    values: dict[str, Any]
    problems: dict[str, Problem]
    sent: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_form(template: Template, data: Mapping[str, str], today: date | None = None) -> Checked:
    values: dict[str, Any] = {}
    problems: dict[str, Problem] = {}
    sent: dict[str, str] = {}
    for f in template.fields:
        raw = data.get(f.name)
        if raw is not None:
            sent[f.name] = raw[:MAX_RAW_CHARS]
        try:
            values[f.name] = check_field(f, raw, today)
        except Invalid as exc:
            problems[f.name] = exc.problem
    return Checked(values, problems, sent)
