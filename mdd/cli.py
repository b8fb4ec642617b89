"""``mdd`` command line. JSON on stdout for machines; ``--format table`` for people.

Subcommands live beside the code they drive: a module listed in ``COMMAND_MODULES``
that defines ``register_cli(subparsers)`` adds its own.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Callable

from .data import DataError

COMMAND_MODULES = ("mdd.data_cli", "mdd.baseline_cli", "mdd.experts", "mdd.distill", "mdd.notebooks",
                   "mdd.benchmark", "mdd.demo")


def emit(result: Any, fmt: str = "json") -> None:
    """Print a result (a dict or a list of dicts) as JSON or as a plain table."""
    if fmt == "json":
        print(json.dumps(result, indent=2))
        return
    rows = result if isinstance(result, list) else [result]
    rows = [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows]
    if not rows:
        print("(nothing)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def add_common(p: argparse.ArgumentParser, root: bool = True, download: bool = False) -> None:
    """Options every subcommand shares (``download``: also offer --download)."""
    p.add_argument("--format", choices=("json", "table"), default="json",
                   help="JSON for machines (default) or a readable table")
    if root:
        p.add_argument("--root", default=None,
                       help="MedMNIST folder (default: $MDD_DATA, else ./data)")
    if download:
        p.add_argument("--download", action="store_true",
                       help="fetch a missing MedMNIST file (needs internet), md5-verified")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], Any] = args.handler
    try:
        result = handler(args)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"mdd {args.command}: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        emit(result, args.format)
    return 0 if not getattr(args, "failed", False) else 1


if __name__ == "__main__":
    sys.exit(main())
