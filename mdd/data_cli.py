"""``mdd data check``: list MedMNIST files in a root with their md5 status."""
from __future__ import annotations

import argparse

from .data import check_root


def _check(args: argparse.Namespace) -> list[dict]:
    rows = check_root(args.root)
    args.failed = any(not r["ok"] for r in rows)
    return rows
