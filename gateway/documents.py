"""Documents of a consultation: uploads checked by content, stored under random names,
deleted with the consultation (terms of use: "forms and uploaded documents … deleted
at the end").

Layout on disk: ``<data-dir>/sessions/<consultation id>/<random hex>``. Nothing the
user chose ends up on disk: the original file name, type and checksum live in memory
only (:class:`Document`), so a crash leaves anonymous blobs that the start-up sweep
(:meth:`DocumentStore.sweep`) deletes; consultations live in memory as well, so nothing
under ``sessions/`` outlives the process that wrote it.

This module does blocking file I/O and is meant to be called from a worker thread
(``asyncio.to_thread``), except for the few calls marked as cheap (directory creation,
``register``, ``remove_session`` and the ticket book), which the event loop may make.

One-time download tickets exist for clients that cannot send a bearer token: Flash's
``navigateToURL`` hands the URL to the browser, which knows neither the token nor the
page's cookie. A ticket names one document of one consultation, may be used once and
expires after ``ticket_ttl`` seconds (default 2 minutes).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gateway.tickets import TicketBook

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 120
SNIFF_BYTES = 4096  # enough for every signature below

# -- file names ----------------------------------------------------------------------------

# Characters Windows refuses in file names (and the path separators of every system).
_FORBIDDEN = re.compile(r'[<>:"/\\|?*]')
_SPACES = re.compile(r"\s+")
# Device names Windows reserves in any directory, with or without an extension.
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?", re.IGNORECASE)


def _drop_invisible(text: str) -> str:
    # Cc: control characters (NUL, CR, LF, ESC …); Cf: format characters, among them the
    # bidi overrides (U+202E turns "fdp.exe" into "exe.pdf" on screen); Cs/Co/Cn: lone
    # surrogates, private use and unassigned code points have no business in a name.
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")


def sanitize_filename(raw: str | None, fallback: str = "Dokument") -> str:
    """A harmless display and download name for what a client called its file.

    Only the last path component counts (browsers on Windows may send ``C:\\…\\a.pdf``;
    ``../../etc/passwd`` becomes ``passwd``); control and format characters go,
    characters Windows forbids become ``_``, leading dots and trailing dots/spaces go
    (no hidden files, no ``..``), the length is capped at ``MAX_NAME_CHARS`` keeping
    the extension, and reserved device names (``CON``, ``NUL`` …) get a ``_`` prefix.
    The result is never empty, never used as a path on disk, and sanitising it again
    changes nothing.
    """
    text = unicodedata.normalize("NFC", raw or "")
    text = re.split(r"[/\\]", text)[-1]
    text = _drop_invisible(text)
    text = _FORBIDDEN.sub("_", text)
    text = _SPACES.sub(" ", text).strip()
    text = text.lstrip(". ").rstrip(". ")
    if len(text) > MAX_NAME_CHARS:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= 10 and stem:
            text = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            text = text[:MAX_NAME_CHARS]
        text = text.rstrip(". ")
    if not text:
        text = fallback
    if _RESERVED.fullmatch(text):
        text = "_" + text
    # NFC of the result may differ when a combining mark now follows a new neighbour.
    normal = unicodedata.normalize("NFC", text)
    return normal if normal == text else sanitize_filename(normal, fallback)


# -- content types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileType:
    content_type: str
    extensions: tuple[str, ...]  # the first is added when the name has none of them


PDF = FileType("application/pdf", ("pdf",))
PNG = FileType("image/png", ("png",))
JPEG = FileType("image/jpeg", ("jpg", "jpeg"))
GIF = FileType("image/gif", ("gif",))
WEBP = FileType("image/webp", ("webp",))
DOCX = FileType(
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document", ("docx",)
)
XLSX = FileType("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ("xlsx",))
PPTX = FileType(
    "application/vnd.openxmlformats-officedocument.presentationml.presentation", ("pptx",)
)
DOC = FileType("application/msword", ("doc",))
XLS = FileType("application/vnd.ms-excel", ("xls",))
PPT = FileType("application/vnd.ms-powerpoint", ("ppt",))
# ODF: the "mimetype" member names the type (OASIS ODF 1.2 part 3, §3.3).
ODF_TYPES = {
    "application/vnd.oasis.opendocument.text": ("odt",),
    "application/vnd.oasis.opendocument.spreadsheet": ("ods",),
    "application/vnd.oasis.opendocument.presentation": ("odp",),
    "application/vnd.oasis.opendocument.graphics": ("odg",),
}

# Every type an upload may have, in the order a page lists them: the file chooser's
# ``accept`` list is built from this (web/documents.py), so the page and the content
# check cannot disagree.
ACCEPTED_TYPES: tuple[FileType, ...] = (
    PDF,
    JPEG,
    PNG,
    GIF,
    WEBP,
    DOCX,
    XLSX,
    PPTX,
    DOC,
    XLS,
    PPT,
    *(FileType(mimetype, exts) for mimetype, exts in ODF_TYPES.items()),
)

_OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")  # Compound File Binary ([MS-CFB] 2.2)
_ZIP_MAGIC = (b"PK\x03\x04",)

# Office formats are ZIP containers: the local header signature says only "zip", the
# members decide. Only what a bank's customer sends (letters, statements, scans) is
# accepted; anything else (archives, executables, HTML, SVG with script) is refused.


def sniff_head(head: bytes) -> FileType | str | None:
    """The type from the first bytes: a FileType, ``"zip"``/``"ole"`` when the container
    must be looked into, or None (not a type we accept)."""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_OLE_MAGIC):
        return "ole"
    return None


def _sniff_zip(path: Path) -> FileType | None:
    """OOXML (ECMA-376 part 2: ``[Content_Types].xml`` and a main part under ``word/``,
    ``xl/`` or ``ppt/``) or ODF (a ``mimetype`` member). Only the central directory and
    the tiny ``mimetype`` member are read; nothing is extracted."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "mimetype" in names:
                info = archive.getinfo("mimetype")
                if info.file_size > 100:
                    return None
                mimetype = archive.read(info).decode("ascii", "replace").strip()
                extensions = ODF_TYPES.get(mimetype)
                return FileType(mimetype, extensions) if extensions else None
            if "[Content_Types].xml" in names:
                for prefix, filetype in (("word/", DOCX), ("xl/", XLSX), ("ppt/", PPTX)):
                    if any(n.startswith(prefix) for n in names):
                        return filetype
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError):
        return None
    return None


