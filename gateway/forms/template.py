"""Form templates: XML files checked against ``form.rng`` (RELAX NG) and loaded into
plain dataclasses.

Templates come from the project (``gateway/forms/templates``) and, with ``--forms-dir``,
from the operator. Both are parsed as untrusted input: no DTD is loaded, no entity is
resolved, nothing is fetched from the network, and a document type declaration is
refused outright (it is the door to entity expansion and XXE; a template needs none).
A broken template stops the start with an error naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

from lxml import etree

NS = "urn:videoberatung:form:1"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
SCHEMA_PATH = Path(__file__).with_name("form.rng")
BUILTIN_DIR = Path(__file__).with_name("templates")

MAX_TEMPLATE_BYTES = 256 * 1024
MAX_FIELDS = 200

FIELD_TYPES = (
    "text",
    "multiline",
    "email",
    "phone",
    "date",
    "number",
    "iban",
    "choice",
    "select",
    "checkbox",
    "signature-name",
)
CHOICE_TYPES = ("choice", "select")
# Lengths a field gets unless its template says otherwise (what fits a bank's forms).
DEFAULT_MAX_LENGTH = {"multiline": 4000, "email": 254, "phone": 30, "signature-name": 100}
TEXT_MAX_LENGTH = 200


class TemplateError(ValueError):
    """A template that cannot be used: ``str()`` names the file and line."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"form template {where}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Text:
    """A text in German with an optional English translation."""

    de: str
    en: str | None = None

    def get(self, lang: str) -> str:
        return self.en if lang == "en" and self.en else self.de


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: Text


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str
    label: Text
    required: bool = False
    help: Text | None = None
    min_length: int | None = None
    max_length: int | None = None
    # numbers: Decimal bounds; dates: ISO strings or "today" (resolved when checking)
    min_value: str | None = None
    max_value: str | None = None
    decimals: int | None = None
    pattern: str | None = None
    pattern_message: Text | None = None
    options: tuple[Option, ...] = ()
    line: int | None = None

    def option_label(self, value: str, lang: str = "de") -> str:
        for option in self.options:
            if option.value == value:
                return option.label.get(lang)
        return value

    @property
    def effective_max_length(self) -> int:
        if self.max_length is not None:
            return self.max_length
        return DEFAULT_MAX_LENGTH.get(self.type, TEXT_MAX_LENGTH)


@dataclass(frozen=True, slots=True)
class Section:
    heading: Text | None  # None: fields outside any <section>
    description: tuple[Text, ...]
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    title: Text
    description: tuple[Text, ...]
    sections: tuple[Section, ...]
    source: str = ""
    version: int = 1

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(f for s in self.sections for f in s.fields)

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title.de,
            "title_en": self.title.en or self.title.de,
            "version": self.version,
            "fields": [
                {
                    "name": f.name,
                    "type": f.type,
                    "required": f.required,
                    "label": f.label.de,
                    **({"options": [o.value for o in f.options]} if f.options else {}),
                }
                for f in self.fields
            ],
        }


# -- parsing ----------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    # Untrusted XML (lxml FAQ, "How do I use lxml safely as a web-service endpoint?"):
    # no entity resolution, no DTD loading or validation, no network, no huge trees.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


@lru_cache(maxsize=1)
def _schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA_PATH), _parser()))


