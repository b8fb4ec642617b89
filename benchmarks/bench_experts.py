"""Expert-training throughput: mdd's per-expert job against a plain torch loop, and the
CPU allocator's share of it.

    python benchmarks/bench_experts.py [--flag breastmnist] [--root DIR] [--epochs 5]
                                       [--width 128] [--threads 1] [--repeats 3]
                                       [--no-allocators] [--parallel]

1. Bookkeeping: in one process, alternating, a plain loop (the same ConvNet, kornia
   augmentation, SGD and batches, nothing else) and :func:`mdd.experts.run_job`
   (the same training plus a snapshot per epoch, val/test evaluation, safetensors
   serialization) and writing its file. Best of ``--repeats``; images/s count training
   images (epochs × train size). Target: mdd ≤ 1.05 × the plain loop's time. On a
   shared machine the CPU-seconds ratio is the stable one: wall time also counts the
   moments another process held the core.
2. Allocators (``--no-allocators`` skips; speed-ups by CPU seconds): the plain loop in
   fresh processes under glibc's defaults, :func:`mdd.alloc.tuned_malloc` (in-process),
   glibc's ``MALLOC_MMAP_MAX_``/``MALLOC_TRIM_THRESHOLD_`` environment, and jemalloc
   through LD_PRELOAD (Debian's libjemalloc2, when installed) with and without a tuned
   MALLOC_CONF.
3. ``--parallel``: :func:`mdd.experts.train_experts` end to end, 2 experts, in this
   process with all cores against one worker process per core.

The machine is shared: timings are best-of-N wall clock, CPU seconds alongside.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mdd.alloc import tuned_malloc  # noqa: E402
from mdd.augment import Augment  # noqa: E402
from mdd.data import load, resolve_root  # noqa: E402
from mdd.executors import available_cores  # noqa: E402
from mdd.experts import (ExpertJob, ExpertRecipe, _load_cached, build_net, run_job,  # noqa: E402
                         train_experts, write_bytes)

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
#: jemalloc keeps freed pages instead of returning them (the same idea as tuned_malloc).
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1"
GLIBC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def plain_loop(data, recipe: ExpertRecipe, seed: int) -> None:
    """What anyone would write: the same network, augmentation, optimizer and batches."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = build_net(data, recipe.width)
    aug = Augment(data.flag, recipe.augment)
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    x, y = data.train.x, data.train.y
    for _ in range(recipe.epochs):
        net.train()
        for idx in torch.randperm(len(y), generator=g).split(recipe.batch_size):
            loss = F.cross_entropy(net(aug(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def mdd_job(args, recipe: ExpertRecipe, out: Path, tuned: bool) -> None:
    job = ExpertJob(args.flag, 28, str(args.root), recipe.to_dict(), 0, 0, "cpu",
                    args.threads, tuned_malloc=tuned)
    payload, entry = run_job(job)
    write_bytes(out / entry["file"], payload)


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bookkeeping(args, data) -> dict:
    """Plain loop and mdd job alternately, same allocator tuning for both."""
    recipe = ExpertRecipe(epochs=args.epochs, width=args.width)
    images = args.epochs * len(data.train)
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "mdd": []}
    with tempfile.TemporaryDirectory() as tmp:
        with tuned_malloc():
            plain_loop(data, ExpertRecipe(epochs=1, width=args.width), 0)  # warm-up
            for _ in range(args.repeats):
                runs["plain"].append(timed(lambda: plain_loop(data, recipe, 0)))
                runs["mdd"].append(timed(lambda: mdd_job(args, recipe, Path(tmp), tuned=True)))
    wall = {k: min(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: min(c for _, c in v) for k, v in runs.items()}
    return {"images": images, **{f"{k}_img_s": round(images / v, 1) for k, v in wall.items()},
            **{f"{k}_cpu_s": round(v, 2) for k, v in cpu.items()},
            "wall_ratio": round(wall["mdd"] / wall["plain"], 3),
            "cpu_ratio": round(cpu["mdd"] / cpu["plain"], 3)}


def child(args) -> None:
    """One allocator measurement in this fresh process; prints one JSON line."""
    torch.set_num_threads(args.threads)
    data = load(args.flag, root=args.root)
    recipe = ExpertRecipe(epochs=args.epochs, width=args.width)
    with tuned_malloc(args.child == "tuned_malloc"):
        plain_loop(data, ExpertRecipe(epochs=1, width=args.width), 0)  # warm-up
        best = min(timed(lambda: plain_loop(data, recipe, 0)) for _ in range(args.repeats))
    print(json.dumps({"mode": args.child, "img_s": round(args.epochs * len(data.train) / best[0], 1),
                      "cpu_s": round(best[1], 2), "wall_s": round(best[0], 2)}))


def allocators(args) -> list[dict]:
    modes = {"glibc default": ("default", {}), "tuned_malloc": ("tuned_malloc", {}),
             "glibc env": ("default", GLIBC_ENV)}
    if Path(JEMALLOC).is_file():
        modes["jemalloc"] = ("default", {"LD_PRELOAD": JEMALLOC})
        modes["jemalloc tuned"] = ("default", {"LD_PRELOAD": JEMALLOC, "MALLOC_CONF": JEMALLOC_CONF})
    rows = []
    for label, (mode, env) in modes.items():
        cmd = [sys.executable, __file__, "--child", mode, "--flag", args.flag, "--root",
               str(args.root), "--epochs", str(args.epochs), "--width", str(args.width),
               "--threads", str(args.threads), "--repeats", str(args.repeats)]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC")}
        out = subprocess.run(cmd, env={**clean, **env, "MDD_TUNED_MALLOC": "1"},
                             capture_output=True, text=True, check=True)
        rows.append({"allocator": label, **json.loads(out.stdout.strip().splitlines()[-1])})
    for r in rows:  # by CPU seconds: on a shared machine wall time also counts waiting
        r["speedup"] = round(rows[0]["cpu_s"] / r["cpu_s"], 2)
    return rows


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped worker processes
    return r.ru_utime + r.ru_stime


def parallel(args) -> list[dict]:
    """2 experts end to end (process start-up included), this process vs worker processes."""
    recipe = ExpertRecipe(epochs=args.epochs, width=args.width)
    cores = available_cores()
    n = 2 * args.epochs * len(load(args.flag, root=args.root).train)
    rows = []
    for workers, threads in ((0, cores), (cores, 1)):
        kids = _children_cpu()
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = timed(lambda: train_experts(args.flag, tmp, 2, recipe, root=args.root,
                                                    workers=workers, threads=threads,
                                                    progress=False))
        cpu += _children_cpu() - kids
        rows.append({"workers": workers or "this process", "threads": threads,
                     "wall_s": round(wall, 1), "img_s": round(n / wall, 1),
                     "cpu_s": round(cpu, 1), "img_per_cpu_s": round(n / cpu, 1)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flag", default="breastmnist")
    p.add_argument("--root", default=None, help="MedMNIST folder (default $MDD_DATA)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: least noise)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-allocators", action="store_true")
    p.add_argument("--parallel", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.root = resolve_root(args.root).resolve()
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)
    data = _load_cached(args.flag, 28, str(args.root))  # the copy run_job will reuse
    print(f"# {args.flag}: {len(data.train)} train images, ConvNet width {args.width}, "
          f"{args.epochs} epochs, {args.threads} torch thread(s), best of {args.repeats}, "
          f"torch {torch.__version__}, {os.cpu_count()} cores", flush=True)
    b = bookkeeping(args, data)
    print(f"plain torch loop   {b['plain_img_s']:8.1f} img/s  ({b['plain_cpu_s']} CPU s)")
    print(f"mdd expert job     {b['mdd_img_s']:8.1f} img/s  ({b['mdd_cpu_s']} CPU s)")
    print(f"mdd / plain        wall x{b['wall_ratio']:.3f}  CPU x{b['cpu_ratio']:.3f}  "
          f"(bookkeeping {100 * (b['cpu_ratio'] - 1):+.1f} % CPU; target < +5 %)", flush=True)
    result = {"bookkeeping": b}
    if not args.no_allocators:
        result["allocators"] = allocators(args)
        for r in result["allocators"]:
            print(f"{r['allocator']:<18} {r['img_s']:8.1f} img/s  ({r['cpu_s']} CPU s)  "
                  f"x{r['speedup']:.2f} by CPU time", flush=True)
    if args.parallel:
        result["parallel"] = parallel(args)
        for r in result["parallel"]:
            print(f"workers={r['workers']} threads={r['threads']}  {r['img_s']:8.1f} img/s "
                  f"({r['wall_s']} s for 2 experts, {r['img_per_cpu_s']} img per CPU s)", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