def _sniff_ole(name: str) -> FileType:
    """Legacy Word/Excel/PowerPoint share one container format; telling them apart needs
    the directory stream, so the (sanitised) extension picks among the three and a
    file without one of theirs is served as a Word document."""
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    return {"xls": XLS, "ppt": PPT}.get(ext, DOC)


def sniff_file(path: Path, name: str) -> FileType | None:
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    kind = sniff_head(head)
    if kind == "zip":
        return _sniff_zip(path)
    if kind == "ole":
        return _sniff_ole(name)
    return kind if isinstance(kind, FileType) else None


def name_for_type(name: str, filetype: FileType) -> str:
    """The name with an extension matching its content: ``rechnung.exe`` holding a PDF
    is offered as ``rechnung.exe.pdf``, so nobody's file manager runs it."""
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    if ext in filetype.extensions:
        return name
    suffix = "." + filetype.extensions[0]
    return sanitize_filename(name[: MAX_NAME_CHARS - len(suffix)] + suffix)


# -- errors --------------------------------------------------------------------------------


class DocumentError(Exception):
    """An upload that is refused; ``status`` is the HTTP status that says why."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TooLarge(DocumentError):
    status = 413  # RFC 9110 §15.5.14 Content Too Large


class QuotaExceeded(DocumentError):
    # RFC 4918 §11.5: the server cannot store the representation. The consultation's
    # share is used up; a smaller file will not help, unlike with 413.
    status = 507


class UnsupportedType(DocumentError):
    status = 415


class SessionGone(DocumentError):
    status = 404


# -- the store -----------------------------------------------------------------------------


@dataclass(slots=True)
class Document:
    id: str
    name: str
    size: int
    sha256: str
    content_type: str
    sender: str  # the role that uploaded it ("advisor" / "customer")
    uploaded_at: float
    path: Path
    kind: str = "upload"  # or "form" (a filled form rendered by the gateway)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "from": self.sender,
            "kind": self.kind,
            "uploaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.uploaded_at)),
        }


@dataclass
class _SessionFiles:
    directory: Path
    documents: dict[str, Document] = field(default_factory=dict)
    reserved: int = 0  # bytes of uploads in progress (quota)

    @property
    def used(self) -> int:
        return sum(d.size for d in self.documents.values())


class Upload:
    """One file being received: written to a random name, hashed and counted on the way.

    ``write`` and ``finish`` block (disk); call them from a worker thread.
    """

    def __init__(self, store: DocumentStore, consultation_id: str, path: Path, fh: IO[bytes]):
        self.store = store
        self.consultation_id = consultation_id
        self.path = path
        self._fh: IO[bytes] | None = fh
        self._hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.limit = store.max_bytes

    def write(self, data: bytes, *, sniff: bool = True) -> None:
        with _disk_full_is_507():
            self._write(data, sniff=sniff)

    def _write(self, data: bytes, *, sniff: bool) -> None:
        if self._fh is None:
            raise SessionGone("The upload was cancelled.")
        self.size += len(data)
        if self.size > self.limit:
            if self.size > self.store.max_bytes:
                raise TooLarge(f"A document may be at most {self.store.max_bytes} bytes.")
            # The consultation's share, not the per-file limit, is what this ran into.
            raise QuotaExceeded(
                f"The consultation's document space is used up ({self.limit} bytes left)."
            )
        if sniff and len(self.head) < SNIFF_BYTES:
            self.head += data[: SNIFF_BYTES - len(self.head)]
            # Refuse early: no need to receive 20 MB of something we will never accept.
            if len(self.head) >= 16 and sniff_head(self.head) is None:
                raise UnsupportedType(_UNSUPPORTED)
        self._hash.update(data)
        self._fh.write(data)

    def close(self) -> str:
        """Close the file; its SHA-256 (hex)."""
        if self._fh is None:
            raise SessionGone("The upload was cancelled.")
        fh, self._fh = self._fh, None
        with _disk_full_is_507():
            fh.close()  # the last buffered bytes go to disk here
        return self._hash.hexdigest()

    def finish(self, raw_name: str | None) -> tuple[str, FileType, str]:
        """Close the file and check it: (sanitised name, type, sha256)."""
        sha256 = self.close()
        if self.size == 0:
            raise UnsupportedType("The file is empty.")
        name = sanitize_filename(raw_name)
        filetype = sniff_file(self.path, name)
        if filetype is None:
            raise UnsupportedType(_UNSUPPORTED)
        return name_for_type(name, filetype), filetype, sha256

    def abort(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        with contextlib.suppress(OSError):
            self.path.unlink()


_NO_SPACE = "The server has too little disk space left for documents."


@contextlib.contextmanager
def _disk_full_is_507() -> Iterator[None]:
    """The reservation should make this unreachable; if another writer filled the disk
    anyway, the upload is refused as any that does not fit (507), never a 500."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise QuotaExceeded(_NO_SPACE) from None
        raise


