"""Benchmark: one cpu-preset distillation run end to end, before and after issue 13's
"both cores" change (val evaluations in a background process, ``--val-background``).

Each variant is a fresh ``mdd distill`` process (cpu preset: one torch thread for the
matching), run one after the other on an otherwise quiet machine, into its own folder
under ``runs/perf_e2e/``; the algorithm is the same, so the selected iteration, val and
test numbers must be equal, and the script says whether they are. Wall seconds are the
whole command (setup, α calibration, matching, val evaluations, test scoring).

    MDD_DATA=../shared/medmnist .venv/bin/python benchmarks/bench_end_to_end.py \\
        breastmnist:2 pneumoniamnist:10 [--method ptm+dom] [--json results/perf/end_to_end.json]

A finished variant's folder is reused (its recorded wall time with it): delete
``runs/perf_e2e`` to measure again.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from mdd.io import write_json

ROOT = Path("runs/perf_e2e")
VARIANTS = {"before": [], "after": ["--val-background"]}   # run in this order
SAME = ("selected_iteration", "val_auc", "auc_mean", "acc_mean", "aucs", "alpha")


def run_one(flag: str, ipc: int, method: str, variant: str, preset: str = "cpu",
            runs: Path = ROOT, extra: list[str] | None = None) -> dict:
    out = runs / f"{flag}-ipc{ipc}-{method}-{variant}"
    timing = out.with_suffix(".wall.json")
    if timing.is_file():
        return json.loads(timing.read_text())
    cmd = [sys.executable, "-m", "mdd.cli", "distill", "--flag", flag, "--ipc", str(ipc),
           "--method", method, "--preset", preset, "--out", str(out), "--quiet",
           "--format", "json", *(extra or []), *VARIANTS[variant]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads((out / "result.json").read_text())
    row = {"flag": flag, "ipc": ipc, "method": method, "variant": variant,
           "wall_s": round(wall, 1), "distill_seconds": res["distill_seconds"],
           **{k: res[k] for k in SAME}, "mode": res.get("mode"), "command": " ".join(cmd[1:])}
    write_json(timing, row)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", nargs="+", help="flag:ipc, e.g. breastmnist:2")
    ap.add_argument("--method", default="ptm+dom")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--runs", type=Path, default=ROOT, help="where the run folders go")
    ap.add_argument("--experts", default=None, help="expert folder (default: mdd distill's)")
    ap.add_argument("--mode", default="unrolled",
                    help="matching mode of both variants (default unrolled, what mode=auto "
                         "picks at these sizes here): with auto the first variant would pay "
                         "the timing and compilation that the second finds cached")
    args = ap.parse_args(argv)
    extra = ["--mode", args.mode] + (["--experts", args.experts] if args.experts else [])
    pairs = []
    for cell in args.cells:
        flag, ipc = cell.split(":")
        b, a = (run_one(flag, int(ipc), args.method, v, args.preset, args.runs, extra)
                for v in VARIANTS)
        same = all(a[k] == b[k] for k in SAME)
        pairs.append({"flag": flag, "ipc": int(ipc), "method": args.method,
                      "speedup": round(b["wall_s"] / a["wall_s"], 3),
                      "same_selected_result": same, "before": b, "after": a})
        print(f"{flag} ipc {ipc} {args.method}: before {b['wall_s']:.0f} s, after {a['wall_s']:.0f} s "
              f"wall ({b['wall_s'] / a['wall_s']:.2f}x); same selected result: {same}")
    if args.json:
        write_json(args.json, pairs)
    return pairs


if __name__ == "__main__":
    main()
