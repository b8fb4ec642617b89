"""Kill-anywhere resume, one writer per folder, full disk and read-only folders (issue 14).

The runs are real ``mdd distill`` and ``mdd benchmark`` command lines on the real
BreastMNIST file (smoke sizes, one torch thread), each in its own process: a *zygote*
subprocess imports mdd once and forks one child per run, so that a run costs its work
and not another interpreter start. Children are SIGKILLed at drawn moments: inside the
k-th atomic write (the temp file half written, or whole but not yet renamed), paused
inside a checkpoint write (while a second writer is refused), or after a drawn delay.
The seed of the draws is printed on failure (``MDD_KILL_SEED`` replays it).

What is compared after the resumed run, against an uninterrupted one (which checkpoints
only at the start and the end, where the killed runs checkpoint every iteration):

* byte for byte: ``distilled/distilled.npz`` (fixed zip timestamps, mdd.artifact),
  ``distilled/grid.png``, and the tensors of the final checkpoint;
* equal as data: ``log.jsonl`` and ``evals.jsonl`` without their wall-clock fields
  (``seconds``, ``elapsed``), ``dom_events.jsonl``, the snapshot arrays (their npz
  files carry numpy's zip timestamps, so not their bytes), ``result.json`` without
  ``distill_seconds`` and the paths, the artifact manifest without ``config.out`` and the
  checkpoint cadence (``config.checkpoint_every*``; ``files`` holds the npz's sha256, equal);
* for a benchmark cell (run with the reference's sizes): its npz bytes against the
  reference's, and its results row's metrics and α against the reference's result.json.
"""
from __future__ import annotations

import errno
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from mdd import cli
from mdd.experts import preset_recipe, train_experts
from mdd.locks import FolderBusy, file_lock, folder_lock

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("MDD_DATA") or REPO.parent / "shared" / "medmnist").resolve()
SEED = int(os.environ.get("MDD_KILL_SEED") or random.SystemRandom().randrange(10**6))
WALL = ("seconds", "elapsed")
ITERATIONS = 5

ZYGOTE = textwrap.dedent('''
    """Import mdd once; then, per JSON line on stdin, fork a child that runs one command
    line with the hooks it asks for, and print how it ended."""
    import contextlib, ctypes, json, os, signal, sys, time, traceback
    from pathlib import Path

    import torch
    torch.set_num_threads(1)
    import mdd.io
    from mdd import cli
    cli.build_parser()                      # imports every command module
    import mdd.distill
    REAL = mdd.io.atomic_path


    def hook_writes(spec, count):
        """Count atomic writes; SIGKILL inside the chosen one (after its temp file is
        written, before the rename), or pause there, or raise ENOSPC in it."""
        @contextlib.contextmanager
        def atomic_path(path):
            with REAL(path) as tmp:
                count["n"] += 1
                count["names"].append(Path(path).name)
                ckpt = Path(path).name == "checkpoint.safetensors"
                count["ckpt"] += ckpt
                if spec.get("enospc_checkpoint") == count["ckpt"] and ckpt:
                    tmp.write_bytes(b"partial")
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                yield tmp
                if spec.get("kill_write") == count["n"] or (ckpt and count["ckpt"] in (
                        spec.get("hold_checkpoint"), spec.get("kill_checkpoint"))):
                    if spec.get("cut"):
                        tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
                    if spec.get("hold_checkpoint"):
                        Path(spec["ready"]).write_text(str(os.getpid()))
                        time.sleep(600)
                    os.kill(os.getpid(), signal.SIGKILL)
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("mdd") and getattr(mod, "atomic_path", None) is REAL:
                mod.atomic_path = atomic_path


    def drop_dac():
        """Lose root's right to write where the mode bits say no (CAP_DAC_OVERRIDE and
        CAP_DAC_READ_SEARCH), so that a chmod-ed folder is read-only here too."""
        class Hdr(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]
        libc = ctypes.CDLL(None, use_errno=True)
        hdr, data = Hdr(0x20080522, 0), (Data * 2)()
        if libc.capget(ctypes.byref(hdr), data) == 0:
            data[0].effective &= ~0b110 & 0xFFFFFFFF
            data[0].permitted &= ~0b110 & 0xFFFFFFFF
            libc.capset(ctypes.byref(hdr), data)


    import errno
    for line in sys.stdin:
        spec = json.loads(line)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            rc = 99
            try:
                for fd, name in ((1, "stdout"), (2, "stderr")):
                    os.dup2(os.open(spec[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
                for name, value in spec.get("presets", {}).items():
                    mdd.distill.PRESETS["smoke"][name] = value
                if spec.get("drop_dac"):
                    drop_dac()
                count = {"n": 0, "ckpt": 0, "names": []}
                hook_writes(spec, count)
                try:
                    rc = cli.main(spec["argv"])
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else 1
                if spec.get("count_to"):
                    Path(spec["count_to"]).write_text(json.dumps(count))
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        after = spec.get("kill_after")
        while after is not None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - t0 >= after:
                os.kill(pid, signal.SIGKILL)
                after = None
            time.sleep(0.02)
        else:
            done, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "seconds": time.monotonic() - t0,
                          "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                          "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
''')


