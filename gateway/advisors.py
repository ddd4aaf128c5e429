"""Advisor accounts: names, argon2id password hashes and optional display names in
``<data-dir>/advisors.sqlite``.

Managed from the command line (``python -m gateway advisor
add|list|remove|passwd|display-name``,
see ``gateway/main.py``) and read by the running gateway at login. The two may be
different processes at the same time, so nothing is cached: a login reads the row, and
every request of a logged-in advisor checks that the account still exists with the
password it logged in with (:meth:`AdvisorAccounts.generation`), so ``remove`` and
``passwd`` end the account's sessions at once.

- Hashes: argon2id (RFC 9106) through ``argon2-cffi``'s ``PasswordHasher`` with its
  defaults (the RFC's second recommended option: 64 MiB, 3 passes, 4 lanes). A hash
  made with older parameters is replaced at the next successful login.
- The file is created ``0600`` in a ``0700``-or-stricter data dir: it holds hashes,
  which are still worth guessing against offline.
- An unknown name costs the same as a wrong password (a hash is verified either way),
  so the login answer's timing does not tell which names exist.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import sqlite3
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

FILE_NAME = "advisors.sqlite"
# Letters of any script (``Müller``, ``Łukasz``), digits and . _ @ -, starting with a
# letter or digit; compared NFC-normalised (UAX #15), so "Müller" typed with a combining
# diaeresis is the same account.
NAME_PATTERN = re.compile(r"[^\W_][\w.@-]{0,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte "password" is a DoS, not a secret
# The name the customer sees ("Frau Schmidt"): one line of printable text, as short as a
# name on a door sign; the PIN page and the room's status lines put it in a sentence.
MAX_DISPLAY_NAME = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS advisor (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    hash TEXT NOT NULL,
    generation TEXT NOT NULL,
    created TEXT NOT NULL,
    changed TEXT NOT NULL,
    display_name TEXT
)
"""
# Files made before display names existed (issue 10, item 11) get the column on first
# open; SQLite's ADD COLUMN keeps every row (NULL: no display name).
_MIGRATIONS = (("display_name", "ALTER TABLE advisor ADD COLUMN display_name TEXT"),)


