"""Benchmark: mdd's matching iteration against the classic MTT iteration, one process.

Config (issue 4): 10 classes, 28×28×3, ipc 10 (100 synthetic images, all in every
step's batch), N = 20 unrolled steps, ConvNet width 128, DSA-style augmentation with
the same seed per step in both.

The reference is the classic loop written out here, independently of mdd.matching: a
flat parameter vector, ``autograd.grad(create_graph=True)`` per step through
``functional_forward``, one backward at the end, eager, default allocator settings.
Phase 1 interleaves reference and mdd runs at default allocator settings (a busy shared
machine then weighs on both alike); phase 2 times mdd as ``mdd.distill`` runs it, inside
``tuned_malloc``. Nothing default runs after phase 2 starts: ``mallopt`` also switches
glibc's dynamic mmap threshold off for the rest of the process. Ratios use each
variant's best repeat.

Measured here (2-core AMD EPYC, torch 2.13 CPU, 2 threads, quiet moments of a shared
machine; three runs): reference 22.1–25.3 s per iteration, 4.42 GiB peak live memory.
mdd ``compiled`` (exact eager forward pass + compiled reverse): 12.7–14.4 s, 0.61–0.64
GiB — 1.64–1.91× faster, 0.14× the memory; eager ``adjoint``: 17.1–17.5 s (1.41–1.48×),
0.42 GiB (0.09×); the classic loop inside ``tuned_malloc``: 15.5 s (1.57×), same
memory. Losses equal to the last bit, image gradients within 2e-7 (relative L2), log α
gradients equal. The 2× target is not reached: the adjoint recomputes each step's
forward (11 convolution passes per step against the classic 9), and convolutions are
about two thirds of the compiled reverse step.

Peak memory is the peak of malloc's live bytes (glibc ``mallinfo2``: in-use heap plus
mmapped chunks) sampled every 5 ms during a call, minus the level just before it; the
RSS peak is printed beside it. Live bytes, because a tuned allocator keeps freed
memory mapped for reuse: RSS would charge mdd for memory it has already given back
(or, after a warm-up, hide what it uses). Times are wall seconds (and process CPU seconds, which a busy shared
machine perturbs less). Usage::

    .venv/bin/python benchmarks/bench_distill.py [--steps 20] [--repeats 2] [--compile]
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdd.alloc import tuned_malloc  # noqa: E402
from mdd.augment import Augment  # noqa: E402
from mdd.matching import MatchProblem, Student, compile_kernels, match  # noqa: E402
from mdd.nets import ConvNet, ParamLayout, flatten_params, functional_forward  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _libc.mallinfo2.restype = _Mallinfo2
except (OSError, AttributeError):   # not glibc ≥ 2.33
    _libc = None


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def live() -> int:
    """Bytes malloc has handed out and not yet got back (all arenas + mmapped chunks).

    Unlike RSS this does not count memory a tuned allocator keeps for reuse, so it
    compares the two implementations' working sets whatever the allocator settings.
    """
    if _libc is None:
        return rss()
    m = _libc.mallinfo2()
    return m.uordblks + m.hblkhd


class PeakMemory:
    """Peak live bytes (and peak RSS) above the level at entry, sampled in a thread."""

    def __init__(self, every: float = 0.005):
        self.every = every
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        self.base_live, self.base_rss = live(), rss()
        self.peak_live, self.peak_rss = self.base_live, self.base_rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        self.peak_live = max(self.peak_live, live())
        self.peak_rss = max(self.peak_rss, rss())

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.every)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def delta(self) -> int:
        return self.peak_live - self.base_live

    @property
    def delta_rss(self) -> int:
        return self.peak_rss - self.base_rss


def reference_iteration(net: ConvNet, layout: ParamLayout, images: torch.Tensor,
                        labels: torch.Tensor, log_alpha: torch.Tensor, prob: MatchProblem,
                        aug: Augment) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The classic MTT iteration: loss, ∂L/∂images, ∂L/∂log α."""
    x = images.detach().clone().requires_grad_(True)
    la = log_alpha.detach().clone().requires_grad_(True)
    syn_lr = la.exp()
    student_params = [prob.start.clone().requires_grad_(True)]
    for idx, seed in zip(prob.batches, prob.seeds):
        out = functional_forward(net, layout, student_params[-1], aug(x[idx], seed=seed))
        ce = F.cross_entropy(out, labels[idx])
        grad = torch.autograd.grad(ce, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - syn_lr * grad)
    param_loss = ((student_params[-1] - prob.target) ** 2).sum()
    param_dist = ((prob.start - prob.target) ** 2).sum()
    loss = param_loss / param_dist
    loss.backward()
    return float(loss), x.grad, la.grad


