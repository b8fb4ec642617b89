"""Benchmark: mdd's matching iteration against the classic MTT iteration, one process.

Problems (issue 13): MTT's shape (10 classes, 3×32×32) and BreastMNIST's (2 classes,
1×28×28) at ipc 1, 2 and 10, every synthetic image in every step's batch, N = 20
unrolled steps, ConvNet width 128, DSA one-op augmentation with the same seed per step
in both (``--no-augment``: none, and the losses must then agree to 1e-6). An iteration
is the matching call and the optimiser steps that follow it (MTT's momentum SGD on the
images and on α; mdd's default optimisers). One untimed warm-up call per variant.

The reference is the classic loop written out here, independently of mdd.matching: a
flat parameter vector, ``autograd.grad(create_graph=True)`` per step through
``functional_forward``, one backward at the end, eager, default allocator settings.
Phase 1 interleaves reference and mdd runs at default allocator settings (a busy shared
machine then weighs on both alike); phase 2 times mdd as ``mdd.distill`` runs it, inside
``tuned_malloc``. Nothing default runs after phase 2 starts: ``mallopt`` also switches
glibc's dynamic mmap threshold off for the rest of the process. Ratios use each
variant's best repeat.

Measured here before issue 13 (issue 4's single shape, 10 classes × 3×28×28 at ipc 10,
matching call only; 2-core AMD EPYC, torch 2.13 CPU, 2 threads, quiet moments of a shared
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

    .venv/bin/python benchmarks/bench_distill.py [--shapes 10x3x32 2x1x28] [--ipcs 1 2 10]
        [--modes adjoint,unrolled,compiled] [--steps 20] [--repeats 2] [--threads 1] [--json F]
        [--device cuda]
    .venv/bin/python benchmarks/bench_distill.py --report OUT.md RESULT.json ...
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
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdd.alloc import tuned_malloc  # noqa: E402
from mdd.augment import Augment  # noqa: E402
from mdd import optim  # noqa: E402
from mdd.distill_config import DistillConfig  # noqa: E402
from mdd.io import write_text  # noqa: E402
from mdd.matching import MatchProblem, MatchResult, Student, compile_kernels, match  # noqa: E402
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


class CudaPeakMemory:
    """On a GPU: the peak of torch's allocated device bytes above the level at entry
    (``delta_rss`` is 0: the host's memory is not what the GPU run is limited by)."""

    def __enter__(self) -> "CudaPeakMemory":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated()

    @property
    def delta(self) -> int:
        return self.peak - self.base

    delta_rss = 0


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
    """The classic MTT iteration, optimiser steps included: loss, ∂L/∂images, ∂L/∂log α.

    As MTT runs it: the learned step size is the raw α (a leaf, not log α), one
    ``autograd.grad(create_graph=True)`` per student step, one backward at the end, then
    momentum SGD (0.5) on the images (lr 100) and on α (lr_lr 1e-5). The steps act on
    this call's copies, so every repeat starts from the same images; ∂L/∂log α is
    returned as α·∂L/∂α to compare with mdd's.
    """
    x = images.detach().clone().requires_grad_(True)
    syn_lr = log_alpha.detach().exp().clone().requires_grad_(True)
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
    grads = x.grad.clone(), (syn_lr.grad * syn_lr).detach()
    torch.optim.SGD([x], lr=100.0, momentum=0.5).step()
    torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5).step()
    return float(loss.detach()), *grads


def mdd_iteration(student: Student, images: torch.Tensor, labels: torch.Tensor,
                  log_alpha: torch.Tensor, prob: MatchProblem, aug: Augment, mode: str,
                  kernels) -> MatchResult:
    """mdd's iteration as ``mdd.distill`` runs it: one exact matching call, then the
    engine's default optimisers (:class:`DistillConfig`) on copies of images and log α."""
    cfg = DistillConfig()
    res = match(student, images, labels, log_alpha, prob, aug, mode, kernels)
    optim.make(cfg.image_opt, cfg.lr_images).step(images.clone(), res.grad_images)
    optim.make(cfg.alpha_opt, cfg.lr_alpha).step(log_alpha.clone(), res.grad_log_alpha)
    return res


