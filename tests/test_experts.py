"""Expert trajectories: training, storage, manifest, resume, executors (issue 3)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import mdd.data
import mdd.experts
from mdd.cli import main
from mdd.executors import available_cores
from mdd.experts import (MANIFEST, ExpertRecipe, ExpertSet, build_net, expert_file, preset_recipe,
                         train_expert, train_experts)
from mdd.trajectory_io import load_trajectory
from mdd.nets import ParamLayout, flatten_params

REPO = Path(__file__).resolve().parents[1]
SMOKE = ExpertRecipe(epochs=2, width=8, batch_size=16)


# ---------------------------------------------------------------- fixtures
def _real_root() -> Path:
    return Path(os.environ.get("MDD_DATA") or REPO.parent / "shared" / "medmnist").resolve()


@pytest.fixture
def real_root() -> Path:
    """The real MedMNIST folder; workers in other processes read real files, since a
    monkeypatched INFO does not travel to them."""
    root = _real_root()
    if not (root / "breastmnist.npz").is_file():
        pytest.skip(f"breastmnist.npz not in {root}")
    return root


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 40/10/10-image breastmnist-format file; INFO patched to accept it (in-process only)."""
    rng = np.random.default_rng(0)
    arrays, sizes = {}, {"train": 40, "val": 10, "test": 10}
    for split, n in sizes.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
    root = tmp_path / "data"
    root.mkdir()
    np.savez(root / "breastmnist.npz", **arrays)
    info = copy.deepcopy(mdd.data.INFO)
    info["breastmnist"]["n_samples"] = sizes
    info["breastmnist"]["MD5"] = mdd.data.md5sum(root / "breastmnist.npz")
    monkeypatch.setattr(mdd.data, "INFO", info)
    return root


def _train(root: Path, out: Path, experts: int = 2, recipe: ExpertRecipe = SMOKE, **kw) -> dict:
    kw = {"workers": 0, "threads": 1, "progress": False, **kw}
    return train_experts("breastmnist", out, experts, recipe, root=root, **kw)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


# ---------------------------------------------------------------- one expert
def test_train_expert_shapes_and_reproducible(tiny: Path) -> None:
    data = mdd.data.load("breastmnist", root=tiny)
    torch.set_num_threads(1)
    a, res = train_expert(data, SMOKE, seed=3, device="cpu")
    b, _ = train_expert(data, SMOKE, seed=3, device="cpu")
    c, _ = train_expert(data, SMOKE, seed=4, device="cpu")
    net = build_net(data, SMOKE.width)
    assert a.shape == (SMOKE.epochs + 1, ParamLayout.of(net).numel)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)  # epoch 0 is the seed's initialization
    assert torch.equal(a[0], flatten_params(build_net(data, SMOKE.width)))
    assert not torch.equal(a[0], a[-1])
    assert set(res) == {"val_acc", "val_auc", "test_acc", "test_auc", "param_distance"}
    assert res["param_distance"][0] == 0 and len(res["param_distance"]) == len(a)


def test_snapshots_every_s_steps_without_a_ragged_batch(tiny: Path) -> None:
    data = mdd.data.load("breastmnist", root=tiny)
    n = len(data.train.y)
    recipe = ExpertRecipe(width=8, batch_size=16, steps=12, snapshot_every=3, drop_last=True)
    assert recipe.steps_per_epoch(n) == n // 16 and recipe.positions(n) == 4
    traj, res = train_expert(data, recipe, seed=0, device="cpu")
    assert traj.shape[0] == 5
    d = res["param_distance"]
    assert d == sorted(d) or d[-1] > d[1]   # it moves away from init
    m = _train(data.root if hasattr(data, "root") else tiny, tiny / "steps", 1, recipe)
    assert m["snapshot_unit"] == "steps" and m["snapshot_steps"] == 3 and m["positions"] == 4
    es = ExpertSet(tiny / "steps")
    assert es.positions == es.epochs == 4 and es.position_of_steps(7) == 2
    assert es.position_at_distance(1.0) == 4 and 1 <= es.position_at_distance(0.3) <= 4