def problem(steps: int, classes: int = 10, ipc: int = 10, width: int = 128, seed: int = 0):
    torch.manual_seed(seed)
    net = ConvNet(3, classes, 28, width=width)
    layout = ParamLayout.of(net)
    start = flatten_params(net)
    # A target one "epoch" away: start moved along a random direction of similar scale.
    target = start + 0.01 * torch.randn_like(start) * start.abs().mean()
    images = torch.randn(classes * ipc, 3, 28, 28)
    labels = torch.arange(classes).repeat_interleave(ipc)
    every = torch.arange(classes * ipc)
    prob = MatchProblem(start, target, [every] * steps, list(range(1000, 1000 + steps)))
    return net, layout, images, labels, torch.tensor(0.01).log(), prob


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def timed(fn):
    with PeakMemory() as mem:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    return out, wall, cpu, mem


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--modes", default="adjoint",
                    help="comma list of mdd variants: adjoint, unrolled, compiled")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    net, layout, images, labels, log_alpha, prob = problem(args.steps, width=args.width)
    aug = Augment("pathmnist")
    student = Student(net, layout)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, N={args.steps}, "
          f"P={layout.numel}", flush=True)

    variants = args.modes.split(",")
    kernels = {v: compile_kernels(student) if v == "compiled" else None for v in variants}
    for v, k in kernels.items():
        if k is not None:   # compile before anything is timed; reported apart
            t = time.perf_counter()
            match(student, images, labels, log_alpha,
                  MatchProblem(prob.start, prob.target, prob.batches[:1], prob.seeds[:1]), aug,
                  "adjoint", k)
            print(f"{v}: compile + first step {time.perf_counter() - t:.1f} s", flush=True)

    runs: dict[str, list[dict]] = {"reference": []}
    results: dict[str, object] = {}

    def record(name: str, fn) -> object:
        out, wall, cpu, mem = timed(fn)
        runs.setdefault(name, []).append({"wall_s": wall, "cpu_s": cpu, "peak_bytes": mem.delta,
                                          "peak_rss_bytes": mem.delta_rss})
        loss = out[0] if isinstance(out, tuple) else float(out.loss)
        print(f"{name:16s} #{len(runs[name]) - 1}: {wall:6.2f} s wall {cpu:6.2f} s cpu  peak "
              f"+{mem.delta / 2**30:.2f} GiB live, +{mem.delta_rss / 2**30:.2f} GiB RSS  "
              f"loss {loss:.6f}", flush=True)
        results[name] = out
        return out

    def mdd_call(v: str):
        return lambda: match(student, images, labels, log_alpha, prob, aug,
                             "unrolled" if v == "unrolled" else "adjoint", kernels[v])

    # Phase 1, default allocator settings for everyone, interleaved so that a busy shared
    # machine weighs on both sides alike.
    for r in range(args.repeats):
        record("reference", lambda: reference_iteration(net, layout, images, labels, log_alpha,
                                                        prob, aug))
        for v in variants:
            record(v, mdd_call(v))
    # Phase 2, as mdd.distill runs: inside tuned_malloc. After this no default-settings
    # run is possible in this process (mallopt freezes glibc's dynamic mmap threshold).
    with tuned_malloc():
        for r in range(args.repeats):
            for v in variants:
                record(v + "+tuned", mdd_call(v))

    ref = results["reference"]
    checks = {}
    for name, res in results.items():
        if name == "reference":
            continue
        checks[name] = {
            "loss_abs_diff": abs(float(res.loss) - ref[0]),
            "grad_images_rel_l2": rel(res.grad_images, ref[1]),
            "grad_log_alpha_rel": rel(res.grad_log_alpha, ref[2]),
        }
        checks[name]["same"] = (checks[name]["loss_abs_diff"] <= 1e-4
                                and checks[name]["grad_images_rel_l2"] <= 1e-3
                                and checks[name]["grad_log_alpha_rel"] <= 1e-3)

    best = {k: {m: min(r[m] for r in v) for m in ("wall_s", "cpu_s", "peak_bytes", "peak_rss_bytes")}
            for k, v in runs.items()}
    summary = {"config": {"classes": 10, "ipc": 10, "image": [3, 28, 28], "steps": args.steps,
                          "width": args.width, "threads": torch.get_num_threads(),
                          "torch": torch.__version__},
               "runs": runs, "best": best, "checks": checks, "ratios": {}}
    for variant in checks:
        b, r = best[variant], best["reference"]
        summary["ratios"][variant] = {
            "speedup_wall": r["wall_s"] / b["wall_s"], "speedup_cpu": r["cpu_s"] / b["cpu_s"],
            "memory_ratio": b["peak_bytes"] / max(r["peak_bytes"], 1)}
    print(json.dumps({"checks": checks, "ratios": summary["ratios"]}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
