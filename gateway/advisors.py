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
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.store.base import AccountExists, AccountRecord, AccountStore
from gateway.store.sqlite import SqliteAccounts

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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class AdvisorAccounts:
    """The account table, in the data-access layer's account store (gateway/store/):
    ``advisors.sqlite`` by default, the cluster's PostgreSQL with ``--database``. The
    store keeps no cache, so the object may be used from any thread and beside the
    command line tool."""

    def __init__(
        self,
        data_dir: Path,
        hasher: PasswordHasher | None = None,
        store: AccountStore | None = None,
    ) -> None:
        self.path = data_dir / FILE_NAME
        self.store: AccountStore = store if store is not None else SqliteAccounts(self.path)
        self.hasher = hasher or PasswordHasher()

    @functools.cached_property
    def _dummy(self) -> str:
        """Verified against when the name is unknown (same cost as a wrong password).
        Made on first use, in the verifying thread: hashing costs ~1 s of the unit run
        per construction otherwise, and a process that never signs anyone in needs none."""
        return self.hasher.hash(secrets.token_urlsafe(16))

    # -- command line -----------------------------------------------------------------------
    def add(self, name: str, password: str, display_name: str | None = None) -> Account:
        name = check_name(name)
        shown = check_display_name(display_name)
        digest = self.hasher.hash(check_password(password))
        now = _now()
        try:
            self.store.add_account(
                AccountRecord(name, digest, secrets.token_hex(8), now, now, shown)
            )
        except AccountExists:
            raise AccountError(f"An advisor named {name!r} exists already.") from None
        return Account(name, now, now, shown)

    def set_display_name(self, name: str, display_name: str | None) -> str | None:
        """Set (or with None/empty, remove) the name the customer sees. Consultations
        created afterwards carry it; running ones keep the one they were created with."""
        shown = check_display_name(display_name)
        if not self.store.update_account(normalize_name(name), display_name=shown):
            raise AccountError(f"No advisor named {name!r}.")
        return shown

    def display_name(self, name: str) -> str | None:
        """The account's display name, None without one (or without the account)."""
        record = self.store.account(name)
        return None if record is None else record.display_name

    def set_password(self, name: str, password: str) -> None:
        digest = self.hasher.hash(check_password(password))
        if not self.store.update_account(
            normalize_name(name), hash=digest, generation=secrets.token_hex(8), changed=_now()
        ):
            raise AccountError(f"No advisor named {name!r}.")

    def remove(self, name: str) -> None:
        if not self.store.remove_account(normalize_name(name)):
            raise AccountError(f"No advisor named {name!r}.")

    def accounts(self) -> list[Account]:
        return [
            Account(r.name, r.created, r.changed, r.display_name) for r in self.store.accounts()
        ]

    # -- login --------------------------------------------------------------------------------
    def verify(self, name: str, password: str) -> tuple[str, str] | None:
        """``(canonical name, generation)`` when the password is right, else None.

        Blocking (argon2 takes tens of milliseconds on purpose): call it in a thread.
        """
        name = normalize_name(name)
        if len(password) > MAX_PASSWORD or not NAME_PATTERN.fullmatch(name):
            self._burn(password[:MAX_PASSWORD])
            return None
        record = self.store.account(name)
        if record is None:
            self._burn(password)
            return None
        try:
            self.hasher.verify(record.hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if self.hasher.check_needs_rehash(record.hash):
            self.store.replace_hash(record.name, record.hash, self.hasher.hash(password))
        return record.name, record.generation

    def _burn(self, password: str) -> None:
        with contextlib.suppress(VerificationError, InvalidHashError):
            self.hasher.verify(self._dummy, password)

    def generation(self, name: str) -> str | None:
        """The account's password generation (changes with ``passwd``); None once removed."""
        record = self.store.account(name)
        return None if record is None else record.generation
