"""The README's privacy table: one row per audited distilled set.

Reads ``audit.json`` of every run folder given (``<run>/distilled/audit/``, written by
``mdd audit`` or notebook 07), keeps a copy of each audit's JSON and summary under
``results/privacy/<run name>/`` (run folders live in the git-ignored ``runs/``) and
writes ``results/privacy/overview.md``.

    python benchmarks/privacy_overview.py runs/engine_v2/breastmnist-ipc2-mtt-s0 …
"""
from __future__ import annotations

import sys
from pathlib import Path

from mdd.artifact import load_distilled
from mdd.io import read_json, write_text
from mdd.privacy import AUDIT_DIR
from mdd.privacy_report import overview_markdown

RESULTS = Path("results/privacy")


def fail(message: str) -> None:
    print(f"privacy_overview: {message}", file=sys.stderr)
    sys.exit(2)


def main(runs: list[str]) -> None:
    results = []
    for run in runs:
        try:
            folder = load_distilled(run).path / AUDIT_DIR
        except (OSError, ValueError) as e:
            fail(f"{run} is not a distilled set or run folder ({e})")
        if not (folder / "audit.json").is_file():
            fail(f"no audit in {folder}: run `mdd audit --distilled {run}` first")
        for name in ("audit.json", "summary.md"):
            write_text(RESULTS / Path(run).name / name, (folder / name).read_text())
        results.append(read_json(folder / "audit.json"))
    results.sort(key=lambda r: (r["flag"], r["ipc"], r["method"]))
    text = ("# Privacy audits\n\nCommand: `python benchmarks/privacy_overview.py "
            + " ".join(runs) + "`\n\n" + overview_markdown(results))
    write_text(RESULTS / "overview.md", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
