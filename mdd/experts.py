"""Expert trajectories (DESIGN.md §1.1): networks trained on the real data with their
flat parameters saved along the way, one safetensors file per expert.

Snapshots are taken every ``snapshot_every`` SGD steps (the unit DESIGN.md §1.2 asks
for: an epoch is 2 steps on BreastMNIST and 18 on PneumoniaMNIST at batch 256), or,
for recipes without it, after every epoch. Row t of a trajectory is its *position* t;
the manifest's ``snapshot_unit``/``snapshot_steps`` say what a position is, and each
expert entry records ``param_distance`` ‖θ_t − θ_0‖ per position, from which targets
can be given as distance quantiles (:meth:`ExpertSet.position_at_distance`).

A folder of experts::

    manifest.json          flag, size, recipe, seed, layout, normalization, versions, experts[]
    expert_000.safetensors "trajectory": (T+1)×P, positions 0…T of one expert (fp32 or fp16)

``ExpertSet(folder)`` reads it back for the matching code. ``train_experts`` fills a
folder, resuming where a killed run stopped; experts are independent jobs that run in
this process, in local worker processes or on a Dask cluster (:mod:`mdd.executors`).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__, validate
from .alloc import tuned_malloc
from .augment import Augment, AugmentConfig
from .data import MedMNIST, Normalization, load, resolve_root
from .evaluate import metrics, predict, resolve_device
from .executors import Placement, available_cores, job_threads, open_executor
from .io import read_json, write_json
from .locks import folder_lock
from .nets import ConvNet, ParamLayout, flatten_params
from .provenance import versions
from .trajectory_io import load_snapshots, load_trajectory, trajectory_bytes, write_bytes

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class ExpertRecipe:
    """How each expert is trained (MTT's defaults). Every field lands in the manifest."""

    epochs: int = 50
    steps: int | None = None          # SGD steps in all (wins over epochs when set)
    snapshot_every: int | None = None  # SGD steps between snapshots; None: every epoch
    drop_last: bool = False           # no ragged last batch (a full-lr step on a few images)
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    width: int = 128
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    fp16: bool = False

    def __post_init__(self) -> None:
        validate.expert_recipe(self)   # epochs ≥ 1, lr > 0, …: one line naming the field

    def to_dict(self) -> dict:
        return asdict(self)

    def steps_per_epoch(self, n: int) -> int:
        """SGD steps one pass over ``n`` training images takes."""
        if n <= self.batch_size:
            return 1
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def total_steps(self, n: int) -> int:
        return self.steps if self.steps is not None else self.epochs * self.steps_per_epoch(n)

    def positions(self, n: int) -> int:
        """T, the index of the last snapshot (there are T + 1)."""
        if self.snapshot_every is None:
            return -(-self.total_steps(n) // self.steps_per_epoch(n))
        return self.total_steps(n) // self.snapshot_every

    def position_steps(self, n: int) -> int:
        """SGD steps between two consecutive positions."""
        return self.snapshot_every or self.steps_per_epoch(n)

    @classmethod
    def from_dict(cls, d: dict) -> "ExpertRecipe":
        d = dict(d)
        aug = dict(d.get("augment", {}))
        if "augment" in d:
            # recorded before augmentation modes existed: every group at every call
            aug.setdefault("mode", "compose")
        d["augment"] = AugmentConfig(**aug)
        # recipes recorded before trajectories in steps kept the ragged last batch
        d.setdefault("drop_last", False)
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


#: experts, length and width per preset, in SGD steps so that a preset is the same
#: problem on every data set (the epoch count follows from the data). ``cpu``: six
#: experts (an even count keeps both workers of a 2-core machine busy; PTM's fixed
#: start needs more than a few), 150 steps each, a snapshot every 5 steps (31
#: positions), no ragged last batch.
PRESETS: dict[str, dict] = {
    "smoke": dict(experts=2, epochs=2, width=32, steps=8, snapshot_every=2, drop_last=True),
    "cpu": dict(experts=6, epochs=50, width=128, steps=150, snapshot_every=5, drop_last=True),
    "paper": dict(experts=100, epochs=50, width=128, steps=1000, snapshot_every=10, drop_last=True),
}


def preset_recipe(preset: str, **overrides: Any) -> tuple[ExpertRecipe, int]:
    """(recipe, number of experts) of a preset; ``overrides`` that are not None win.

    ``overrides`` may name any :class:`ExpertRecipe` field and ``experts``. Epochs asked
    for without steps replace the preset's step count: the length, and the positions
    unless ``snapshot_every`` is given too, are then in epochs.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    values = {**PRESETS[preset], **given}
    if "epochs" in given and "steps" not in given:
        values["steps"] = None
        values["snapshot_every"] = given.get("snapshot_every")
    experts = int(values.pop("experts"))
    names = {f.name for f in fields(ExpertRecipe)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"not recipe fields: {sorted(unknown)}")
    return ExpertRecipe(**values), experts


def expert_file(i: int) -> str:
    return f"expert_{i:03d}.safetensors"


def build_net(data: MedMNIST, width: int) -> ConvNet:
    return ConvNet(data.n_channels, data.num_classes, data.size, width=width)


def train_expert(data: MedMNIST, recipe: ExpertRecipe, seed: int, device: str = "auto",
                 progress: bool = False) -> tuple[torch.Tensor, dict]:
    """Train one expert; returns its trajectory (T+1)×P (float32, CPU) and val/test accuracy.

    Positions are every ``recipe.snapshot_every`` SGD steps, or every epoch when that
    is None (then ``recipe.epochs`` epochs, or ``recipe.steps`` steps when set).

    ``seed`` fixes the initialization, the batch order and the augmentation: the same
    seed, device and thread count give the same trajectory bit for bit.
    """
    dev = resolve_device(device)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = build_net(data, recipe.width).to(dev)
    aug = Augment(data.flag, recipe.augment).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    x, y = data.train.x, data.train.y
    snapshots = [flatten_params(net).cpu()]
    total, every = recipe.total_steps(len(y)), recipe.snapshot_every
    bar = tqdm(total=total, desc=f"expert seed {seed}", leave=False, disable=not progress,
               unit="step")
    step = 0
    while step < total:
        net.train()
        batches = torch.randperm(len(y), generator=g).split(recipe.batch_size)
        if recipe.drop_last and len(batches) > 1 and len(batches[-1]) < recipe.batch_size:
            batches = batches[:-1]
        for idx in batches:
            loss = F.cross_entropy(net(aug(x[idx].to(dev))), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update()
            if every is not None and step % every == 0:
                snapshots.append(flatten_params(net).cpu())
            if step >= total:
                break
        if every is None:
            snapshots.append(flatten_params(net).cpu())
    bar.close()
    traj = torch.stack(snapshots)
    result = {"param_distance": [round(float(d), 6) for d in (traj - traj[0]).double().norm(dim=1)]}
    for split in ("val", "test"):
        s = data.split(split)
        result[f"{split}_acc"], result[f"{split}_auc"] = metrics(s.y.numpy(), predict(net, s.x), data.task)
    return traj, result


# ---------------------------------------------------------------- manifest
def write_manifest(out: Path, manifest: dict) -> None:
    """Write ``out/manifest.json`` atomically."""
    write_json(out / MANIFEST, manifest)


def new_manifest(data: MedMNIST, recipe: ExpertRecipe, seed: int = 0) -> dict:
    net = build_net(data, recipe.width)
    n = len(data.train.y)
    return {"format": FORMAT_VERSION, "flag": data.flag, "size": data.size,
            "n_channels": data.n_channels, "num_classes": data.num_classes,
            "recipe": recipe.to_dict(), "seed": seed, "net": net.config,
            "n_train": n, "steps_per_epoch": recipe.steps_per_epoch(n),
            "total_steps": recipe.total_steps(n), "positions": recipe.positions(n),
            "snapshot_unit": "steps" if recipe.snapshot_every else "epochs",
            "snapshot_steps": recipe.position_steps(n),
            "layout": ParamLayout.of(net).to_dict(), "norm": data.norm.to_dict(),
            "versions": versions(), "experts": []}


def _identity(m: dict) -> dict:
    """The parts of a manifest that must agree before two runs may share a folder.

    The recipe goes through :class:`ExpertRecipe` so that a field added in a later
    version (with its default) does not make an older folder look different.
    """
    return {"format": m["format"], "flag": m["flag"], "size": m["size"],
            "recipe": ExpertRecipe.from_dict(m["recipe"]).to_dict(), "layout": m["layout"]}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values: "recipe.lr: 0.01 ≠ 0.02"."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in dict.fromkeys([*a, *b])
                for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')}: {_short(a)} there, {_short(b)} asked"]


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _resume_manifest(out: Path, fresh: dict) -> dict:
    """The manifest to continue in ``out``: the old one with its finished experts, or
    ``fresh``. Raises ValueError when ``out`` holds experts of another recipe or seed."""
    path = out / MANIFEST
    if not path.is_file():
        strays = sorted(p.name for p in out.glob("expert_*.safetensors"))
        if strays:
            raise ValueError(f"{out} holds {strays[0]} but no {MANIFEST}; pick an empty --out")
        return fresh
    try:
        old = read_json(path)
        diffs = _differences(_identity(old), _identity(fresh))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not an mdd expert manifest ({e}); pick another --out") from None
    base = old.get("seed", fresh["seed"])
    if any(e["seed"] != base + e["id"] for e in old["experts"]):
        base = None  # a folder from before "seed" was recorded, with other seeds
    if base != fresh["seed"]:
        diffs.append(f"seed: {json.dumps(base)} there, {fresh['seed']} asked")
    if diffs:
        raise ValueError(f"{out} holds experts of another recipe ({'; '.join(diffs)}); "
                         "use another --out, or delete that folder to retrain")
    kept = [e for e in old["experts"] if (out / e["file"]).is_file()]
    return {**fresh, **old, "seed": fresh["seed"], "experts": kept}


# ---------------------------------------------------------------- one expert, anywhere
@dataclass
class ExpertJob:
    """Everything a worker needs to train expert ``id``: plain values, so it pickles."""

    flag: str
    size: int
    root: str
    recipe: dict
    id: int
    seed: int
    device: str = "auto"
    threads: int | None = None
    host_slots: dict[str, int] = field(default_factory=dict)
    tuned_malloc: bool = True
    progress: bool = False


_DATA: dict[tuple, MedMNIST] = {}


def _load_cached(flag: str, size: int, root: str) -> MedMNIST:
    """Load once per process: a worker that trains several experts reads the file once."""
    key = (flag, size, root)
    if key not in _DATA:
        _DATA.clear()  # keep one data set, not every one this process has seen
        _DATA[key] = load(flag, size=size, root=root)
    return _DATA[key]


def run_job(job: ExpertJob) -> tuple[bytes, dict]:
    """Train one expert where this runs; returns its file's bytes and its manifest entry.

    Bytes rather than a path: a Dask worker need not share a file system with the
    caller, and only the caller writes the folder (so the manifest has one writer).
    """
    threads = job_threads(job.threads, job.host_slots)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = _load_cached(job.flag, job.size, job.root)
        recipe = ExpertRecipe.from_dict(job.recipe)
        t0 = time.perf_counter()
        with tuned_malloc(job.tuned_malloc):
            traj, result = train_expert(data, recipe, job.seed, job.device, job.progress)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    # No safetensors metadata: its keys are serialized in a per-process random order, and
    # equal trajectories should give equal files.
    payload = trajectory_bytes(traj, recipe.fp16)
    entry = {"id": job.id, "seed": job.seed, "file": expert_file(job.id), **result,
             "seconds": round(seconds, 2), "device": str(resolve_device(job.device)),
             "threads": threads, "host": socket.gethostname(), "mdd": __version__,
             "torch": torch.__version__}
    return payload, entry


# ---------------------------------------------------------------- many experts
def train_experts(flag: str, out: str | Path, experts: int, recipe: ExpertRecipe | None = None,
                  root=None, size: int = 28, seed: int = 0, device: str = "auto",
                  progress: bool = True, workers: int | None = None, threads: int | None = None,
                  scheduler: str | None = None, client: Any = None, tuned: bool = True,
                  on_expert: Callable[[dict], None] | None = None) -> dict:
    """Train experts ``0 … experts-1`` into ``out``, resuming: finished experts are skipped.

    Expert ``i`` uses seed ``seed + i``. Each finished expert's file is written
    atomically and then the manifest, so a killed run loses at most the experts in
    progress. A folder whose manifest has another recipe, dataset or seed is refused.

    Where experts run (:func:`mdd.executors.open_executor`): ``workers=None`` one local
    process per core (this process when one expert is left or on a GPU), ``workers=0``
    this process, ``workers=W`` W processes; ``scheduler="tcp://…"`` or ``client`` (a
    ``dask.distributed.Client``) a Dask cluster whose workers can read ``root``.
    ``threads``: torch threads per local job (default :func:`default_threads`). ``tuned``:
    glibc allocator tuning around training (:mod:`mdd.alloc`). ``on_expert(entry)`` is
    called after each expert is on disk. Returns the manifest.
    """
    validate.check_flag(flag)
    validate.check_values({"experts": experts, "size": size, "seed": seed, "threads": threads,
                           "workers": workers}, validate.CLI["experts"], skip_none=True)
    validate.check_device(device)
    recipe = recipe or ExpertRecipe()
    root = str(resolve_root(root).resolve())  # workers may start in another directory
    data = _load_cached(flag, size, root)
    if recipe.positions(len(data.train.y)) < 1:
        raise ValueError(f"the recipe trains {recipe.total_steps(len(data.train.y))} SGD steps on "
                         f"{flag}, fewer than one snapshot interval ({recipe.snapshot_every}); "
                         "train longer or snapshot more often")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if workers is None and resolve_device(device).type == "cuda":
        workers = 0  # one GPU: processes would only queue on it
    if threads is None and scheduler is None and client is None:
        threads = default_threads(experts, workers)
    with folder_lock(out, "mdd experts"):
        manifest = _resume_manifest(out, new_manifest(data, recipe, seed))
        for tmp in out.glob(".*.tmp"):  # half-written files of a killed run
            tmp.unlink()
        write_manifest(out, manifest)  # claims the folder for this recipe at once
        done = {e["id"] for e in manifest["experts"]}
        todo = [i for i in range(experts) if i not in done]
        if not todo:
            return manifest
        with open_executor(workers, len(todo), threads, scheduler, client) as place:
            jobs = [ExpertJob(flag, size, root, recipe.to_dict(), i, seed + i, device,
                              place.threads, place.host_slots, tuned,
                              progress=progress and place.kind == "inline") for i in todo]
            bar = tqdm(total=len(done) + len(todo), initial=len(done), unit="expert",
                       desc=f"experts {flag} ({place.describe()})", disable=not progress)
            with bar:
                _run_jobs(place, jobs, out, manifest, bar, on_expert)
    return manifest


def default_threads(experts: int, workers: int | None) -> int:
    """Torch threads per local job when none are asked for: the cores shared by the
    workers a fresh run of ``experts`` experts would start. A function of the request,
    not of how many experts are left, so a resumed run trains each expert with the
    thread count (and so the bits) an uninterrupted one would have used."""
    cores = available_cores()
    slots = workers if workers is not None else min(cores, experts)
    return max(1, cores // max(1, slots))


def _run_jobs(place: Placement, jobs: list[ExpertJob], out: Path, manifest: dict,
              bar: tqdm, on_expert: Callable[[dict], None] | None) -> None:
    """Submit ``jobs``, record each finished one; on a failure, keep what finishes."""
    # Inline jobs run inside submit(): one at a time, so each is recorded before the next.
    window = 1 if place.kind == "inline" else len(jobs)
    pending, running = list(jobs), {}
    failure: tuple[int, BaseException] | None = None
    while pending or running:
        while pending and len(running) < window and failure is None:
            job = pending.pop(0)
            running[place.executor.submit(run_job, job)] = job
        finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for fut in finished:
            job = running.pop(fut)
            if fut.cancelled():
                continue
            if fut.exception() is not None:
                failure = failure or (job.id, fut.exception())
                pending.clear()
                for other in running:
                    other.cancel()  # queued ones stop; running ones finish and are kept
                continue
            payload, entry = fut.result()
            write_bytes(out / entry["file"], payload)
            manifest["experts"] = sorted([*manifest["experts"], entry], key=lambda e: e["id"])
            write_manifest(out, manifest)
            bar.update()
            bar.set_postfix(test_acc=f"{entry['test_acc']:.3f}")
            if on_expert is not None:
                on_expert(entry)
    if failure is not None:
        i, err = failure
        if hasattr(err, "add_note"):
            err.add_note(f"while training expert {i}; finished experts are kept in {out}")
        raise err


# ---------------------------------------------------------------- reading
class ExpertSet:
    """A folder of expert trajectories, as the matching code reads it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no expert manifest at {path}; train experts with "
                                    f"`mdd experts --flag F --out {self.folder}`")
        self.manifest = read_json(path)
        self.entries = [e for e in self.manifest["experts"] if (self.folder / e["file"]).is_file()]
        if not self.entries:
            raise FileNotFoundError(f"{self.folder} lists no finished experts")
        lay = self.manifest["layout"]
        self.layout = ParamLayout(tuple(lay["names"]), tuple(tuple(s) for s in lay["shapes"]))
        self.norm = Normalization.from_dict(self.manifest["norm"])
        self.recipe = ExpertRecipe.from_dict(self.manifest["recipe"])

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def positions(self) -> int:
        """T: the trajectories hold positions 0…T (see the module docstring)."""
        if "positions" in self.manifest:
            return int(self.manifest["positions"])
        return self.recipe.epochs   # manifests from before positions: one per epoch

    @property
    def epochs(self) -> int:
        """Old name of :attr:`positions` (they were epochs once)."""
        return self.positions

    @property
    def snapshot_unit(self) -> str:
        return self.manifest.get("snapshot_unit", "epochs")

    @property
    def position_steps(self) -> int | None:
        """Expert SGD steps between consecutive positions (None when not recorded)."""
        return self.manifest.get("snapshot_steps")

    def position_of_steps(self, steps: int) -> int:
        """The position nearest ``steps`` expert SGD steps from the start (≥ 1 for steps > 0)."""
        per = self.position_steps
        if per is None:
            raise ValueError(f"the experts in {self.folder} do not record SGD steps per position; "
                             "retrain them, or give positions in their own unit")
        return max(int(steps > 0), min(self.positions, round(steps / per)))

    def mean_distance(self) -> list[float]:
        """‖θ_t − θ_0‖ per position, averaged over the experts (from the manifest when
        recorded, else computed from the trajectories)."""
        rows = []
        for i, e in enumerate(self.entries):
            d = e.get("param_distance")
            if d is None:
                t = self.trajectory(i).double()
                d = (t - t[0]).norm(dim=1).tolist()
            rows.append(d)
        return torch.tensor(rows, dtype=torch.float64).mean(0).tolist()

    def position_at_distance(self, q: float) -> int:
        """The first position whose mean distance from θ_0 reaches ``q`` × the mean final
        distance (q in (0, 1]): a target that means the same share of the way on any data."""
        if not 0 < q <= 1:
            raise ValueError(f"a distance quantile must be in (0, 1], got {q}")
        d = self.mean_distance()
        goal = q * d[-1]
        return next(t for t, v in enumerate(d) if v >= goal - 1e-12 and t > 0) if len(d) > 1 else 0

    def trajectory(self, i: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """Expert ``i``'s trajectory, (T+1)×P float32."""
        return load_trajectory(self.folder / self.entries[i]["file"], device)

    def snapshots(self, i: int, epochs: list[int],
                  device: str | torch.device = "cpu") -> torch.Tensor:
        """Epochs ``epochs`` of expert ``i``, len(epochs)×P float32, without reading the rest."""
        return load_snapshots(self.folder / self.entries[i]["file"], epochs, device)

    def net(self) -> ConvNet:
        """A ConvNet with this set's architecture (its parameters are not the experts')."""
        c = self.manifest["net"]
        return ConvNet(c["channels"], c["num_classes"], c["image_size"], c["width"], c["depth"])

    def digest(self) -> str:
        """A hash of the manifest, recorded by whatever is distilled from these experts."""
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- command line
def _experts_cli(args: argparse.Namespace) -> dict | list[dict]:
    recipe, experts = preset_recipe(
        args.preset, experts=args.experts, epochs=args.epochs, steps=args.steps,
        snapshot_every=args.snapshot_every, width=args.width, lr=args.lr,
        momentum=args.momentum, batch_size=args.batch_size, fp16=args.fp16 or None)
    trained: list[int] = []
    t0 = time.perf_counter()
    try:
        manifest = train_experts(args.flag, args.out, experts, recipe, root=args.root,
                                 size=args.size, seed=args.seed, device=args.device,
                                 workers=args.workers, threads=args.threads,
                                 scheduler=args.scheduler, tuned=not args.no_tuned_malloc,
                                 on_expert=lambda e: trained.append(e["id"]))
    except KeyboardInterrupt:
        print(f"mdd experts: interrupted after training {len(trained)} expert(s); finished "
              f"experts stay in {args.out}: run the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
    rows = [{"id": e["id"], "seed": e["seed"], "file": e["file"], "val_acc": e["val_acc"],
             "test_acc": e["test_acc"], "test_auc": e["test_auc"], "seconds": e.get("seconds"),
             "trained_now": e["id"] in trained} for e in manifest["experts"]]
    if args.format == "table":
        return rows
    accs = [e["test_acc"] for e in manifest["experts"]]
    return {"out": str(args.out), "flag": args.flag, "size": args.size, "preset": args.preset,
            "recipe": manifest["recipe"], "finished": len(rows), "trained": sorted(trained),
            "skipped": sorted(r["id"] for r in rows if not r["trained_now"]),
            "test_acc_mean": sum(accs) / len(accs) if accs else None,
            "seconds": round(time.perf_counter() - t0, 1), "experts": rows}