class Zygote:
    """The forking runner: ``run(argv, **hooks)`` → how the child ended, its stderr."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        script = tmp / "zygote.py"
        script.write_text(ZYGOTE)
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MDD_DATA": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=tmp, env=env)
        self.n = 0

    def start(self, argv: list[str], **spec) -> Path:
        """Send a run; returns the path its stderr goes to. Read the end with :meth:`wait`."""
        self.n += 1
        err = self.tmp / f"run{self.n}.err"
        spec = {"argv": argv, "stdout": str(self.tmp / f"run{self.n}.out"), "stderr": str(err), **spec}
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        return err

    def wait_ready(self, ready: Path, timeout: float = 300) -> int:
        """The pid a held child wrote to ``ready``; fails (not hangs) if it ended instead."""
        deadline = time.monotonic() + timeout
        while not ready.is_file():
            if select.select([self.proc.stdout], [], [], 0.05)[0]:
                raise AssertionError(f"the run ended before it paused: {self.wait()}")
            assert time.monotonic() < deadline, "the run never paused"
        time.sleep(0.05)   # the pid is written before the pause; let the write finish
        return int(ready.read_text())

    def wait(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return json.loads(line)

    def run(self, argv: list[str], **spec) -> dict:
        err = self.start(argv, **spec)
        end = self.wait()
        end["stderr"] = err.read_text()
        return end

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The zygote, and the smoke experts of the real BreastMNIST (2 × 2 epochs)."""
    if not (ROOT / "breastmnist.npz").is_file():
        pytest.skip(f"breastmnist.npz not in {ROOT}")
    tmp = tmp_path_factory.mktemp("reliability")
    zygote = Zygote(tmp)
    recipe, count = preset_recipe("smoke")
    experts = tmp / "experts"
    train_experts("breastmnist", experts, count, recipe, root=str(ROOT), workers=0, threads=1,
                  progress=False)
    yield {"tmp": tmp, "zygote": zygote, "experts": experts}
    zygote.close()


def distill_argv(work, out: Path, *extra: str) -> list[str]:
    return ["distill", "--flag", "breastmnist", "--ipc", "2", "--method", "ptm+dom", "--preset", "smoke",
            "--experts", str(work["experts"]), "--out", str(out), "--root", str(ROOT), "--threads", "1",
            "--iterations", str(ITERATIONS), "--test-epochs", "2", "--eval-every", "2",
            "--snapshot-every", "2", "--dom-every", "2", "--tau", "0.3", "--quiet", *extra]


@pytest.fixture(scope="module")
def reference(work) -> dict:
    """An uninterrupted distillation (checkpoints only at the start and the end)."""
    out = work["tmp"] / "reference"
    counts = work["tmp"] / "reference.counts"
    end = work["zygote"].run(distill_argv(work, out), count_to=str(counts))
    assert end["rc"] == 0, end["stderr"]
    names = json.loads(counts.read_text())["names"]
    assert names[-1] == "result.json"
    return {"out": out, "writes": len(names), "seconds": end["seconds"]}


# ---------------------------------------------------------------- comparison
def _jsonl(path: Path, drop=WALL) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _without(d: dict, *paths: str) -> dict:
    d = json.loads(json.dumps(d))
    for p in paths:
        *parents, last = p.split(".")
        node = d
        for k in parents:
            node = node.get(k, {})
        node.pop(last, None)
    return d


def _tensors(path: Path) -> dict:
    with safe_open(str(path), framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def assert_same_run(ref: Path, got: Path, seed: int) -> None:
    why = f"(MDD_KILL_SEED={seed})"
    for name in ("distilled.npz", "grid.png"):
        assert (ref / "distilled" / name).read_bytes() == (got / "distilled" / name).read_bytes(), \
            f"distilled/{name} differs {why}"
    a, b = _tensors(ref / "checkpoint.safetensors"), _tensors(got / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), why
    for name in ("log.jsonl", "evals.jsonl", "dom_events.jsonl"):
        assert _jsonl(ref / name) == _jsonl(got / name), f"{name} differs {why}"
    snaps = sorted(p.name for p in (ref / "snapshots").glob("*.npz"))
    assert snaps == sorted(p.name for p in (got / "snapshots").glob("*.npz")) and snaps
    for name in snaps:
        with np.load(ref / "snapshots" / name) as x, np.load(got / "snapshots" / name) as y:
            assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files), name
    volatile = ("config.out", "config.checkpoint_every_s", "config.checkpoint_every")
    ma, mb = (json.loads((d / "distilled" / "manifest.json").read_text()) for d in (ref, got))
    assert _without(ma, *volatile) == _without(mb, *volatile), why
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (ref, got))
    timing = ("distill_seconds", "seconds", "seconds_parts", "out", "artifact")
    assert _without(ra, *timing) == _without(rb, *timing), why
    assert not list(got.rglob("*.tmp")), "a partial write was left behind"


