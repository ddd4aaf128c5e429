"""Invitations by e-mail (issue 17 item 5, docs/web.md "Invitations by e-mail").

The advisor types the customer's address on the overview; the gateway writes one message
with the customer's link and, when the consultation has an appointment, the appointment
as an iCalendar attachment (RFC 5545, ``METHOD:PUBLISH``: an entry to add, no replies
expected), and hands it to the bank's SMTP relay (``--smtp``). The PIN is never in the
message: banks send it on a second channel, here the advisor tells it by phone.

The address is used for this one message and forgotten: it is not stored, not put in any
log (:func:`mask_address` at most), not kept in the consultation. The message lives in
memory only while it is sent.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from html import escape
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar

from gateway.config import Bank, SmtpSettings

log = logging.getLogger(__name__)

# The times in the text are the bank's (Germany); the .ics carries UTC, which every
# calendar shows in its owner's zone (RFC 5545 §3.3.5, form #2), so no VTIMEZONE is needed.
BERLIN = ZoneInfo("Europe/Berlin")
APPOINTMENT_MINUTES = 60
SMTP_TIMEOUT = 20.0
# RFC 5321 §4.5.3.1: a path is at most 256 octets; a local part 64, a domain 255.
MAX_ADDRESS_LENGTH = 254
# What a person types as an address (not the whole of RFC 5322: no quoted local parts,
# no comments, no IP literals); a line break or a comma never gets through.
_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
)


class InvitationError(Exception):
    """The message could not be handed to the relay; ``reason`` says why in one word
    (``unreachable``, ``refused``, ``recipient``), for the page's own wording."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def valid_address(text: str) -> str | None:
    """The address as typed (trimmed) if it looks like one a relay accepts, else None."""
    text = text.strip()
    if len(text) > MAX_ADDRESS_LENGTH or _ADDRESS.fullmatch(text) is None:
        return None
    domain = text.rpartition("@")[2]
    if "." not in domain or ".." in text:
        return None
    return text


def mask_address(address: str) -> str:
    """``m***@e***.example``: enough to tell two log lines apart, not to write to anyone."""
    local, _, domain = address.partition("@")
    host, _, tld = domain.rpartition(".")
    return f"{local[:1]}***@{host[:1]}***.{tld}"


@dataclass(frozen=True, slots=True)
class Invitation:
    """What goes into one message (nothing of it is kept)."""

    to: str
    link: str
    lang: str  # "de" or "en": the advisor's page language
    consultation_id: str
    host: str  # the gateway's host name, for the iCalendar UID and the Message-ID
    appointment: float | None = None
    advisor_name: str | None = None


_TEXT = {
    "de": {
        "subject": "Einladung zur Video-Beratung",
        # short enough for one header line (RFC 5322 §2.1.1: 78 characters)
        "subject_at": "Einladung zur Video-Beratung am {when}",
        "subject_date": "%d.%m.%Y um %H:%M Uhr",
        "greeting": "Guten Tag,",
        "invited": "Sie sind zu einer Video-Beratung eingeladen.",
        "invited_by": "{name} lädt Sie zu einer Video-Beratung ein.",
        "bank": "Ihre Bank: {bank}.",
        "when": "Termin: {when}",
        "join": "So nehmen Sie teil: Öffnen Sie zum Termin diesen Link in Ihrem Browser:",
        "pin": (
            "Zum Eintreten brauchen Sie eine PIN. Aus Sicherheitsgründen steht sie nicht "
            "in dieser E-Mail: Ihre Ansprechperson teilt sie Ihnen telefonisch mit."
        ),
        "nothing": (
            "Sie brauchen nichts zu installieren. Kamera und Mikrofon bleiben aus, bis "
            "Sie sie selbst einschalten; Sie können auch nur per Chat teilnehmen."
        ),
        "calendar": "Den Termin finden Sie im Anhang zum Eintragen in Ihren Kalender.",
        "bye": "Mit freundlichen Grüßen",
        "imprint": "Impressum",
        "privacy": "Datenschutz",
        "phone": "Telefon",
        "summary": "Video-Beratung",
        "description": (
            "Link zur Video-Beratung: {link}\nDie PIN teilt Ihnen Ihre Ansprechperson "
            "telefonisch mit."
        ),
        "date": "{weekday}, {day}. {month} {year}, {time} Uhr",
        "weekdays": "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag",
        "months": (
            "Januar Februar März April Mai Juni Juli August September Oktober November Dezember"
        ),
    },
    "en": {
        "subject": "Invitation to a video consultation",
        "subject_at": "Invitation to a video consultation on {when}",
        "subject_date": "%d/%m/%Y at %H:%M",
        "greeting": "Hello,",
        "invited": "You are invited to a video consultation.",
        "invited_by": "{name} invites you to a video consultation.",
        "bank": "Your bank: {bank}.",
        "when": "Date: {when}",
        "join": "How to take part: at the appointed time, open this link in your browser:",
        "pin": (
            "To enter you need a PIN. For your security it is not in this e-mail: your "
            "advisor will tell you by phone."
        ),
        "nothing": (
            "There is nothing to install. Camera and microphone stay off until you switch "
            "them on; you can also take part by chat only."
        ),
        "calendar": "The appointment is attached for your calendar.",
        "bye": "Kind regards",
        "imprint": "Legal notice",
        "privacy": "Privacy",
        "phone": "Phone",
        "summary": "Video consultation",
        "description": (
            "Link to the video consultation: {link}\nYour advisor tells you the PIN by phone."
        ),
        "date": "{weekday}, {day} {month} {year}, {time} (German time)",
        "weekdays": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
        "months": (
            "January February March April May June July August September October November December"
        ),
    },
}


