"""Process-wide torch settings, scoped to a block and restored after it.

* ``torch_threads(n)``: a ConvNet step on a few images is too small to share between
  threads; on a busy 2-core machine two threads mostly wait on each other (measured
  3–10× slower than one thread for distillation and for the evaluation of a small set).
* ``tf32(enabled)``: cuDNN convolutions use TF32 on Ampere and newer GPUs by default.
  Trajectory matching differentiates through N unrolled training steps, and there TF32's
  10-bit mantissa is not noise: on an H200 the image gradients of the adjoint and of the
  unrolled reverse pass differ by 1.9e-3 (of 1.7e-2, about 11 %) with TF32 and agree to
  8e-9 without it (``results/gpu_check_h200_tf32.log``, ``benchmarks/gpu_check.py``).
  Distillation therefore turns it off unless asked.
  No effect on CPU.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (None or 0: unchanged)."""
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 in CUDA matmuls and cuDNN convolutions inside the block."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