@dataclass(frozen=True)
class Shape:
    """One benchmark problem: ``classes`` × ``ipc`` synthetic images of channels×size²."""
    classes: int
    channels: int
    size: int
    ipc: int

    @property
    def name(self) -> str:
        return f"{self.classes}x{self.channels}x{self.size} ipc{self.ipc}"

    @property
    def flag(self) -> str:
        """A MedMNIST flag of that channel count, for the augmentation's modality rules."""
        return "pathmnist" if self.channels == 3 else "breastmnist"


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        classes, channels, size = (int(v) for v in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is CLASSESxCHANNELSxSIZE, e.g. 2x1x28, got {text!r}")
    return classes, channels, size


def problem(shape: Shape, steps: int, width: int = 128, seed: int = 0, device: str = "cpu"):
    """The same seeded problem on any device (drawn on the CPU, then moved)."""
    torch.manual_seed(seed)
    net = ConvNet(shape.channels, shape.classes, shape.size, width=width)
    layout = ParamLayout.of(net)
    start = flatten_params(net)
    # A target one "epoch" away: start moved along a random direction of similar scale.
    target = start + 0.01 * torch.randn_like(start) * start.abs().mean()
    n = shape.classes * shape.ipc
    images = torch.randn(n, shape.channels, shape.size, shape.size)
    labels = torch.arange(shape.classes).repeat_interleave(shape.ipc)
    dev = torch.device(device)
    prob = MatchProblem(start.to(dev), target.to(dev), [torch.arange(n, device=dev)] * steps,
                        list(range(1000, 1000 + steps)))
    return (net.to(dev), layout, images.to(dev), labels.to(dev), torch.tensor(0.01).log().to(dev),
            prob)


def identity(x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """No augmentation (``--no-augment``), with the augmenters' call signature."""
    return x


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def timed(fn, device: str = "cpu"):
    """(result, wall s, process CPU s, memory peak); on a GPU the clock stops after a
    synchronize, so wall seconds include the kernels still queued."""
    cuda = torch.device(device).type == "cuda"
    with (CudaPeakMemory() if cuda else PeakMemory()) as mem:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    return out, wall, cpu, mem


class Bench:
    """Every timed call of one shape: runs per variant, and the last result of each."""

    def __init__(self, shape: Shape, steps: int, width: int, variants: list[str], augment: bool = True,
                 device: str = "cpu"):
        self.shape, self.device = shape, device
        net, layout, self.images, self.labels, self.log_alpha, self.prob = problem(
            shape, steps, width, device=device)
        self.net, self.layout = net, layout
        self.aug = Augment(shape.flag).to(device) if augment else identity
        # Without augmentation both sides compute the same float ops in another order only.
        self.tolerance = (1e-4, 1e-3) if augment else (1e-6, 1e-5)
        self.student = Student(net, layout)
        self.variants = variants
        self.kernels = {v: compile_kernels(self.student) if v == "compiled" else None for v in variants}
        self.runs: dict[str, list[dict]] = {}
        self.results: dict[str, object] = {}
        for v, k in self.kernels.items():
            if k is not None:   # compile before anything is timed; reported apart
                t = time.perf_counter()
                one = MatchProblem(self.prob.start, self.prob.target, self.prob.batches[:1],
                                   self.prob.seeds[:1])
                match(self.student, self.images, self.labels, self.log_alpha, one, self.aug, "adjoint", k)
                print(f"{shape.name} {v}: compile + first step {time.perf_counter() - t:.1f} s", flush=True)
        self.reference()   # warm-up calls, not timed: first-call allocations and dispatch caches
        for v in variants:
            self.mdd(v)()

    def reference(self):
        return reference_iteration(self.net, self.layout, self.images, self.labels, self.log_alpha,
                                   self.prob, self.aug)

    def mdd(self, v: str):
        return lambda: mdd_iteration(self.student, self.images, self.labels, self.log_alpha, self.prob,
                                     self.aug, "unrolled" if v == "unrolled" else "adjoint",
                                     self.kernels[v])

    def record(self, name: str, fn) -> None:
        out, wall, cpu, mem = timed(fn, self.device)
        self.runs.setdefault(name, []).append({"wall_s": wall, "cpu_s": cpu, "peak_bytes": mem.delta,
                                               "peak_rss_bytes": mem.delta_rss})
        loss = out[0] if isinstance(out, tuple) else float(out.loss)
        print(f"{self.shape.name:16s} {name:18s} #{len(self.runs[name]) - 1}: {wall:6.2f} s wall "
              f"{cpu:6.2f} s cpu  peak +{mem.delta / 2**30:.3f} GiB live, "
              f"+{mem.delta_rss / 2**30:.3f} GiB RSS  loss {loss:.6f}", flush=True)
        self.results[name] = out

    def summary(self) -> dict:
        ref = self.results["reference"]
        checks = {}
        for name, res in self.results.items():
            if name.startswith("reference"):
                continue
            checks[name] = {"loss_abs_diff": abs(float(res.loss) - ref[0]),
                            "grad_images_rel_l2": rel(res.grad_images, ref[1]),
                            "grad_log_alpha_rel": rel(res.grad_log_alpha, ref[2])}
            loss_tol, grad_tol = self.tolerance
            checks[name]["same"] = (checks[name]["loss_abs_diff"] <= loss_tol
                                    and checks[name]["grad_images_rel_l2"] <= grad_tol
                                    and checks[name]["grad_log_alpha_rel"] <= grad_tol)
        keys = ("wall_s", "cpu_s", "peak_bytes", "peak_rss_bytes")
        best = {k: {m: min(r[m] for r in v) for m in keys} for k, v in self.runs.items()}
        r = best["reference"]
        ratios = {v: {"speedup_wall": r["wall_s"] / b["wall_s"], "speedup_cpu": r["cpu_s"] / b["cpu_s"],
                      "memory_ratio": b["peak_bytes"] / max(r["peak_bytes"], 1)}
                  for v, b in best.items() if v != "reference"}
        return {"shape": self.shape.__dict__, "runs": self.runs, "best": best, "checks": checks,
                "ratios": ratios}


def table(summaries: list[dict]) -> str:
    """Markdown: per shape and variant, best CPU s/iteration, speed-up and memory ratio."""
    lines = ["| problem | variant | s/iteration (CPU) | reference s/iteration | speed-up (CPU / wall) "
             "| peak live memory | vs reference | same loss & gradients |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        sh = Shape(**s["shape"])
        ref = s["best"]["reference"]
        for v, ratio in s["ratios"].items():
            b = s["best"][v]
            same = s["checks"].get(v, {}).get("same", "—")
            lines.append(f"| {sh.name} | {v} | {b['cpu_s']:.2f} | {ref['cpu_s']:.2f} | "
                         f"{ratio['speedup_cpu']:.2f}× / {ratio['speedup_wall']:.2f}× | "
                         f"{b['peak_bytes'] / 2**20:.0f} MiB | {ratio['memory_ratio']:.2f}× | {same} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--modes", default="adjoint",
                    help="comma list of mdd variants: adjoint, unrolled, compiled")
    ap.add_argument("--shapes", type=parse_shape, nargs="+", default=[(10, 3, 32), (2, 1, 28)],
                    help="CLASSESxCHANNELSxSIZE (default: MTT's 10x3x32 and BreastMNIST's 2x1x28)")
    ap.add_argument("--ipcs", type=int, nargs="+", default=[1, 2, 10])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--no-augment", dest="augment", action="store_false",
                    help="no augmentation: losses must then agree to 1e-6")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--device", default="cpu",
                    help="cpu (default) or cuda: the same problems there; on a GPU the memory "
                         "column is torch's peak device memory and the allocator phase is skipped")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.modes.split(",")
    bad = [v for v in variants if v not in ("adjoint", "unrolled", "compiled")]
    if bad:
        ap.error(f"unknown mode {bad[0]!r}; choose from adjoint, unrolled, compiled")
    cuda = torch.device(args.device).type == "cuda"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, N={args.steps}, "
          f"device {torch.cuda.get_device_name() if cuda else 'cpu'}", flush=True)
    benches = [Bench(Shape(*sh, ipc), args.steps, args.width, variants, args.augment, args.device)
               for sh in args.shapes for ipc in args.ipcs]

    # Phase 1, default allocator settings for everyone, interleaved so that a busy shared
    # machine weighs on both sides alike.
    for b in benches:
        for _ in range(args.repeats):
            b.record("reference", b.reference)
            for v in variants:
                b.record(v, b.mdd(v))
    # Phase 2, as mdd.distill runs: inside tuned_malloc, the reference too (for
    # transparency). After this no default-settings run is possible in this process
    # (mallopt freezes glibc's dynamic mmap threshold).
    with tuned_malloc():
        for b in benches if not cuda else []:   # host malloc tuning: nothing to do on a GPU
            for _ in range(args.repeats):
                b.record("reference+tuned", b.reference)
                for v in variants:
                    b.record(v + "+tuned", b.mdd(v))

    summaries = [b.summary() for b in benches]
    summary = {"config": {"steps": args.steps, "width": args.width, "augment": args.augment, "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "repeats": args.repeats, "device": args.device},
               "problems": summaries}
    print(table(summaries))
    if args.json:
        write_text(Path(args.json), json.dumps(summary, indent=2, allow_nan=False))
    return summary


def report(paths: list[str], out: str) -> None:
    """One Markdown file from several ``--json`` results (e.g. one process per shape)."""
    parts = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        c = result["config"]
        parts.append(f"`{path}`: torch {c['torch']}, {c['threads']} thread(s), N = {c['steps']}, "
                     f"width {c['width']}, augmentation {'on' if c.get('augment', True) else 'off'}, "
                     f"best of {c['repeats']} repeats\n\n{table(result['problems'])}")
    write_text(Path(out), "# Matching iteration: mdd against the classic MTT loop\n\n"
               + "\n\n".join(parts) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:   # --report OUT.md IN.json ...
        if len(sys.argv) < 4:
            print("bench_distill: --report wants OUT.md and at least one --json result", file=sys.stderr)
            sys.exit(2)
        report(sys.argv[3:], sys.argv[2])
    else:
        main()