def _when(ts: float, lang: str) -> str:
    words = _TEXT[lang]
    local = datetime.fromtimestamp(ts, BERLIN)
    return words["date"].format(
        weekday=words["weekdays"].split()[local.weekday()],
        day=local.day,
        month=words["months"].split()[local.month - 1],
        year=local.year,
        time=local.strftime("%H:%M"),
    )


def _signature(bank: Bank, words: dict[str, str]) -> list[str]:
    lines = [bank.name] if bank.name else []
    if bank.address:
        lines.append(bank.address)
    if bank.phone:
        lines.append(f"{words['phone']}: {bank.phone}")
    if bank.email:
        lines.append(bank.email)
    if bank.website:
        lines.append(bank.website)
    if bank.imprint:
        lines.append(f"{words['imprint']}: {bank.imprint}")
    if bank.privacy:
        lines.append(f"{words['privacy']}: {bank.privacy}")
    return lines


def calendar_entry(invitation: Invitation, bank: Bank) -> bytes | None:
    """The appointment as an iCalendar object (RFC 5545), None without an appointment.

    ``METHOD:PUBLISH`` (RFC 5546 §3.2.1): the customer adds it to the calendar, nobody
    expects a reply (``REQUEST`` would need an organizer whose mailbox takes replies).
    Start and end in UTC; the UID is the consultation's, so a second invitation for the
    same consultation updates the entry instead of adding another."""
    if invitation.appointment is None:
        return None
    words = _TEXT[invitation.lang]
    start = datetime.fromtimestamp(invitation.appointment, UTC)
    cal = icalendar.Calendar()
    cal.add("prodid", "-//Video-Beratung gateway//invitation//DE")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    event = icalendar.Event()
    event.add("uid", f"{invitation.consultation_id}@{invitation.host}")
    event.add("dtstamp", datetime.now(UTC))
    event.add("dtstart", start)
    event.add("dtend", start + timedelta(minutes=APPOINTMENT_MINUTES))
    summary = words["summary"] + (f" – {bank.name}" if bank.name else "")
    event.add("summary", summary)
    event.add("description", words["description"].format(link=invitation.link))
    event.add("location", invitation.link)
    event.add("url", invitation.link)
    cal.add_component(event)
    return cal.to_ical()


