"""Where independent jobs run: in this process, in local worker processes, or on a
Dask cluster — all behind the ``concurrent.futures.Executor`` interface.

Experts (DESIGN.md §1.1) are independent, so :mod:`mdd.experts` only ever calls
``executor.submit(fn, job)`` and waits with ``concurrent.futures``. Dask is an optional
extra (``pip install 'mdd[dask]'``); it is imported only when asked for.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib.util
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks, e.g. taskset/cgroups)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class InlineExecutor(cf.Executor):
    """Runs each job at submit time, in this process: no pickling, debuggable, and the
    data already loaded here is reused."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:  # KeyboardInterrupt/SystemExit propagate at once
            future.set_exception(e)
        return future


@dataclass
class Placement:
    """An open executor and how each job should size its torch thread pool.

    ``threads``: torch intra-op threads per job. None (Dask, unless asked) lets each job
    take its host's cores // slots threads (:func:`job_threads`), where ``host_slots``
    maps each worker host to the number of jobs that can run there at once.
    """

    executor: cf.Executor
    kind: str  # "inline", "processes" or "dask"
    workers: int
    threads: int | None
    host_slots: dict[str, int] = field(default_factory=dict)
    address: str | None = None

    def describe(self) -> str:
        if self.kind == "dask":
            return f"dask {self.address} ({self.workers} worker threads)"
        if self.kind == "processes":
            return f"{self.workers} local processes × {_threads(self.threads)}"
        return f"this process, {_threads(self.threads)}"


def _threads(n: int | None) -> str:
    return f"{n} thread{'s' * (n != 1)}"


def job_threads(threads: int | None, host_slots: dict[str, int]) -> int:
    """Torch threads for a job running here; on a Dask worker, this host's share of cores."""
    if threads:
        return threads
    slots = 1
    try:
        from distributed import get_worker
        host = urlsplit(get_worker().address).hostname
        slots = host_slots.get(host, 1)
    except (ImportError, ValueError):  # not on a Dask worker
        pass
    return max(1, available_cores() // max(1, slots))


@contextlib.contextmanager
def open_executor(workers: int | None = None, pending: int = 1, threads: int | None = None,
                  scheduler: str | None = None, client: Any = None,
                  inline_ok: bool = True) -> Iterator[Placement]:
    """Open the executor a run asked for; close what was opened here on exit.

    - ``client`` (a ``dask.distributed.Client``) or ``scheduler`` ("tcp://host:port"): Dask.
      A passed client is left open; one made from ``scheduler`` is closed.
      ``scheduler="local"``: a Dask LocalCluster started here (:func:`local_cluster`).
    - ``workers=0``: this process. ``workers=W``: W spawned local processes.
    - ``workers=None``: one local process per core, at most ``pending`` (the number of
      jobs); when that is one (or ``inline_ok`` and a single core), this process.

    Jobs get ``threads`` torch threads each; by default cores // workers locally and, on
    Dask, each host's cores // its worker threads, so jobs never oversubscribe a machine.
    """
    if client is not None or scheduler is not None:
        with _dask(scheduler, client, threads) as placement:
            yield placement
        return
    cores = available_cores()
    if workers is None:
        workers = min(cores, max(1, pending))
        if workers == 1 and inline_ok:
            workers = 0
    if workers < 0:
        raise ValueError(f"--workers must be 0 (this process) or more, got {workers}")
    per_job = threads or max(1, cores // max(1, workers))
    if workers == 0:
        yield Placement(InlineExecutor(), "inline", 1, per_job)
        return
    # spawn, not fork: forking a process whose torch thread pools already started can
    # deadlock, and a fresh interpreter does not inherit the parent's loaded arrays.
    pool = cf.ProcessPoolExecutor(max_workers=workers,
                                  mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        yield Placement(pool, "processes", workers, per_job)
    finally:
        # On an error or Ctrl-C, drop queued jobs instead of running them to the end.
        pool.shutdown(wait=True, cancel_futures=True)


def _exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """Pool-worker initializer: exit when the parent process is gone.

    A SIGKILLed parent cannot shut its pool down, and its workers would otherwise
    finish their expert and then block for ever writing the result to a pipe no one
    reads (they hold its read end too, so no EPIPE comes).
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="mdd-exit-with-parent", daemon=True).start()


#: ``scheduler`` value that starts a Dask LocalCluster here (:func:`local_cluster`).
LOCAL = "local"


def dask_available() -> bool:
    """Whether Dask distributed is installed (the ``mdd[dask]`` extra)."""
    return importlib.util.find_spec("distributed") is not None


@contextlib.contextmanager
def local_cluster(scheduler: str | None, client: Any = None) -> Iterator[tuple[str | None, Any]]:
    """``(scheduler, client)`` to run on: for ``scheduler == "local"`` (and no client) a
    Dask LocalCluster of one single-threaded worker process per core, with its client,
    closed on exit; anything else is passed through. One worker per core, one thread
    each: on a small machine two one-thread jobs beat one two-thread job, and a
    process per worker keeps the global RNG seeding of each job its own."""
    if scheduler != LOCAL or client is not None:
        yield scheduler, client
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("--scheduler local needs Dask: pip install 'mdd[dask]'") from None
    with LocalCluster(n_workers=available_cores(), threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as own:
        yield None, own


@contextlib.contextmanager
def _dask(scheduler: str | None, client: Any, threads: int | None) -> Iterator[Placement]:
    with local_cluster(scheduler, client) as (scheduler, client):
        with _dask_client(scheduler, client, threads) as placement:
            yield placement


@contextlib.contextmanager
def _dask_client(scheduler: str | None, client: Any, threads: int | None) -> Iterator[Placement]:
    own = client is None
    if own:
        try:
            from distributed import Client
        except ImportError:
            raise ValueError("--scheduler needs Dask: pip install 'mdd[dask]'") from None
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise ValueError(f"could not connect to the Dask scheduler at {scheduler}: {e}") from None
    try:
        info = client.scheduler_info()
        slots: dict[str, int] = {}
        for w in info.get("workers", {}).values():
            slots[w["host"]] = slots.get(w["host"], 0) + int(w.get("nthreads", 1))
        # pure=False: two jobs with equal arguments must both run, not share one result.
        executor = client.get_executor(pure=False)
        try:
            yield Placement(executor, "dask", sum(slots.values()), threads, slots,
                            info.get("address") or scheduler)
        finally:
            executor.shutdown(wait=False)  # cancels what is still queued on error
    finally:
        if own:
            client.close()