# ---------------------------------------------------------------- kill anywhere
def test_distill_killed_anywhere_resumes_byte_identical(work, reference, capsys) -> None:
    rng = random.Random(SEED)
    z, out = work["zygote"], work["tmp"] / "killed"
    argv = distill_argv(work, out, "--checkpoint-every-s", "0")   # a checkpoint every iteration

    # 1. inside a random atomic write (any file): its temp file cut in half, then SIGKILL
    k = rng.randint(1, reference["writes"])
    end = z.run(argv, kill_write=k, cut=True)
    assert end["signal"] == signal.SIGKILL, (k, end)
    assert not (out / "result.json").exists()

    # 2. paused inside the next checkpoint write: a second writer is refused; SIGKILL there
    ready = work["tmp"] / "ready"
    z.start(argv, hold_checkpoint=1, cut=rng.random() < 0.5, ready=str(ready))
    pid = z.wait_ready(ready)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"being written by another run (mdd distill, pid {pid})" in err
    os.kill(pid, signal.SIGKILL)
    assert z.wait()["signal"] == signal.SIGKILL
    assert f"pid {pid}" in (out / ".lock").read_text()           # the dead holder's note stays

    # 3. after a random delay, wherever the run is (training, evaluating, writing)
    end = z.run(argv, kill_after=rng.uniform(0.1, 0.8) * reference["seconds"])
    assert end["signal"] in (signal.SIGKILL, None), end

    # the stale lock is taken over; the run finishes as if never interrupted
    end = z.run(argv)
    assert end["rc"] == 0, end["stderr"]
    assert_same_run(reference["out"], out, SEED)


#: The smoke preset as the benchmark children run it: the reference run's sizes, so that
#: the grid's cell must reproduce the reference distillation exactly.
BENCH_PRESET = {"iterations": ITERATIONS, "test_epochs": 2, "eval_every": 2, "snapshot_every": 2,
                "dom_every": 2, "tau": 0.3}


def bench_argv(root: Path) -> list[str]:
    return ["benchmark", "--preset", "smoke", "--flags", "breastmnist", "--ipcs", "2",
            "--methods", "ptm+dom", "--seeds", "0", "--runs", str(root / "runs"),
            "--results", str(root / "results.csv"), "--root", str(ROOT)]