def compose(invitation: Invitation, bank: Bank, sender: str) -> EmailMessage:
    """The message: plain text and an HTML alternative in the bank's colour, the bank's
    logo inline (PNG/JPEG/GIF: mail readers do not show SVG), the .ics attached."""
    lang = invitation.lang if invitation.lang in _TEXT else "de"
    words = _TEXT[lang]
    when = _when(invitation.appointment, lang) if invitation.appointment is not None else None
    intro = (
        words["invited_by"].format(name=invitation.advisor_name)
        if invitation.advisor_name
        else words["invited"]
    )
    if bank.name:
        intro += " " + words["bank"].format(bank=bank.name)
    paragraphs = [words["greeting"], intro]
    if when:
        paragraphs.append(words["when"].format(when=when))
    paragraphs += [words["join"] + "\n" + invitation.link, words["pin"], words["nothing"]]
    if when:
        paragraphs.append(words["calendar"])
    signature = _signature(bank, words)
    text = "\n\n".join(paragraphs) + "\n\n" + "\n".join([words["bye"], *signature]) + "\n"

    msg = EmailMessage()
    if invitation.appointment is not None:
        local = datetime.fromtimestamp(invitation.appointment, BERLIN)
        msg["Subject"] = words["subject_at"].format(when=local.strftime(words["subject_date"]))
    else:
        msg["Subject"] = words["subject"]
    msg["From"] = sender
    msg["To"] = invitation.to
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=invitation.host)
    msg["Content-Language"] = lang
    # RFC 3834 §5: an automated message; no auto-replies (out of office) back to the relay
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(_html(lang, paragraphs, invitation.link, bank, signature), subtype="html")
    logo = _inline_logo(bank)
    if logo is not None:
        data, maintype, subtype = logo
        html_part = msg.get_body(preferencelist=("html",))
        assert isinstance(html_part, EmailMessage)
        html_part.add_related(data, maintype, subtype, cid="<logo@videoberatung>")
    ics = calendar_entry(invitation, bank)
    if ics is not None:
        msg.add_attachment(
            ics,
            maintype="text",
            subtype="calendar",
            filename="termin.ics" if lang == "de" else "appointment.ics",
            params={"method": "PUBLISH"},
        )
    return msg


def _inline_logo(bank: Bank) -> tuple[bytes, str, str] | None:
    media_type = bank.logo_type()
    if media_type is None or media_type == "image/svg+xml" or media_type == "image/webp":
        return None
    maintype, _, subtype = media_type.partition("/")
    return Path(bank.logo).read_bytes(), maintype, subtype


def _html(lang: str, paragraphs: list[str], link: str, bank: Bank, signature: list[str]) -> str:
    palette = bank.palette()
    color = palette["primary"] if palette else "#0b5cab"
    head = (
        '<img src="cid:logo@videoberatung" alt="' + escape(bank.name or "Logo") + '" height="40">'
        if _inline_logo(bank) is not None
        else escape(bank.name or _TEXT[lang]["summary"])
    )
    body = []
    for paragraph in paragraphs:
        if link in paragraph:
            before = paragraph.replace(link, "").strip()
            body.append(
                f"<p>{escape(before)}<br>"
                f'<a href="{escape(link)}" style="color:{color};font-weight:bold">'
                f"{escape(link)}</a></p>"
            )
        else:
            body.append(f"<p>{escape(paragraph)}</p>")
    sign = "<br>".join(escape(line) for line in signature)
    return (
        f'<!doctype html><html lang="{lang}"><body style="font-family:sans-serif;color:#1b1f24">'
        f'<div style="background:{color};color:#fff;padding:12px 16px;font-size:18px;'
        f'font-weight:bold">{head}</div>'
        f'<div style="padding:8px 16px">{"".join(body)}'
        f"<p>{escape(_TEXT[lang]['bye'])}<br>{sign}</p></div></body></html>"
    )


def sender_address(smtp: SmtpSettings, bank: Bank, host: str) -> str:
    """``From``: the configured one, else the bank's name with a no-reply address on
    the gateway's host."""
    address = smtp.sender or f"no-reply@{host}"
    if "<" in address:
        return address
    return str(Address(display_name=bank.name or "Video-Beratung", addr_spec=address))


async def send(smtp: SmtpSettings, message: EmailMessage) -> None:
    """Hand ``message`` to the relay, off the event loop (smtplib blocks)."""
    await asyncio.to_thread(_send_blocking, smtp, message)


def _send_blocking(smtp: SmtpSettings, message: EmailMessage) -> None:
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT) as client:
            client.ehlo()
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise InvitationError("recipient", "the relay refused the recipient") from exc
    except (smtplib.SMTPException, ssl.SSLError) as exc:
        # only the kind and code: a relay's text may quote the recipient's address
        code = getattr(exc, "smtp_code", "")
        raise InvitationError(
            "refused", f"the relay refused the message ({type(exc).__name__} {code})"
        ) from None
    except OSError as exc:
        raise InvitationError(
            "unreachable", f"the relay cannot be reached ({type(exc).__name__})"
        ) from None
