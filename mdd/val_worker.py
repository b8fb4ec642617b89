"""Val evaluations off the matching's critical path: one background process.

At the cpu preset a run's val evaluations (3 networks trained from scratch, every
``eval_every`` iterations) cost about as much as its matching; on a 2-core machine one
run then keeps only one core busy. With ``DistillConfig.val_background`` the run hands
each evaluation to a :class:`ValWorker` and goes on matching; results come back in
submission order and are recorded exactly as an inline evaluation would be.

A process, not a thread: :func:`mdd.evaluate.train_network` seeds torch's global RNG,
so a thread beside the matching would make both irreproducible. The worker gets the
run's dataset once and trains with the thread count the run has at submission, so its
numbers are the inline ones bit for bit (``tests/test_val_worker.py``). A checkpoint
does not wait for the queue: it saves the queued jobs' images and α, and a resume asks
for them again first. Where the grid
already runs one cell per core, leave it off: a third busy process only waits.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import torch

from . import data as mdata
from .evaluate import EvalConfig, evaluate_set
from .runtime import torch_threads

_DATA: mdata.MedMNIST | None = None   # the worker process's dataset, loaded once


def _keep(data: mdata.MedMNIST) -> None:
    global _DATA
    _DATA = data


def _evaluate(x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig, lr: float, threads: int,
              split: str = "val") -> dict:
    assert _DATA is not None, "the worker's initializer did not run"
    with torch_threads(threads):
        return evaluate_set(x, y, _DATA, cfg, lr=lr, split=split, progress=False)


@dataclass
class ValJob:
    """What a val evaluation was asked about: iteration ``it`` (``main`` matching
    iterations done), the images and α (and label logits) it scored, on the run's device."""
    it: int
    main: int
    images: torch.Tensor
    log_alpha: torch.Tensor
    label_logits: torch.Tensor | None
    future: Future | None = None


class ValWorker:
    """One background process that scores image sets on the val split, FIFO."""

    def __init__(self, data: mdata.MedMNIST):
        # spawn: a fork would copy torch's thread pools and locks mid-use. The dataset
        # travels once, as the run holds it (no second load, no second md5 check).
        ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_keep, initargs=(data,))
        self.pending: deque[ValJob] = deque()

    def submit(self, job: ValJob, x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig,
               lr: float) -> None:
        """Queue ``job``: train ``cfg.models`` networks on (x M×C×H×W, y M) at ``lr``."""
        job.future = self._pool.submit(_evaluate, x.detach().cpu().clone(), y.detach().cpu().clone(),
                                       cfg, lr, torch.get_num_threads())
        self.pending.append(job)

    def score(self, x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig, lr: float,
              split: str) -> Future:
        """Score (x M×C×H×W, y M) on ``split`` outside the val queue (after it, FIFO): the
        run's end scores its last iterate here while it scores the selected set itself."""
        return self._pool.submit(_evaluate, x.detach().cpu().clone(), y.detach().cpu().clone(),
                                 cfg, lr, torch.get_num_threads(), split)

    def done(self, wait: bool = False) -> list[tuple[ValJob, dict | Exception]]:
        """The finished jobs at the head of the queue (all of them with ``wait``), in
        submission order, each with its result or the exception it raised."""
        out: list[tuple[ValJob, dict | Exception]] = []
        while self.pending and (wait or self.pending[0].future.done()):
            job = self.pending.popleft()
            try:
                out.append((job, job.future.result()))
            except Exception as e:   # a diverged training (ValueError) is a result too
                out.append((job, e))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
