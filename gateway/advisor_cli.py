"""``python -m gateway advisor add|list|remove|passwd|display-name``: advisor accounts on
the command line (stored by :mod:`gateway.advisors` in ``<data-dir>/advisors.sqlite``).

``add NAME --display-name "Frau Schmidt"`` and ``display-name NAME "Frau Schmidt"`` set
the name the customer sees (PIN page, room, Flash client); ``display-name NAME ""``
removes it, and the pages say "Ihre Ansprechperson" again. New consultations carry the
name; running ones keep the one they were created with.

The data dir comes from ``--data-dir``, ``--config FILE`` or ``VB_DATA_DIR`` exactly as
for ``serve``. A password is asked twice on a terminal (``getpass``, not echoed); with
``--password-stdin``, or when standard input is not a terminal, the first line of
standard input is the password (for scripts: ``printf '%s\\n' "$PW" | … advisor add
NAME``). Never as an argument: command lines are visible to every user of the machine.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TextIO

from gateway import config as config_mod
from gateway.advisors import AccountError, AdvisorAccounts
from gateway.store import open_backends


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    advisor = sub.add_parser("advisor", help="manage advisor accounts (name and password)")
    actions = advisor.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("add", "add an advisor account (asks for the password)"),
        ("list", "list the advisor accounts"),
        ("remove", "remove an advisor account (its sessions end at once)"),
        ("passwd", "set a new password (the account's sessions end at once)"),
        ("display-name", 'set the name the customer sees ("" removes it)'),
    ):
        action = actions.add_parser(name, help=help_text)
        if name != "list":
            action.add_argument("name", help="the advisor's login name")
        if name == "add":
            action.add_argument(
                "--display-name",
                default=None,
                help='the name the customer sees, e.g. "Frau Schmidt" (default: none)',
            )
        if name == "display-name":
            action.add_argument("display_name", help='e.g. "Frau Schmidt"; "" removes it')
        if name in ("add", "passwd"):
            action.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from the first line of standard input",
            )
        action.add_argument("--config", type=Path, help="TOML configuration file")
        action.add_argument("--data-dir", default=None, help="state directory (default ./var)")
        action.add_argument(
            "--database", default=None, help="postgresql://… of a cluster (docs/cluster.md)"
        )


def read_password(from_stdin: bool, stdin: TextIO | None = None) -> str:
    stdin = stdin or sys.stdin
    if from_stdin or not stdin.isatty():
        line = stdin.readline()
        if not line:
            raise AccountError("No password on standard input.")
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Password (again): ")
    if first != second:
        raise AccountError("The passwords do not match.")
    return first


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_mod.load(args)
    except (ValueError, OSError) as exc:
        print(f"videoberatung: {exc}", file=sys.stderr)
        return 2
    store = open_backends(cfg.database, cfg.data_dir) if cfg.database else None
    accounts = AdvisorAccounts(cfg.data_dir, store=store.accounts if store else None)
    try:
        if args.action == "list":
            for account in accounts.accounts():
                extra = f"\tshown as {account.display_name!r}" if account.display_name else ""
                print(
                    f"{account.name}\tcreated {account.created}\tpassword set {account.changed}"
                    + extra
                )
            return 0
        if args.action == "display-name":
            shown = accounts.set_display_name(args.name, args.display_name)
            if shown is None:
                print(f"advisor {args.name!r} has no display name now")
            else:
                print(f"advisor {args.name!r} is shown to customers as {shown!r}")
            return 0
        if args.action == "remove":
            accounts.remove(args.name)
            print(f"advisor {args.name!r} removed")
            return 0
        password = read_password(args.password_stdin)
        if args.action == "add":
            account = accounts.add(args.name, password, args.display_name)
            where = "the cluster's database" if store else accounts.path
            print(f"advisor {account.name!r} added ({where})")
        else:
            accounts.set_password(args.name, password)
            print(f"password of advisor {args.name!r} changed")
        return 0
    except AccountError as exc:
        print(f"videoberatung: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()