def test_benchmark_cell_killed_anywhere_resumes_byte_identical(work, reference, capsys) -> None:
    rng = random.Random(SEED + 1)
    z = work["zygote"]
    got = work["tmp"] / "bench"
    # the grid's experts, made already (the same recipe and seed: the grid reuses them)
    shutil.copytree(work["experts"], got / "runs" / "experts" / "breastmnist-smoke")
    every = {**BENCH_PRESET, "checkpoint_every": 1}    # not part of a run's identity

    # inside a random write of the cell's distillation (the experts manifest comes first)
    end = z.run(bench_argv(got), presets=every, kill_write=rng.randint(1, 1 + reference["writes"]),
                cut=True)
    assert end["signal"] == signal.SIGKILL

    # paused inside a checkpoint write: a second grid is refused, on the same results CSV
    # or on the same runs folder
    ready = work["tmp"] / "bench_ready"
    z.start(bench_argv(got), presets=every, hold_checkpoint=1, ready=str(ready))
    pid = z.wait_ready(ready)
    assert cli.main(bench_argv(got)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"results.csv is being written by another run (mdd benchmark, pid {pid})" in err
    other = [*bench_argv(got)[:-4], "--results", str(work["tmp"] / "other.csv"), "--root", str(ROOT)]
    assert cli.main(other) == 2 and "runs is being written by another run" in capsys.readouterr().err
    os.kill(pid, signal.SIGKILL)
    assert z.wait()["signal"] == signal.SIGKILL

    end = z.run(bench_argv(got), presets=every)
    assert end["rc"] == 0, end["stderr"]
    why = f"(MDD_KILL_SEED={SEED})"
    cell = got / "runs" / "breastmnist-ipc2-ptm+dom-s0"
    assert (reference["out"] / "distilled" / "distilled.npz").read_bytes() == \
        (cell / "distilled" / "distilled.npz").read_bytes(), why
    import pandas as pd
    (row,) = pd.read_csv(got / "results.csv").to_dict("records")
    ref = json.loads((reference["out"] / "result.json").read_text())
    for k in ("acc_mean", "acc_std", "auc_mean", "auc_std", "alpha", "selected_iteration"):
        assert row[k] == ref[k], (k, why)
    assert not list(got.glob(".*.tmp")) and not list(cell.rglob("*.tmp"))


# ---------------------------------------------------------------- full disk, read-only folder
def test_full_disk_and_read_only_folder_keep_the_last_checkpoint(work, reference) -> None:
    z, out = work["zygote"], work["tmp"] / "disk"
    argv = distill_argv(work, out, "--checkpoint-every-s", "0")
    # killed inside its 4th checkpoint write: the 3rd is the last good one
    end = z.run(argv, kill_checkpoint=4, cut=True)
    assert end["signal"] == signal.SIGKILL
    ckpt = out / "checkpoint.safetensors"
    good = ckpt.read_bytes()

    # the disk fills up during the next checkpoint write
    end = z.run(argv, enospc_checkpoint=1)
    assert end["rc"] == 2 and end["stderr"].count("\n") == 1, end["stderr"]
    assert "mdd distill: error: " in end["stderr"] and "No space left on device (ENOSPC)" in end["stderr"]
    assert str(ckpt) in end["stderr"] and "run the same command again to resume" in end["stderr"]
    assert ckpt.read_bytes() == good and not list(out.rglob("*.tmp"))

    # the folder turns read-only
    modes = {p: p.stat().st_mode for p in [out, *out.rglob("*")]}
    for p in modes:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        end = z.run(argv, drop_dac=True)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert end["rc"] == 2 and end["stderr"].count("\n") == 1, end["stderr"]
    assert "Permission denied (EACCES)" in end["stderr"] and str(out) in end["stderr"]
    assert ckpt.read_bytes() == good

    # writable again: it resumes from that checkpoint and ends as the reference did
    end = z.run(argv)
    assert end["rc"] == 0, end["stderr"]
    assert_same_run(reference["out"], out, SEED)



# ---------------------------------------------------------------- the lock itself
def test_a_second_writer_is_refused_in_one_line_and_a_dead_ones_lock_taken(tmp_path) -> None:
    folder = tmp_path / "run"
    with folder_lock(folder, "mdd distill"):
        with pytest.raises(FolderBusy) as busy:
            with folder_lock(folder, "mdd distill"):
                pass
        with file_lock(tmp_path / "results.csv", "mdd benchmark"):   # another file: free
            pass
    msg = str(busy.value)
    assert msg == (f"{folder} is being written by another run (mdd distill, pid {os.getpid()}); "
                   "wait for it to finish or pick another folder")
    assert isinstance(busy.value, ValueError)          # the CLI's exit 2

    pid = os.fork()                                     # a writer that dies holding the lock
    if pid == 0:
        with folder_lock(folder, "mdd distill"):
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert f"pid {pid}" in (folder / ".lock").read_text()
    with folder_lock(folder, "mdd distill"):            # stale: taken over at once
        assert (folder / ".lock").read_text() == f"mdd distill, pid {os.getpid()}"


def test_remove_partial_writes_takes_only_temp_files(tmp_path) -> None:
    from mdd.io import remove_partial_writes
    (tmp_path / "snapshots").mkdir()
    keep = [tmp_path / "checkpoint.safetensors", tmp_path / "x.tmp", tmp_path / "results.csv"]
    gone = [tmp_path / ".checkpoint.safetensors.ab12.tmp", tmp_path / "snapshots" / ".iter_000002.npz.x.tmp"]
    for p in keep + gone:
        p.write_bytes(b"x")
    assert sorted(remove_partial_writes(tmp_path)) == sorted(gone)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)
    (tmp_path / ".results.csv.q.tmp").write_bytes(b"x")
    (tmp_path / ".other.csv.q.tmp").write_bytes(b"x")
    assert remove_partial_writes(tmp_path, of="results.csv") == [tmp_path / ".results.csv.q.tmp"]


def test_a_failed_write_leaves_the_old_file_and_names_the_new_one(tmp_path, monkeypatch) -> None:
    from mdd.io import write_json
    target = tmp_path / "result.json"
    write_json(target, {"ok": 1})

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as e:
        write_json(target, {"ok": 2})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"ok": 1} and not list(tmp_path.glob(".*.tmp"))
