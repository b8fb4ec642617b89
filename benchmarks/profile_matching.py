"""Where one matching iteration's time goes: torch.profiler's self-CPU table per mode.

The problem is bench_distill's (``--shape``, default BreastMNIST's 2x1x28, ipc 2, N = 12
as in the cpu preset, width 128, one thread). Prints each mode's top operators and the
share of self CPU time spent in convolutions (forward and backward). Shares, not
seconds: they hold on a busy machine, absolute times do not.

    .venv/bin/python benchmarks/profile_matching.py [--shape 2x1x28] [--ipc 2] [--steps 12]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_distill import Bench, Shape, parse_shape  # noqa: E402

CONV = ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::_convolution",
        "aten::convolution", "aten::conv2d")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=parse_shape, default=(2, 1, 28))
    ap.add_argument("--ipc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--width", type=int, default=128)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for mode in ("reference", "unrolled", "compiled"):
        bench = Bench(Shape(*args.shape, args.ipc), args.steps, args.width,
                      [] if mode == "reference" else [mode])
        call = bench.reference if mode == "reference" else bench.mdd(mode)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        conv = sum(e.self_cpu_time_total for e in events if e.key in CONV)
        print(f"\n{mode}: convolutions {100 * conv / total:.0f} % of self CPU time "
              f"({sum(e.count for e in events if e.key == 'aten::convolution_backward')} "
              f"convolution backward calls)")
        print(events.table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