def parse_template(data: bytes, source: Path | str = "<template>") -> Template:
    """A template from the bytes of one XML file; :class:`TemplateError` if it is broken."""
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateError(source, None, f"larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if isinstance(exc.lineno, int) else None
        raise TemplateError(source, line, f"not well-formed XML: {exc.msg}") from None
    doc = root.getroottree()
    if doc.docinfo.doctype or doc.docinfo.internalDTD is not None:
        # <!DOCTYPE …> and <!ENTITY …>: what XXE and "billion laughs" need.
        raise TemplateError(source, 1, "a document type declaration (DOCTYPE) is not allowed")
    for node in root.iter():
        if not isinstance(node.tag, str):  # an entity reference left unresolved
            raise TemplateError(source, node.sourceline, "entity references are not allowed")
    schema = _schema()
    if not schema.validate(doc):
        error = schema.error_log.last_error
        line = getattr(error, "line", None)
        message = getattr(error, "message", None) or "does not match form.rng"
        hint = _explain(root, line)
        raise TemplateError(source, line, f"{hint} ({message})" if hint else message)
    return _build(root, source)


_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
_FORM_ID = re.compile(r"[a-z][a-z0-9\-]{0,47}")


def _explain(root: etree._Element, line: int | None) -> str | None:
    """What libxml2's terse RELAX NG message ("Element field failed to validate
    attributes") means for the element on ``line``, in words an operator can act on."""
    for el in root.iter():
        if not isinstance(el.tag, str) or el.sourceline != line:
            continue
        if el.tag == _q("form") and not _FORM_ID.fullmatch(el.get("id", "")):
            return f"form id {el.get('id', '')!r} must match [a-z][a-z0-9-]{{0,47}}"
        if el.tag != _q("field"):
            return f"<{etree.QName(el).localname}> is not allowed here"
        name = el.get("name", "")
        if not _NAME.fullmatch(name):
            return f"field name {name!r} must match [a-z][a-z0-9_]{{0,47}}"
        kind = el.get("type", "")
        if kind not in FIELD_TYPES:
            return f"field {name!r}: type {kind!r} is not one of {', '.join(FIELD_TYPES)}"
        if el.get("required") not in (None, "true", "false", "1", "0"):
            return f"field {name!r}: required must be true or false"
        if el.find(_q("label")) is None:
            return f"field {name!r} has no <label>"
        return (
            f"field {name!r}: its elements must come in the order label, help, length, "
            "range, pattern, message, option (docs/forms.md)"
        )
    return None


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _texts(parent: etree._Element, tag: str) -> list[Text]:
    """Elements ``tag`` under ``parent`` joined per meaning: each German text, with the
    English one that follows it (by position among the English ones)."""
    german: list[str] = []
    english: list[str] = []
    for el in parent.findall(_q(tag)):
        text = " ".join((el.text or "").split())
        (english if el.get(XML_LANG) == "en" else german).append(text)
    return [Text(de, english[i] if i < len(english) else None) for i, de in enumerate(german)]


def _one_text(parent: etree._Element, tag: str, source: Path | str) -> Text:
    texts = _texts(parent, tag)
    if not texts:
        raise TemplateError(source, parent.sourceline, f"<{tag}> in German is missing")
    if len(texts) > 1:
        raise TemplateError(source, parent.sourceline, f"more than one German <{tag}>")
    return texts[0]


def _decimal(value: str, source: Path | str, line: int | None) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise TemplateError(source, line, f"{value!r} is not a number") from None


def _check_bounds(f: Field, source: Path | str) -> None:
    if f.min_length is not None and f.max_length is not None and f.min_length > f.max_length:
        raise TemplateError(source, f.line, f"field {f.name!r}: length min > max")
    if f.min_value is None and f.max_value is None and f.decimals is None:
        return
    if f.type == "number":
        lo = _decimal(f.min_value, source, f.line) if f.min_value is not None else None
        hi = _decimal(f.max_value, source, f.line) if f.max_value is not None else None
        if lo is not None and hi is not None and lo > hi:
            raise TemplateError(source, f.line, f"field {f.name!r}: range min > max")
    elif f.type == "date":
        if f.decimals is not None:
            raise TemplateError(source, f.line, f"field {f.name!r}: decimals on a date")
        for bound in (f.min_value, f.max_value):
            if bound is not None and bound != "today" and not _ISO_DATE.fullmatch(bound):
                raise TemplateError(source, f.line, f"field {f.name!r}: {bound!r} is no date")
    else:
        raise TemplateError(
            source, f.line, f"field {f.name!r}: <range> applies to number and date fields only"
        )


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _field(el: etree._Element, source: Path | str) -> Field:
    line = el.sourceline
    name = el.get("name", "")
    kind = el.get("type", "")
    length = el.find(_q("length"))
    bounds = el.find(_q("range"))
    pattern_el = el.find(_q("pattern"))
    pattern = pattern_el.text if pattern_el is not None else None
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise TemplateError(
                source,
                pattern_el.sourceline if pattern_el is not None else line,
                f"bad pattern: {exc}",
            ) from None
    options = tuple(
        Option(o.get("value", ""), Text(" ".join((o.text or "").split()), o.get("label-en")))
        for o in el.findall(_q("option"))
    )
    if kind in CHOICE_TYPES and not options:
        raise TemplateError(source, line, f"field {name!r} of type {kind} needs <option>s")
    if kind not in CHOICE_TYPES and options:
        raise TemplateError(source, line, f"field {name!r}: <option> only on choice/select")
    if len({o.value for o in options}) != len(options):
        raise TemplateError(source, line, f"field {name!r}: option values must be unique")
    if pattern is not None and kind not in ("text", "phone", "email", "multiline"):
        raise TemplateError(source, line, f"field {name!r}: <pattern> applies to text fields")
    helps = _texts(el, "help")
    messages = _texts(el, "message")
    f = Field(
        name=name,
        type=kind,
        label=_one_text(el, "label", source),
        required=el.get("required") in ("true", "1"),
        help=helps[0] if helps else None,
        min_length=int(length.get("min")) if length is not None and length.get("min") else None,
        max_length=int(length.get("max")) if length is not None and length.get("max") else None,
        min_value=bounds.get("min") if bounds is not None else None,
        max_value=bounds.get("max") if bounds is not None else None,
        decimals=int(bounds.get("decimals"))
        if bounds is not None and bounds.get("decimals")
        else None,
        pattern=pattern,
        pattern_message=messages[0] if messages else None,
        options=options,
        line=line,
    )
    _check_bounds(f, source)
    return f


def _build(root: etree._Element, source: Path | str) -> Template:
    sections: list[Section] = []
    loose: list[Field] = []
    for child in root:
        if child.tag == _q("field"):
            loose.append(_field(child, source))
        elif child.tag == _q("section"):
            if loose:
                sections.append(Section(None, (), tuple(loose)))
                loose = []
            sections.append(
                Section(
                    _one_text(child, "heading", source),
                    tuple(_texts(child, "description")),
                    tuple(_field(f, source) for f in child.findall(_q("field"))),
                )
            )
    if loose:
        sections.append(Section(None, (), tuple(loose)))
    template = Template(
        id=root.get("id", ""),
        title=_one_text(root, "title", source),
        description=tuple(_texts(root, "description")),
        sections=tuple(sections),
        source=str(source),
        version=int(root.get("version", "1")),
    )
    seen: dict[str, Field] = {}
    for f in template.fields:
        if f.name in seen:
            raise TemplateError(source, f.line, f"field name {f.name!r} used twice")
        seen[f.name] = f
    if len(seen) > MAX_FIELDS:
        raise TemplateError(source, None, f"more than {MAX_FIELDS} fields")
    return template


def load_file(path: Path) -> Template:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise TemplateError(path, None, f"cannot be read: {exc.strerror}") from None
    return parse_template(data, path)


class FormLibrary:
    """The templates an advisor may send: the built-in ones, then the operator's folder
    (``--forms-dir``), whose template replaces a built-in one with the same id."""

    def __init__(self, templates: dict[str, Template]) -> None:
        self.templates = templates

    @classmethod
    def load(cls, extra_dir: Path | None = None, *, builtin: bool = True) -> FormLibrary:
        templates: dict[str, Template] = {}
        folders = ([BUILTIN_DIR] if builtin else []) + ([extra_dir] if extra_dir else [])
        for folder in folders:
            if not folder.is_dir():
                raise TemplateError(folder, None, "the forms folder does not exist")
            local: dict[str, Path] = {}
            for path in sorted(folder.glob("*.xml")):
                template = load_file(path)
                if template.id in local:
                    raise TemplateError(
                        path, None, f"form id {template.id!r} is also used by {local[template.id]}"
                    )
                local[template.id] = path
                templates[template.id] = template
        return cls(templates)

    def get(self, template_id: str) -> Template | None:
        return self.templates.get(template_id)

    def list(self) -> list[Template]:
        return sorted(self.templates.values(), key=lambda t: t.title.de.casefold())
