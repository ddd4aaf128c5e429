"""The Flash client's SWF: where it lives, how it is built, and how a shipped copy is
proven current.

The SWF is built from Haxe source (``web/flash/``) with Debian's ``haxe``. ``make run``
serves the committed copy (``web/static/flash/videoberatung.swf``), so a fresh machine
needs no Haxe; ``make swf`` rebuilds it. Haxe's output differs from build to build (a
random boot class name), so the copy is tied to its sources by a SHA-256 over the
sources (``SOURCE_HASH_FILE``), which the tests recompute.

The sources are every file under ``web/flash/`` plus the ``swf.*`` strings of each
language table (``web/static/i18n/*.json``): the Haxe build reads exactly those strings
at compile time (``web/flash/src/Strings.hx``), and no other key can change the SWF.

    python -m web.swf build [OUT]   # build (default: the shipped copy) and write the hash
    python -m web.swf hash          # print the current source hash
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import quoteattr

from gateway.config import Config
from gateway.consultation import SCREEN
from web.i18n import I18N_DIR, LANGUAGES
from web.links import RTMP_APP

WEB_DIR = Path(__file__).resolve().parent
FLASH_SRC = WEB_DIR / "flash"
SWF_PATH = WEB_DIR / "static" / "flash" / "videoberatung.swf"
SOURCE_HASH_FILE = SWF_PATH.with_name(SWF_PATH.name + ".sources.sha256")
# Served at /static/flash/videoberatung.swf (the static route).
SWF_URL_PATH = "/static/flash/videoberatung.swf"
STRING_PREFIX = "swf."


def source_files() -> list[Path]:
    return sorted(
        p
        for p in FLASH_SRC.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.parts)
    )


def source_hash() -> str:
    """SHA-256 over the SWF's sources: each file's path and bytes, then each language's
    ``swf.*`` strings as canonical JSON."""
    digest = hashlib.sha256()
    for path in source_files():
        name = path.relative_to(FLASH_SRC).as_posix().encode()
        data = path.read_bytes()
        digest.update(b"file\0%s\0%d\0" % (name, len(data)))
        digest.update(data)
    for lang in LANGUAGES:
        table = json.loads((I18N_DIR / f"{lang}.json").read_text(encoding="utf-8"))
        strings = {k: v for k, v in table.items() if k.startswith(STRING_PREFIX)}
        blob = json.dumps(strings, sort_keys=True, ensure_ascii=False).encode()
        digest.update(b"strings\0%s\0%d\0" % (lang.encode(), len(blob)))
        digest.update(blob)
    return digest.hexdigest()


def shipped_hash() -> str | None:
    """The source hash recorded when the shipped SWF was built."""
    try:
        return SOURCE_HASH_FILE.read_text(encoding="ascii").split()[0]
    except (FileNotFoundError, IndexError):
        return None


def build(out: Path = SWF_PATH, *, haxe: str | None = None) -> Path:
    """Compile the SWF to ``out``; with the default ``out`` also record the source hash."""
    compiler = haxe or shutil.which("haxe")
    if compiler is None:
        raise RuntimeError("haxe is not installed (Debian: apt-get install haxe; `make deps`)")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [compiler, "build.hxml", "--swf", str(out)],
        cwd=FLASH_SRC,
        check=True,
        timeout=300,
    )
    if out == SWF_PATH:
        SOURCE_HASH_FILE.write_text(f"{source_hash()}  web/flash + swf.* strings\n")
    return out


def flash_vars(
    config: Config,
    *,
    token: str,
    lang: str,
    advisor_name: str | None = None,
    phone_code: str | None = None,
) -> str:
    """The SWF's FlashVars (``application/x-www-form-urlencoded``, as Flash parses them).

    Connection order as FMS clients do (docs/architecture.md, "Facts the code relies on"):
    ``rtmp`` first, then ``rtmpt`` on the web port. The token goes only where the page
    went: when the page is
    HTTPS (``--tls-cert``, or ``--public-url https://…`` behind a TLS proxy) no plain
    ``rtmp://`` is offered at all (issues 12 and 18) -- ``rtmp`` is native RTMPS on
    ``--rtmps-port`` when the gateway holds the certificate, else left out, and the
    tunnel is ``rtmps://`` (which Flash speaks as RTMPT over HTTPS). Over plain HTTP,
    ``rtmp`` is left out when plain RTMP is switched off (``--rtmp-port 0``). ``base`` is
    our own origin: the SWF opens only document and form URLs below it. ``advisor``: the
    advisor's display name (``Consultation.owner_display_name``), only when there is one;
    the SWF then names the advisor where it would say "Ihre Ansprechperson".
    ``phone``/``phonecode``: the dial-in number and the consultation's phone code when the
    telephone leg is on (docs/phone.md; the page beside the SWF shows them as well).
    """
    origin = urlsplit(config.base_url())
    host = urlsplit(config.rtmp_base()).netloc.rsplit(":", 1)[0]
    first: str | None = None
    if config.tls and config.rtmps_port:
        first = f"rtmps://{host}:{config.rtmps_port}/{RTMP_APP}"
    elif origin.scheme != "https" and config.rtmp_port:
        first = f"{config.rtmp_base()}/{RTMP_APP}"
    tunnel_scheme = "rtmps" if origin.scheme == "https" else "rtmpt"
    values = {
        "token": token,
        **({"rtmp": first} if first else {}),
        "rtmpt": f"{tunnel_scheme}://{origin.netloc}/{RTMP_APP}",
        "publish": "customer",
        "play": "advisor",
        # the advisor's shared screen, a second stream the SWF plays (docs/web.md)
        "screen": SCREEN,
        "base": f"{origin.scheme}://{origin.netloc}",
        "lang": lang,
        **({"advisor": advisor_name} if advisor_name else {}),
        **({"phone": config.phone_number, "phonecode": phone_code} if phone_code else {}),
        # the bank's look (docs/web.md "The bank's look"): primary colour as rrggbb and
        # the bank's name in the title bar; absent, the SWF keeps its neutral blue
        **_brand_vars(config),
    }
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in values.items())


def _brand_vars(config: Config) -> dict[str, str]:
    bank = config.bank
    values: dict[str, str] = {}
    palette = bank.palette()
    if palette is not None:
        values["color"] = palette["primary"].removeprefix("#")
    if bank.name:
        values["bank"] = bank.name
    return values


def crossdomain_policy(config: Config) -> str:
    """``/crossdomain.xml``: Flash Player's cross-domain policy, allowing only the
    gateway's own host (from ``--public-url``, else ``--host``). No DOCTYPE: its DTD URL
    would name a third-party site, and Flash Player does not need it."""
    host = urlsplit(config.base_url()).hostname or "127.0.0.1"
    secure = ' secure="true"' if config.tls else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<cross-domain-policy>\n"
        '  <site-control permitted-cross-domain-policies="master-only"/>\n'
        f"  <allow-access-from domain={quoteattr(host)}{secure}/>\n"
        "</cross-domain-policy>\n"
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["hash"]:
        print(source_hash())
        return 0
    if argv[:1] == ["build"] and len(argv) <= 2:
        out = build(Path(argv[1]) if len(argv) == 2 else SWF_PATH)
        print(f"built {out}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
