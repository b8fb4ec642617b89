"""Issue 13 item 3, "try eager channels_last": one matching-step kernel in both memory
formats, interleaved in one process.

The step is the costly part of an unrolled matching iteration on BreastMNIST's shape
(ConvNet-128-3, 1×28×28): a forward pass, the parameter gradient with
``create_graph=True`` and the image gradient through it (a second-order pass). Each
format is timed in CPU seconds on one torch thread inside ``tuned_malloc``, alternating
rounds, at batch 4 (ipc 2) and 20 (ipc 10); the two formats' losses and image gradients
are compared first. Prints the ratio channels_last / contiguous (below 1: faster).

    .venv/bin/python benchmarks/bench_channels_last.py [--rounds 6]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mdd.alloc import tuned_malloc
from mdd.nets import build_network


def make_step(batch: int, channels_last: bool):
    torch.manual_seed(0)
    net = build_network("convnet", 1, 2, 28, width=128)
    x = torch.randn(batch, 1, 28, 28)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = torch.randint(0, 2, (batch,), generator=torch.Generator().manual_seed(1))
    params = list(net.parameters())

    def step() -> tuple[float, torch.Tensor]:
        loss = F.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        outer = sum((g * g).sum() for g in grads)
        gx, = torch.autograd.grad(outer, [x])
        return float(outer.detach()), gx
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("batch | contiguous ms/step | channels_last ms/step | ratio | max |Δ grad| / max |grad|")
    with tuned_malloc():
        for batch in (4, 20):
            steps = {cl: make_step(batch, cl) for cl in (False, True)}
            (la, ga), (lb, gb) = steps[False](), steps[True]()
            rel = float((ga - gb).abs().max() / ga.abs().max())
            assert abs(la - lb) <= 1e-5 * abs(la), (la, lb)
            cpu = {False: 0.0, True: 0.0}
            for r in range(args.rounds):
                for cl, step in steps.items():
                    if r == 0:
                        step()   # warm-up (oneDNN primitives)
                    t0 = time.process_time()
                    for _ in range(args.per_round):
                        step()
                    cpu[cl] += time.process_time() - t0
            n = args.rounds * args.per_round
            print(f"{batch} | {1e3 * cpu[False] / n:.1f} | {1e3 * cpu[True] / n:.1f} | "
                  f"{cpu[True] / cpu[False]:.2f} | {rel:.1e}")


if __name__ == "__main__":
    main()
