"""The benchmark grid's wall time across sessions, from a heartbeat log.

The grid of record runs in the background over several sessions; each time it is
(re)started, its wrapper appends the Unix time to a heartbeat file once a minute while
the grid runs. Consecutive beats more than ``--gap`` seconds apart start a new segment;
the wall time is the sum of the segments' lengths (each rounded down to its last beat,
so at most a minute per segment is missed).

    python benchmarks/grid_wall.py results/benchmark_heartbeat.log [--md results/benchmark_wall.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from mdd.io import write_text


def segments(beats: list[int], gap: int = 180) -> list[tuple[int, int]]:
    """(first, last) beat of each run of beats no more than ``gap`` seconds apart."""
    out: list[tuple[int, int]] = []
    for t in sorted(beats):
        if out and t - out[-1][1] <= gap:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def report(beats: list[int], gap: int = 180) -> str:
    segs = segments(beats, gap)
    iso = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    rows = [f"| {iso(a)} | {iso(b)} | {(b - a) / 3600:.2f} |" for a, b in segs]
    total = sum(b - a for a, b in segs) / 3600
    return "\n".join(["# Wall time of the benchmark grid of record", "",
                      "Command: `python benchmarks/grid_wall.py results/benchmark_heartbeat.log "
                      "--md results/benchmark_wall.md` (segments: the grid running in the "
                      "background, one per session; times UTC).", "",
                      "| from | to | hours |", "|---|---|---|", *rows, "",
                      f"Total: **{total:.2f} h** wall on 2 cores over {len(segs)} segment(s)."]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--gap", type=int, default=180)
    ap.add_argument("--md", default=None)
    args = ap.parse_args()
    beats = [int(line) for line in Path(args.log).read_text().split() if line.strip().isdigit()]
    md = report(beats, args.gap)
    if args.md:
        write_text(Path(args.md), md)
    print(md)


if __name__ == "__main__":
    main()