def test_old_manifests_keep_their_meaning() -> None:
    old = ExpertRecipe.from_dict({"epochs": 15, "augment": {"cutout": 0.5}})
    assert old.augment.mode == "compose" and old.drop_last is False and old.snapshot_every is None
    assert old.positions(546) == 15 and old.steps_per_epoch(546) == 3


def test_presets() -> None:
    recipe, n = preset_recipe("smoke", epochs=3, lr=None)
    assert (n, recipe.epochs, recipe.width, recipe.lr) == (2, 3, 32, 0.01)
    recipe, n = preset_recipe("paper")
    assert (n, recipe.epochs, recipe.batch_size, recipe.momentum) == (100, 50, 256, 0.0)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_recipe("huge")


# ---------------------------------------------------------------- folder and reader
def test_folder_layout_manifest_and_reader(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "experts"
    _train(tiny, out, experts=2, seed=7)
    m = json.loads((out / MANIFEST).read_text())
    assert (m["flag"], m["size"], m["seed"], m["format"]) == ("breastmnist", 28, 7, 1)
    assert ExpertRecipe.from_dict(m["recipe"]) == SMOKE
    assert {"mdd", "torch", "python", "git_commit"} <= set(m["versions"])
    assert [(e["id"], e["seed"], e["file"]) for e in m["experts"]] == \
        [(0, 7, expert_file(0)), (1, 8, expert_file(1))]
    for e in m["experts"]:
        assert 0 <= e["test_acc"] <= 1 and 0 <= e["val_acc"] <= 1 and e["seconds"] >= 0
        with safe_open(str(out / e["file"]), framework="pt") as f:  # one tensor, nothing else
            assert list(f.keys()) == ["trajectory"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        sorted([MANIFEST, expert_file(0), expert_file(1)])

    s = ExpertSet(out)
    assert len(s) == 2 and s.epochs == SMOKE.epochs and s.recipe == SMOKE
    assert s.layout == ParamLayout.of(s.net())
    assert s.norm == mdd.data.load("breastmnist", root=tiny).norm
    t = s.trajectory(1)
    assert t.dtype == torch.float32 and t.shape == (SMOKE.epochs + 1, s.layout.numel)
    assert torch.equal(s.snapshots(1, [2, 0]), t[[2, 0]])
    assert s.digest() == ExpertSet(out).digest()


def test_fp16_storage(tiny: Path, tmp_path: Path) -> None:
    _train(tiny, tmp_path / "f32", experts=1)
    _train(tiny, tmp_path / "f16", experts=1, recipe=ExpertRecipe(**{**SMOKE.__dict__, "fp16": True}))
    with safe_open(str(tmp_path / "f16" / expert_file(0)), framework="pt") as f:
        assert f.get_tensor("trajectory").dtype == torch.float16
    full, half = (load_trajectory(tmp_path / d / expert_file(0)) for d in ("f32", "f16"))
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------- resume and refusal
def test_interrupted_run_resumes_without_redoing(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "experts"

    def interrupt(entry: dict) -> None:
        raise KeyboardInterrupt  # as if Ctrl-C arrived right after expert 0 was saved

    with pytest.raises(KeyboardInterrupt):
        _train(tiny, out, experts=3, on_expert=interrupt)
    assert [e["id"] for e in ExpertSet(out).entries] == [0]
    first = _stat(out / expert_file(0))
    (out / f".{expert_file(1)}.x.tmp").write_bytes(b"half")  # a killed atomic write

    trained: list[int] = []
    _train(tiny, out, experts=3, on_expert=lambda e: trained.append(e["id"]))
    assert trained == [1, 2]
    assert _stat(out / expert_file(0)) == first
    assert len(ExpertSet(out)) == 3 and not list(out.glob("*.tmp"))
    trained.clear()
    _train(tiny, out, experts=3, on_expert=lambda e: trained.append(e["id"]))
    assert trained == []


def test_failed_expert_raises_and_keeps_the_others(tiny: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = mdd.experts.train_expert

    def flaky(data, recipe, seed, *args, **kw):
        if seed == 1:
            raise RuntimeError("out of memory")
        return real(data, recipe, seed, *args, **kw)

    monkeypatch.setattr(mdd.experts, "train_expert", flaky)
    out = tmp_path / "experts"
    with pytest.raises(RuntimeError, match="out of memory") as err:
        _train(tiny, out, experts=3)
    assert "while training expert 1" in "".join(getattr(err.value, "__notes__", []))
    assert [e["id"] for e in ExpertSet(out).entries] == [0]  # 2 was never started


def test_refuses_another_recipe_or_seed(tiny: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "experts"
    _train(tiny, out, experts=1)
    other = ExpertRecipe(**{**SMOKE.__dict__, "lr": 0.02})
    with pytest.raises(ValueError, match=r"another recipe \(recipe\.lr: 0\.01 there, 0\.02 asked\)"):
        _train(tiny, out, experts=2, recipe=other)
    with pytest.raises(ValueError, match="seed: 0 there, 5 asked"):
        _train(tiny, out, experts=2, seed=5)
    assert len(ExpertSet(out)) == 1  # nothing was mixed in

    rc = main(["experts", "--flag", "breastmnist", "--preset", "smoke", "--out", str(out),
               "--root", str(tiny), "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "another recipe" in err


def test_cli_table(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "experts"
    args = ["experts", "--flag", "breastmnist", "--preset", "smoke", "--experts", "1",
            "--epochs", "1", "--width", "8", "--out", str(out), "--root", str(tiny),
            "--workers", "0", "--threads", "1"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["trained"] == [0] and first["skipped"] == [] and first["finished"] == 1
    assert main([*args, "--experts", "2", "--format", "table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["id", "seed"] and len(lines) == 3
    assert lines[1].split()[-1] == "False" and lines[2].split()[-1] == "True"


# ---------------------------------------------------------------- executors
RECIPE_1 = preset_recipe("cpu", epochs=1, width=8)[0]   # what the CLI asks for


@pytest.fixture(scope="module")
def inline_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 1-epoch experts trained in this process with one thread: the bytes that
    every other executor must reproduce."""
    root = _real_root()
    if not (root / "breastmnist.npz").is_file():
        pytest.skip(f"breastmnist.npz not in {root}")
    out = tmp_path_factory.mktemp("inline")
    _train(root, out, experts=3, recipe=RECIPE_1)
    return out


def _same_files(a: Path, b: Path, ids: list[int]) -> None:
    ma, mb = (json.loads((d / MANIFEST).read_text()) for d in (a, b))
    for key in ("flag", "size", "recipe", "seed", "net", "layout", "norm"):
        assert ma[key] == mb[key], key
    for i in ids:
        assert (a / expert_file(i)).read_bytes() == (b / expert_file(i)).read_bytes()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"  # zombie
    except FileNotFoundError:
        return True


def test_cli_ctrl_c_says_how_to_resume(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args, on_expert, **kw):
        on_expert({"id": 0})
        raise KeyboardInterrupt

    monkeypatch.setattr(mdd.experts, "train_experts", interrupted)
    with pytest.raises(SystemExit) as exit_:
        main(["experts", "--flag", "breastmnist", "--out", str(tmp_path), "--root", str(tiny)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 130
    assert err == (f"mdd experts: interrupted after training 1 expert(s); finished experts "
                   f"stay in {tmp_path}: run the same command to resume")


@pytest.mark.slow
def test_killed_process_pool_run_resumes(real_root: Path, tmp_path: Path, inline_reference: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    """SIGKILL a 2-process run right after its first expert is on disk: its workers
    exit, and the CLI resumes without redoing that expert. Every file, the one from a
    pool worker included, matches the in-process reference byte for byte."""
    out, pids = tmp_path / "experts", tmp_path / "workers.json"
    script = textwrap.dedent(f"""
        import json, multiprocessing, os, signal
        from pathlib import Path
        from mdd.experts import preset_recipe, train_experts

        def kill(entry):
            Path({str(pids)!r}).write_text(json.dumps([p.pid for p in multiprocessing.active_children()]))
            os.kill(os.getpid(), signal.SIGKILL)

        if __name__ == "__main__":
            train_experts("breastmnist", {str(out)!r}, 3, preset_recipe("cpu", epochs=1, width=8)[0],
                          root={str(real_root)!r}, workers=2, threads=1, progress=False,
                          on_expert=kill)
    """)
    (tmp_path / "run.py").write_text(script)
    proc = subprocess.run([sys.executable, str(tmp_path / "run.py")], cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -9
    (first,) = [e["id"] for e in ExpertSet(out).entries]  # whichever finished first
    before = _stat(out / expert_file(first))
    workers = json.loads(pids.read_text())
    assert len(workers) == 2
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(p) for p in workers), "pool workers outlived their killed parent"

    assert main(["experts", "--flag", "breastmnist", "--experts", "3", "--epochs", "1",
                 "--width", "8", "--out", str(out), "--root", str(real_root),
                 "--workers", "0", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == [first] and report["trained"] == sorted({0, 1, 2} - {first})
    assert _stat(out / expert_file(first)) == before
    assert [e["id"] for e in ExpertSet(out).entries] == [0, 1, 2]
    assert {e["threads"] for e in ExpertSet(out).entries} == {1}
    _same_files(inline_reference, out, [0, 1, 2])


@pytest.mark.slow
def test_dask_local_cluster(real_root: Path, tmp_path: Path, inline_reference: Path,
                            capsys: pytest.CaptureFixture) -> None:
    """A real 2-worker Dask cluster on 127.0.0.1: a Client from Python, then the CLI's
    --scheduler resuming the same folder."""
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "experts"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        _train(real_root, out, experts=2, recipe=RECIPE_1, workers=None, threads=1,
               client=client)
        assert main(["experts", "--flag", "breastmnist", "--experts", "3", "--epochs", "1",
                     "--width", "8", "--out", str(out), "--root", str(real_root),
                     "--scheduler", cluster.scheduler_address]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == [0, 1] and report["trained"] == [2]
    _same_files(inline_reference, out, [0, 1])  # one thread per job, as in the reference
    # without --threads, two one-thread workers on one host share its cores
    assert ExpertSet(out).entries[2]["threads"] == max(1, available_cores() // 2)
    s = ExpertSet(out)
    assert len(s) == 3 and s.trajectory(2).shape == (2, s.layout.numel)


def test_a_second_writer_of_the_folder_is_refused(tiny: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """The experts folder has one writer (mdd.locks, shared with distill and benchmark)."""
    from mdd.locks import folder_lock
    out = tmp_path / "experts"
    with folder_lock(out, "mdd experts"):
        with pytest.raises(ValueError, match=r"is being written by another run \(mdd experts, pid"):
            _train(tiny, out, experts=1)
        rc = main(["experts", "--flag", "breastmnist", "--preset", "smoke", "--out", str(out),
                   "--root", str(tiny), "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "being written" in err
    assert not (out / MANIFEST).exists()
    _train(tiny, out, experts=1)                   # released: the next run goes ahead
    assert len(ExpertSet(out)) == 1


def test_default_threads_do_not_depend_on_the_experts_left() -> None:
    """A resumed run trains its experts with the threads a fresh one used: per job, the
    cores over the workers a fresh run of all the experts would start."""
    from mdd.experts import default_threads
    cores = available_cores()
    assert default_threads(4, None) == max(1, cores // min(cores, 4))
    assert default_threads(1, None) == cores
    assert default_threads(4, 0) == cores and default_threads(4, 2) == max(1, cores // 2)
