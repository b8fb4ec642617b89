"""``mdd`` command line. JSON on stdout for machines; ``--format table`` for people.

Every subcommand's options are defined in :mod:`mdd.commands` (one function each, whose
handler is a function of the module that does the work); this module builds the parser
from it, runs the handler and prints the result.

Every failure a user can fix is one line on stderr and exit status 2, before anything is
written when it is about the arguments (:mod:`mdd.validate`): a bad option value, an
unknown flag, a missing or corrupt file, a folder another run is writing
(:mod:`mdd.locks`), a full disk or a read-only folder (what was written before stays
whole: every file is written atomically).
"""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Any, Callable

from .commands import add_common, register_all  # noqa: F401  (add_common: for callers of mdd.cli)
from .data import DataError
from .io import dumps
from .locks import FolderBusy
from .validate import ArgumentError, check_namespace


#: Commands whose re-run resumes (the message after Ctrl-C says so).
RESUMABLE = ("experts", "distill", "benchmark", "demo", "notebooks")


def emit(result: Any, fmt: str = "json") -> None:
    """Print a result (a dict or a list of dicts) as JSON or as a plain table.

    The JSON is strict (``allow_nan=False``): a number that could not be computed (NaN
    or ±inf, e.g. the AUC of networks whose training diverged) is printed as ``null``,
    and the dict that holds it gets a sibling ``"<name>_null_reason"`` string saying why
    (:func:`mdd.io.strict`); a producer may set that reason itself.
    """
    if fmt == "json":
        print(dumps(result, indent=2))
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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mdd distill: error: argument --ipc: invalid int
    value: 'x' (see mdd distill --help)``, exit status 2, no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mdd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    register_all(sub)   # mdd.commands: imports every command module
    return parser


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest → its long option (``batch_syn`` → ``--batch-syn``), over every subcommand."""
    names: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for dest, opt in option_names(sub).items():
                    names.setdefault(dest, opt)
        elif action.option_strings:
            names.setdefault(action.dest, max(action.option_strings, key=len))
    return names


def error_line(e: BaseException, options: dict[str, str] | None = None) -> str:
    """The one line a user sees for ``e`` (without the ``mdd CMD: error:`` prefix)."""
    if isinstance(e, ArgumentError):
        opt = (options or {}).get(e.name)
        return f"argument {opt}: {e}" if opt else str(e)
    if isinstance(e, OSError) and e.errno is not None and not isinstance(e, FolderBusy):
        code = errno.errorcode.get(e.errno, str(e.errno))
        line = f"{e.filename + ': ' if e.filename else ''}{e.strerror or e} ({code})"
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            line += ("; every file written so far is whole (the last checkpoint included): "
                     "free some space and run the same command again to resume")
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            line += "; the folder is not writable (or readable) here: fix it or pick another"
        return line
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], Any] = args.handler
    try:
        check_namespace(args.command, args)   # every argument, before anything is read
        result = handler(args)
    except (DataError, ValueError, OSError) as e:
        print(f"mdd {args.command}: error: {error_line(e, option_names(parser))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ": run the same command to resume" if args.command in RESUMABLE else ""
        print(f"mdd {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    if result is not None:
        emit(result, args.format)
    return 0 if not getattr(args, "failed", False) else 1


if __name__ == "__main__":
    sys.exit(main())
