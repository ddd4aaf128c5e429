"""``python -m gateway advisor add|list|remove|passwd``: advisor accounts on the command
line (stored by :mod:`gateway.advisors` in ``<data-dir>/advisors.sqlite``).

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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    advisor = sub.add_parser("advisor", help="manage advisor accounts (name and password)")
    actions = advisor.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("add", "add an advisor account (asks for the password)"),
        ("list", "list the advisor accounts"),
        ("remove", "remove an advisor account (its sessions end at once)"),
        ("passwd", "set a new password (the account's sessions end at once)"),
    ):
        action = actions.add_parser(name, help=help_text)
        if name != "list":
            action.add_argument("name", help="the advisor's login name")
        if name in ("add", "passwd"):
            action.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from the first line of standard input",
            )
        action.add_argument("--config", type=Path, help="TOML configuration file")
        action.add_argument("--data-dir", default=None, help="state directory (default ./var)")


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
    accounts = AdvisorAccounts(cfg.data_dir)
    try:
        if args.action == "list":
            for account in accounts.accounts():
                print(f"{account.name}\tcreated {account.created}\tpassword set {account.changed}")
            return 0
        if args.action == "remove":
            accounts.remove(args.name)
            print(f"advisor {args.name!r} removed")
            return 0
        password = read_password(args.password_stdin)
        if args.action == "add":
            account = accounts.add(args.name, password)
            print(f"advisor {account.name!r} added ({accounts.path})")
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