class AccountError(ValueError):
    """A refused account operation; the message is meant for the operator."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    created: str
    changed: str
    # shown to the customer; None: the pages use the neutral "Ihre Ansprechperson"
    display_name: str | None = None


def normalize_name(name: str) -> str:
    """The account name as stored and compared: NFC, without surrounding spaces."""
    return unicodedata.normalize("NFC", name.strip())


def check_name(name: str) -> str:
    name = normalize_name(name)
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError(
            "An advisor name is 1-64 characters: letters, digits and . _ @ - "
            "(starting with a letter or digit)."
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"The password must have at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"The password must have at most {MAX_PASSWORD} characters.")
    return password


def check_display_name(display_name: str | None) -> str | None:
    """The display name as stored (NFC, spaces collapsed), None for none (empty)."""
    if display_name is None:
        return None
    text = unicodedata.normalize("NFC", display_name)
    # line breaks, tabs and other controls (also the invisible bidi ones, category Cf)
    # are refused before the spaces are tidied, so "Frau\nSchmidt" is an error
    control = any(unicodedata.category(ch).startswith("C") for ch in text)
    cleaned = " ".join(text.split())
    if not cleaned and not control:
        return None
    if control or len(cleaned) > MAX_DISPLAY_NAME:
        raise AccountError(
            f"A display name is one line of at most {MAX_DISPLAY_NAME} characters "
            "without control characters."
        )
    return cleaned


def _migrate(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(advisor)")}
    for column, statement in _MIGRATIONS:
        if column not in columns:
            with db:
                db.execute(statement)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class AdvisorAccounts:
    """The account table. Every call opens its own short SQLite connection, so the
    object may be used from any thread and beside the command line tool."""

    def __init__(self, data_dir: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = data_dir / FILE_NAME
        self.hasher = hasher or PasswordHasher()

    @functools.cached_property
    def _dummy(self) -> str:
        """Verified against when the name is unknown (same cost as a wrong password).
        Made on first use, in the verifying thread: hashing costs ~1 s of the unit run
        per construction otherwise, and a process that never signs anyone in needs none."""
        return self.hasher.hash(secrets.token_urlsafe(16))

    @contextlib.contextmanager
    def _db(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            if not create:
                # nothing to read: an empty table without creating the file
                db = sqlite3.connect(":memory:")
                db.execute(_SCHEMA)
                try:
                    yield db
                finally:
                    db.close()
                return
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        db = sqlite3.connect(self.path, timeout=5.0)
        try:
            db.execute(_SCHEMA)
            _migrate(db)
            with db:
                yield db
        finally:
            db.close()

    # -- command line -----------------------------------------------------------------------
    def add(self, name: str, password: str, display_name: str | None = None) -> Account:
        name = check_name(name)
        shown = check_display_name(display_name)
        digest = self.hasher.hash(check_password(password))
        now = _now()
        with self._db(create=True) as db:
            try:
                db.execute(
                    "INSERT INTO advisor (name, hash, generation, created, changed, display_name)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, digest, secrets.token_hex(8), now, now, shown),
                )
            except sqlite3.IntegrityError:
                raise AccountError(f"An advisor named {name!r} exists already.") from None
        return Account(name, now, now, shown)

    def set_display_name(self, name: str, display_name: str | None) -> str | None:
        """Set (or with None/empty, remove) the name the customer sees. Consultations
        created afterwards carry it; running ones keep the one they were created with."""
        shown = check_display_name(display_name)
        with self._db(create=True) as db:
            cur = db.execute(
                "UPDATE advisor SET display_name = ? WHERE name = ?", (shown, normalize_name(name))
            )
            if cur.rowcount == 0:
                raise AccountError(f"No advisor named {name!r}.")
        return shown

    def display_name(self, name: str) -> str | None:
        """The account's display name, None without one (or without the account)."""
        with self._db() as db:
            row = db.execute("SELECT display_name FROM advisor WHERE name = ?", (name,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def set_password(self, name: str, password: str) -> None:
        digest = self.hasher.hash(check_password(password))
        with self._db(create=True) as db:
            cur = db.execute(
                "UPDATE advisor SET hash = ?, generation = ?, changed = ? WHERE name = ?",
                (digest, secrets.token_hex(8), _now(), normalize_name(name)),
            )
            if cur.rowcount == 0:
                raise AccountError(f"No advisor named {name!r}.")

    def remove(self, name: str) -> None:
        with self._db(create=True) as db:
            cur = db.execute("DELETE FROM advisor WHERE name = ?", (normalize_name(name),))
            if cur.rowcount == 0:
                raise AccountError(f"No advisor named {name!r}.")

    def accounts(self) -> list[Account]:
        with self._db() as db:
            rows = db.execute(
                "SELECT name, created, changed, display_name FROM advisor ORDER BY name"
            ).fetchall()
        return [Account(*row) for row in rows]

    # -- login --------------------------------------------------------------------------------
    def verify(self, name: str, password: str) -> tuple[str, str] | None:
        """``(canonical name, generation)`` when the password is right, else None.

        Blocking (argon2 takes tens of milliseconds on purpose): call it in a thread.
        """
        name = normalize_name(name)
        if len(password) > MAX_PASSWORD or not NAME_PATTERN.fullmatch(name):
            self._burn(password[:MAX_PASSWORD])
            return None
        with self._db() as db:
            row = db.execute(
                "SELECT name, hash, generation FROM advisor WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            self._burn(password)
            return None
        canonical, digest, generation = row
        try:
            self.hasher.verify(digest, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if self.hasher.check_needs_rehash(digest):
            with self._db(create=True) as db:
                db.execute(
                    "UPDATE advisor SET hash = ? WHERE name = ? AND hash = ?",
                    (self.hasher.hash(password), canonical, digest),
                )
        return canonical, generation

    def _burn(self, password: str) -> None:
        with contextlib.suppress(VerificationError, InvalidHashError):
            self.hasher.verify(self._dummy, password)

    def generation(self, name: str) -> str | None:
        """The account's password generation (changes with ``passwd``); None once removed."""
        with self._db() as db:
            row = db.execute("SELECT generation FROM advisor WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])
