"""``mdd data check``: list MedMNIST files in a root with their md5 status."""
from __future__ import annotations

import argparse

from .data import check_root


def _check(args: argparse.Namespace) -> list[dict]:
    rows = check_root(args.root)
    args.failed = any(not r["ok"] for r in rows)
    return rows


def register_cli(sub: argparse._SubParsersAction) -> None:
    from .cli import add_common
    data = sub.add_parser("data", help="inspect the MedMNIST data root")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="list MedMNIST files found and whether their md5 is ok")
    add_common(check)
    check.set_defaults(handler=_check)
