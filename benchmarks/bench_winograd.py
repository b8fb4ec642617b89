"""Issue 13, "fewer convolution FLOPs": is Winograd F(2×2, 3×3) a way to the CPU targets?

The matching step's cost is its 3×3 convolutions, and most of it is ConvNet-128-3's
second layer (128 → 128 channels). Winograd F(2×2, 3×3) computes that convolution with
2.25× fewer multiplications: 16 batched GEMMs between transformed 4×4 input tiles and
transformed filters, then an output transform. This times one forward convolution of
that layer three ways, interleaved in one process on one torch thread: oneDNN's direct
convolution (``F.conv2d``, what mdd and the reference use), Winograd written in torch
(transforms as explicit additions) eager and under ``torch.compile``, and the Winograd
GEMM core alone — the bound any fused Winograd kernel could approach. Shapes: the
layer's input at BreastMNIST ipc 2 and 10 (2 classes, 14×14) and MTT's ipc 10
(10 classes, 16×16). Prints ms per call, the direct convolution's throughput, and the ratio direct / variant (above 1: the
variant is faster), after checking Winograd against the direct result.

    .venv/bin/python benchmarks/bench_winograd.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = [(4, 128, 14, 14), (20, 128, 14, 14), (100, 128, 16, 16)]


def winograd(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """3×3 convolution, stride 1, padding 1, by Winograd F(2×2, 3×3).

    x: (n, c, h, w) with h, w even; w: (k, c, 3, 3) → (n, k, h, w)."""
    n, c = x.shape[:2]
    k = w.shape[0]
    tiles = F.pad(x, (1, 1, 1, 1)).unfold(2, 4, 2).unfold(3, 4, 2)    # n c th tw 4 4
    th, tw = tiles.shape[2:4]
    V = _bt(_bt(tiles, -2), -1)
    U = _g(_g(w, -2), -1)                                               # k c 4 4
    M = torch.bmm(U.permute(2, 3, 0, 1).reshape(16, k, c),
                  V.permute(4, 5, 1, 0, 2, 3).reshape(16, c, n * th * tw))
    M = M.reshape(4, 4, k, n, th, tw).permute(3, 2, 4, 5, 0, 1)         # n k th tw 4 4
    Y = _at(_at(M, -2), -1)                                             # n k th tw 2 2
    return Y.permute(0, 1, 2, 4, 3, 5).reshape(n, k, 2 * th, 2 * tw)


def _bt(d: torch.Tensor, dim: int) -> torch.Tensor:
    d0, d1, d2, d3 = d.unbind(dim)
    return torch.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], dim)


def _g(g: torch.Tensor, dim: int) -> torch.Tensor:
    g0, g1, g2 = g.unbind(dim)
    return torch.stack([g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2], dim)


def _at(m: torch.Tensor, dim: int) -> torch.Tensor:
    m0, m1, m2, m3 = m.unbind(dim)
    return torch.stack([m0 + m1 + m2, m1 - m2 - m3], dim)


def _ms(fn, calls: int = 10) -> float:
    t0 = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - t0) / calls * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    compiled = torch.compile(winograd, dynamic=False)
    print("input shape | direct ms | direct GFLOP/s | winograd eager ms | winograd compiled ms | GEMM core ms | "
          "direct / eager | direct / compiled | direct / core | rel. error")
    for shape in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=gen)
        w = torch.randn(128, 128, 3, 3, generator=gen) * 0.05
        ref = F.conv2d(x, w, padding=1)
        err = max(float((f(x, w) - ref).norm() / ref.norm()) for f in (winograd, compiled))
        tiles = shape[0] * (shape[2] // 2) * (shape[3] // 2)
        U, V = torch.randn(16, 128, 128), torch.randn(16, 128, tiles)
        variants = {"direct": lambda: F.conv2d(x, w, padding=1), "eager": lambda: winograd(x, w),
                    "compiled": lambda: compiled(x, w), "core": lambda: torch.bmm(U, V)}
        best = {name: float("inf") for name in variants}
        for _ in range(args.rounds):          # interleaved: a busy machine weighs on all alike
            for name, fn in variants.items():
                best[name] = min(best[name], _ms(fn))
        d = best["direct"]
        gflop = 2 * shape[0] * shape[2] * shape[3] * 128 * 128 * 9 / 1e9
        print(f"{shape} | {d:.2f} | {gflop / d * 1e3:.0f} | {best['eager']:.2f} | {best['compiled']:.2f} | {best['core']:.2f} | "
              f"{d / best['eager']:.2f} | {d / best['compiled']:.2f} | {d / best['core']:.2f} | {err:.1e}")


if __name__ == "__main__":
    main()