_UNSUPPORTED = (
    "Only PDF, PNG, JPEG, GIF, WebP and office documents (Word, Excel, PowerPoint, "
    "OpenDocument) are accepted; the type is checked by content, not by name."
)


class DocumentStore:
    """Every consultation's documents on this node, under ``root`` (``<data>/sessions``)."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        quota_bytes: int = 100 * 1024 * 1024,
        max_documents: int = 50,
        ticket_ttl: float = 120.0,
        min_free_bytes: int = 64 * 1024 * 1024,
        max_tickets: int = 4096,
        tickets_per_session: int = 256,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes
        self.max_documents = max_documents
        self.min_free_bytes = min_free_bytes
        self._sessions: dict[str, _SessionFiles] = {}
        # Uploads in progress, each holding a reservation of disk space up to its limit
        # (what it may still write: limit - size). begin_upload runs on the event loop,
        # so checking and reserving are one step: parallel uploads cannot all see the
        # same free space (issue 11, item 7).
        self._writing: set[Upload] = set()
        # Bounded per consultation (one participant minting in a loop only pushes out its
        # own consultation's oldest tickets) and overall.
        self.tickets = TicketBook(
            ticket_ttl, per_consultation=tickets_per_session, max_tickets=max_tickets
        )

    @property
    def ticket_ttl(self) -> float:
        return self.tickets.ttl

    # -- start-up -------------------------------------------------------------------------
    def sweep(self) -> int:
        """Delete every leftover under ``root`` (a crash's): consultations live in memory
        only, so at start-up nothing there belongs to anyone. Returns the entries removed."""
        removed = 0
        if not self.root.exists():
            return 0
        for entry in self.root.iterdir():
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed += 1
            except OSError:
                log.exception("could not remove leftover %s", entry.name)
        if removed:
            log.info("removed %d leftover consultation folder(s) from an earlier run", removed)
        return removed

    # -- uploads (cheap parts on the loop, I/O in a thread) ---------------------------------
    def begin_upload(self, consultation_id: str, declared_size: int | None = None) -> Upload:
        """Reserve room and open a fresh file. Cheap (mkdir + open); may run on the loop."""
        files = self._sessions.get(consultation_id)
        if files is None:
            directory = self.root / _safe_segment(consultation_id)
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            files = self._sessions[consultation_id] = _SessionFiles(directory)
        if len(files.documents) >= self.max_documents:
            raise QuotaExceeded(
                f"This consultation already holds {self.max_documents} documents; "
                "no more can be stored."
            )
        remaining = self.quota_bytes - files.used - files.reserved
        if remaining <= 0 or (declared_size is not None and declared_size > remaining):
            raise QuotaExceeded(
                f"The consultation's document space is used up ({remaining} bytes left)."
            )
        limit = min(self.max_bytes, max(0, remaining))
        # Reserve the most this upload may write (the declared size when known), on
        # top of what running uploads may still write and the floor.
        need = limit if declared_size is None else min(limit, declared_size)
        try:
            free = shutil.disk_usage(files.directory).free
        except OSError:
            free = 0  # cannot tell: refuse rather than risk filling the disk
        if free - self.disk_reserved - need < self.min_free_bytes:
            raise QuotaExceeded(_NO_SPACE)
        path = files.directory / secrets.token_hex(16)
        with _disk_full_is_507():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        upload = Upload(self, consultation_id, path, os.fdopen(fd, "wb"))
        upload.limit = need
        files.reserved += upload.limit
        self._writing.add(upload)
        return upload

    @property
    def disk_reserved(self) -> int:
        """Bytes the uploads in progress may still write (their reservations)."""
        return sum(max(0, u.limit - u.size) for u in self._writing)

    def register(
        self,
        upload: Upload,
        name: str,
        filetype: FileType,
        sha256: str,
        sender: str,
        kind: str = "upload",
    ) -> Document:
        """Make a finished upload a document (cheap; on the loop)."""
        self._writing.discard(upload)
        files = self._sessions.get(upload.consultation_id)
        if files is None:
            upload.abort()  # the consultation ended while the file was arriving
            raise SessionGone("The consultation has ended.")
        files.reserved = max(0, files.reserved - upload.limit)
        doc = Document(
            id=secrets.token_urlsafe(9),
            name=name,
            size=upload.size,
            sha256=sha256,
            content_type=filetype.content_type,
            sender=sender,
            uploaded_at=time.time(),
            path=upload.path,
            kind=kind,
        )
        files.documents[doc.id] = doc
        return doc

    def release(self, upload: Upload) -> None:
        """Give back an aborted upload's reservation (cheap; on the loop)."""
        self._writing.discard(upload)
        files = self._sessions.get(upload.consultation_id)
        if files is not None:
            files.reserved = max(0, files.reserved - upload.limit)

    def add_generated(
        self,
        consultation_id: str,
        name: str,
        data: bytes,
        content_type: str,
        sender: str,
        kind: str = "form",
    ) -> Document:
        """Store a document the gateway made itself (a filled form as HTML or PDF): no
        content check, same place, same end. Blocking; call from a thread."""
        upload = self.begin_upload(consultation_id, len(data))
        try:
            upload.write(data, sniff=False)  # ours: the type is given, not sniffed
            sha256 = upload.close()
        except BaseException:
            self.release(upload)
            upload.abort()
            raise
        clean = sanitize_filename(name)
        ext = clean.rpartition(".")[2].lower() if "." in clean else ""
        return self.register(
            upload,
            clean,
            FileType(content_type, (ext,) if ext else ("bin",)),
            sha256,
            sender,
            kind,
        )

    # -- reading ------------------------------------------------------------------------------
    def list(self, consultation_id: str) -> list[Document]:
        files = self._sessions.get(consultation_id)
        if files is None:
            return []
        return sorted(files.documents.values(), key=lambda d: d.uploaded_at)

    def get(self, consultation_id: str, document_id: str) -> Document | None:
        files = self._sessions.get(consultation_id)
        return None if files is None else files.documents.get(document_id)

    def used_by(self, consultation_id: str) -> bool:
        files = self._sessions.get(consultation_id)
        return bool(files and files.documents)

    # -- the end ----------------------------------------------------------------------------
    def remove_session(self, consultation_id: str) -> None:
        """Delete every file of a consultation, its folder and its tickets."""
        files = self._sessions.pop(consultation_id, None)
        self.tickets.forget(consultation_id)
        directory = (
            files.directory if files is not None else self.root / _safe_segment(consultation_id)
        )
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            if directory.exists():
                log.error("could not delete the documents of consultation %s", consultation_id)

    def close(self) -> None:
        for consultation_id in list(self._sessions):
            self.remove_session(consultation_id)

    # -- one-time tickets ------------------------------------------------------------------
    def mint_ticket(self, consultation_id: str, document_id: str, now: float | None = None) -> str:
        return self.tickets.mint(consultation_id, document_id, now)

    def redeem_ticket(
        self,
        ticket: str,
        consultation_id: str,
        document_id: str,
        now: float | None = None,
        *,
        consume: bool = True,
    ) -> Document | None:
        """The document when the ticket is valid for it (``gateway/tickets.py``: used up
        either way; ``consume=False`` only looks, for a ``HEAD`` request)."""
        if not self.tickets.redeem(ticket, consultation_id, document_id, now, consume=consume):
            return None
        return self.get(consultation_id, document_id)


def _safe_segment(consultation_id: str) -> str:
    """Consultation ids are token_urlsafe; refuse anything else as a folder name."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", consultation_id):
        raise ValueError("not a consultation id")
    return consultation_id
