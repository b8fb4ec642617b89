"""Privacy audit of a distilled set (DESIGN.md §6): how close is it to real training
images, and does it leak who was in the training split?

Python::

    import mdd
    res = mdd.audit("runs/distill/breastmnist-ipc2-ptm+dom", preset="cpu", shadow=16)

Command line::

    mdd audit --distilled DIR [--preset cpu] [--models K] [--shadow S] [--seed 0]
              [--device auto] [--root DIR]

Writes beside the artifact, in ``<artifact>/audit/`` (``--out`` to change)::

    audit.json     what the command prints (strict JSON: no NaN, missing is null)
    summary.md     the numbers with the threat model and their limits, for people
    arrays.npz     per-image pixels, distances and attack scores (what the figures draw)
    nearest.png    each synthetic image above its init and its nearest training images
    dcr.png        synthetic→train against test→train nearest distances
    roc.png        ROC curves of the attacks, log-scale FPR

The JSON (every float finite or null)::

    artifact, artifact_sha256, flag, size, ipc, method, alpha, n_images, class_names,
    selected_iteration, seed, device, epochs, params (the AuditConfig), seconds, out
    init        source ("manifest" | "run folder" | "config" | "none", maybe
                "… (DOM re-seeds unknown)"), first / rows (train index per synthetic
                image at init / at the selected iteration, −1 unknown), seeds, reseeded
    nearest     n_images, n_init_known, n_flagged, flagged, share_flagged,
                nearest_is_init_counts {pixel, ssim, feature}, moved_pixel {quantiles},
                images [ {index, label, init, reseeded,
                          pixel {nearest [k], distance [k]}, ssim {nearest, ssim},
                          feature {nearest, cosine},
                          nearest_is_init {pixel, ssim, feature}, flagged,
                          moved {pixel, ssim, cosine, init_rank_pixel}} ]
    dcr         synthetic {n, min, p5, median, mean, p95, max}, test {…}, test_p5,
                n_below_test_p5, share_below_test_p5, n_exact_copies,
                feature {the same in 1 − cosine}
    mia         MIA block of the networks trained on the distilled set (below)
    references  random {indices, same_as_init, lr, mia: MIA block},
                full {models, epochs, lr, mia: MIA block}
    threat_model, lira (the LiRA note), limits [text], feature_network, seed_ranges

    MIA block   attack (the strongest network attack: "loss" | "lira"), auc, auc_ci,
                tpr_at_1pct_fpr, tpr_ci, members, nonmembers, fpr_resolution (on all
                members), seeds (the same statistics on the seed members only),
                attacks {loss | lira | distance: {all | seeds | others | subset:
                         ROC statistics or null}},
                target, n_train, lr, models, epochs, seeds_n, test_acc_mean,
                test_acc_std, shadow {models, pool, n_train, epochs, lr, sigma,
                variant} | null, nonfinite_scores
    ROC statistics  auc, auc_ci [lo, hi], tpr_at_1pct_fpr, tpr_ci, members,
                    nonmembers, fpr_resolution, bootstrap

Members are the training split, non-members the test split; ``seeds`` are the train
images the synthetic ones started from or were DOM re-seeded from before the
selected iteration, ``others`` the rest, ``subset`` (random reference only, when it
differs from the seeds) the subset's own images. ``distance`` attacks the released
images (a candidate's pixel distance to the nearest one), not networks. The
``random`` reference is the seeded random subset of the same ipc (the set's own init
when ``init="real"``, ``same_as_init``), trained at lr 0.01 unless ``random_lr``;
``full`` the whole training split, with ``full_models`` × ``full_epochs``.

Seeds: audit networks use their own range, disjoint from distillation, val and test
networks (:mod:`mdd.seeds`): 3 000 000 + 1 000·s + (k for target networks, 200 + k for
shadows, 999 for the feature network). The target networks of the three targets share
seeds (paired comparison); so do their shadows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from . import data as mdata
from . import privacy_metrics as pm
from .alloc import tuned_malloc
from .artifact import ARTIFACT_DIR, DistilledSet, load_distilled
from .baselines import random_subset
from .evaluate import resolve_device
from .io import atomic_path, read_json, write_json, write_text
from .notebooks import shown_path
from .privacy_nearest import (dcr_section, init_provenance, nearest_section,
                              nearest_syn_distance)
from .privacy_networks import (FEATURE_OFFSET, SEED_BASE, SEED_STRIDE, SHADOW_OFFSET, Target,
                               audit_seed, feature_network, run_target)
from .runtime import torch_threads

AUDIT_DIR = "audit"
DEFAULT_CACHE = "runs/audit/cache"
TARGETS = ("distilled", "random", "full")
NETWORK_ATTACKS = ("loss", "lira")

THREAT_MODEL = (
    "The attacker holds the released artifact (distilled images, labels, learned α) and the "
    "§2 training recipe, so trains the K target networks themselves (white-box), and holds real "
    "images of the same distribution that were never in the training split (the val split) to "
    "train shadow networks. Given a real record, they guess whether it was in the training split "
    "the set was distilled from. Members: the training split (subgroup `seeds`: the images the "
    "synthetic ones were initialised or DOM re-seeded from); non-members: the test split.")

LIRA_NOTE = (
    "Offline LiRA (Carlini et al., S&P 2022): each candidate's logit-scaled confidence under "
    "the target networks against its distribution under S shadow networks that never saw it, "
    "trained with the target's recipe (lr, epochs, set size: ipc per class; half the val split "
    "for the full-data reference) on random real val images. The shadows imitate training on "
    "a small real set, not the distillation itself (distilling S shadow sets is out of reach "
    "on a CPU), and no shadow trains on a candidate, "
    "so the online (IN/OUT) variant is not run.")


# ====================================================================== config
@dataclass
class AuditConfig:
    """What an audit computes. A preset (``PRESETS``) sets the sizes it names; fields set
    explicitly win (see :func:`resolve`)."""

    models: int = 5                  # K target networks per target (distilled, random)
    epochs: int | None = None        # None: the artifact's test protocol (its manifest)
    shadow: int = 0                  # S shadow networks per target; 0: no LiRA
    shadow_epochs: int | None = None  # None: as the target they imitate
    full_models: int = 1             # the full-data reference is the slow one
    full_epochs: int = 10
    feature_epochs: int = 50         # the val-trained feature network
    random_lr: float | None = None   # None: 0.01 (§2's lr for real subsets)
    references: tuple[str, ...] = ("random", "full")
    bootstrap: int = 1000
    topk: int = 3
    quantized: bool = False          # audit the uint8 MedMNIST arrays instead of x
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["references"] = list(self.references)
        return d


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(models=1, shadow=2, full_models=1, full_epochs=1, feature_epochs=2,
                  bootstrap=200, threads=1),
    # cpu: 8 shadows (a global σ, the paper's advice for few shadows) keep an audit at
    # 35 networks, most of them 300 epochs on a few images (measured ~28 s each on 2
    # busy cores, 1 thread); the random and full references are cached across artifacts
    "cpu": dict(models=5, shadow=8, full_models=1, full_epochs=10, feature_epochs=50,
                bootstrap=1000),
    "paper": dict(models=5, shadow=64, full_models=3, full_epochs=30, feature_epochs=100,
                  bootstrap=2000),
}

#: Fields that do not change the numbers (an earlier audit.json is reused across them).
NON_IDENTITY = ("threads",)


def resolve(cfg: AuditConfig, preset: str | None, explicit: set[str] | None = None) -> AuditConfig:
    """``cfg`` under ``preset``: the preset's values except for fields in ``explicit``."""
    cfg = dataclasses.replace(cfg)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        for k, v in PRESETS[preset].items():
            if k not in (explicit or set()):
                setattr(cfg, k, v)
    cfg.references = tuple(cfg.references)
    bad = [r for r in cfg.references if r not in TARGETS[1:]]
    if bad:
        raise ValueError(f"unknown reference {bad[0]!r}; choose from random, full")
    if cfg.shadow == 1:
        raise ValueError("--shadow needs at least 2 shadow networks (a variance), or 0")
    if not 1 <= cfg.models < SHADOW_OFFSET or not 0 <= cfg.shadow < FEATURE_OFFSET - SHADOW_OFFSET:
        raise ValueError(f"need 1 ≤ models < {SHADOW_OFFSET} and 0 ≤ shadow < "
                         f"{FEATURE_OFFSET - SHADOW_OFFSET}")
    small = [f"{k}={getattr(cfg, k)}" for k in ("epochs", "shadow_epochs", "full_epochs",
                                                 "feature_epochs", "topk")
             if getattr(cfg, k) is not None and getattr(cfg, k) < 1]
    if small or cfg.bootstrap < 0:
        raise ValueError(f"need positive sizes and bootstrap ≥ 0, got "
                         f"{', '.join(small) or f'bootstrap={cfg.bootstrap}'}")
    if cfg.full_models < 1 and "full" in cfg.references:
        raise ValueError("full_models must be ≥ 1 (or leave out the full reference)")
    return cfg


# ====================================================================== provenance
# ====================================================================== sections
def attack_scores(out: dict[str, np.ndarray], released_distance: np.ndarray | None,
                  cfg: AuditConfig) -> tuple[dict[str, np.ndarray], dict]:
    """Every attack's score per candidate (train then test), and notes (σ kind)."""
    scores = {"loss": pm.loss_attack(out["loss"])}
    notes: dict = {}
    if "shadow_phi" in out:
        scores["lira"], notes["sigma"] = pm.lira_offline(out["phi"], out["shadow_phi"])
    if released_distance is not None:
        scores["distance"] = pm.distance_attack(released_distance)
    return scores, notes


def mia_block(scores: dict[str, np.ndarray], groups: dict[str, np.ndarray], n_train: int,
              cfg: AuditConfig) -> dict:
    """ROC statistics of every attack for every member group against all non-members,
    and the headline: the strongest network attack on all members (and on ``seeds``)."""
    attacks: dict[str, dict] = {}
    nonfinite = {}
    for name, s in scores.items():
        s, bad = pm.finite_scores(s)
        nonfinite[name] = bad
        members, nonmembers = s[:n_train], s[n_train:]
        attacks[name] = {g: pm.roc_metrics(members[mask], nonmembers, cfg.bootstrap, cfg.seed)
                         for g, mask in groups.items()}
    net = [a for a in NETWORK_ATTACKS if a in attacks and attacks[a]["all"] is not None]
    best = max(net, key=lambda a: attacks[a]["all"]["auc"]) if net else None
    head = attacks[best]["all"] if best else {}
    return {"attack": best,
            **{k: head.get(k) for k in ("auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_ci",
                                        "members", "nonmembers", "fpr_resolution")},
            "seeds": attacks[best].get("seeds") if best else None,
            "attacks": attacks, "nonfinite_scores": nonfinite}


# ====================================================================== the audit
def audit(distilled: str | os.PathLike, preset: str | None = None, root: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, cache: str | os.PathLike | None = DEFAULT_CACHE,
          figures: bool = True, reuse: bool = True, progress: bool = False,
          explicit: set[str] | None = None, **fields: Any) -> dict:
    """Audit the artifact at ``distilled`` (an artifact folder or a run folder).

    ``fields`` set :class:`AuditConfig` fields (``models``, ``shadow``, ``seed``,
    ``device`` …) and win over ``preset``. Files go to ``out`` (default
    ``<artifact>/audit``); trained networks' outputs are cached under ``cache`` (None:
    no cache), and an ``audit.json`` there with the same parameters is returned as is
    unless ``reuse=False``. Returns the JSON (see the module doc).
    """
    cfg = resolve(AuditConfig(**fields), preset, set(explicit or ()) | set(fields))
    t0 = time.perf_counter()
    ds = load_distilled(distilled, quantized=cfg.quantized)
    folder = Path(out) if out is not None else ds.path / AUDIT_DIR
    params = {k: v for k, v in cfg.to_dict().items() if k not in NON_IDENTITY}
    sha = (ds.manifest.get("files") or {}).get("distilled.npz")
    if reuse and (folder / "audit.json").is_file():
        old = read_json(folder / "audit.json")
        if old.get("params") == params and old.get("artifact_sha256") == sha:
            return old
    data = mdata.load(ds.flag, size=ds.size, root=root)
    if not np.allclose(np.array(ds.norm.mean + ds.norm.std), np.array(data.norm.mean + data.norm.std),
                       atol=1e-5):
        raise ValueError(f"the distilled set was normalized with {ds.norm}, but {data.path} "
                         f"gives {data.norm}")
    cache_dir = Path(cache) if cache is not None else None
    device = resolve_device(cfg.device)
    epochs = cfg.epochs or int(((ds.manifest.get("results") or {}).get("test") or {}).get("epochs", 300))
    with tuned_malloc(), torch_threads(cfg.threads):
        result, arrays = _run(ds, data, cfg, epochs, sha, cache_dir, device, progress)
    result.update({"seconds": round(time.perf_counter() - t0, 1), "out": shown_path(folder)})
    result = sanitize(result)
    _write(folder, result, arrays, figures)
    return result


def _run(ds: DistilledSet, data: mdata.MedMNIST, cfg: AuditConfig, epochs: int, sha: str | None,
         cache: Path | None, device: torch.device, progress: bool) -> tuple[dict, dict]:
    prov = init_provenance(ds, data)
    n_nets = (cfg.models + cfg.shadow) * (1 + ("random" in cfg.references)) + \
        ("full" in cfg.references) * (cfg.full_models + cfg.shadow)
    bar = tqdm(total=n_nets, desc="audit networks", disable=not progress)
    fnet = feature_network(data, cfg, cache)
    nearest, extra = nearest_section(ds, data, prov, fnet, cfg.topk, device)
    dcr, dcr_arrays = dcr_section(nearest_syn_distance(nearest), data, fnet, extra["f_syn"],
                                  extra["f_train"], device)
    n_train, n_test = len(data.train), len(data.test)
    seeds_mask = np.zeros(n_train, bool)
    seeds_mask[prov["seeds"]] = True
    groups = {"all": np.ones(n_train, bool), "seeds": seeds_mask, "others": ~seeds_mask}
    arrays: dict[str, np.ndarray] = {**extra["arrays"], **dcr_arrays,
                                     "member": np.r_[np.ones(n_train, bool), np.zeros(n_test, bool)],
                                     "seeds_mask": seeds_mask}
    sha_key = {"kind": "distilled", "artifact": sha, "quantized": cfg.quantized}
    targets = [Target("distilled", ds.x.float(), ds.y, ds.lr, epochs, cfg.models, sha_key)]
    idx = None
    if "random" in cfg.references:
        rx, ry, idx = random_subset(data, ds.ipc, seed=int(ds.manifest.get("seed", cfg.seed)))
        lr = cfg.random_lr if cfg.random_lr is not None else 0.01
        targets.append(Target("random", rx, ry, lr, epochs, cfg.models,
                              {"kind": "random", "indices": idx.tolist()}))
    if "full" in cfg.references:
        targets.append(Target("full", data.train.x, data.train.y, 0.01, cfg.full_epochs,
                              cfg.full_models, {"kind": "full"}))
    blocks = {}
    for t in targets:
        outs = run_target(t, data, cfg, cache, bar)
        released = _released_distance(t, data, dcr_arrays["dcr_test"], device)
        scores, notes = attack_scores(outs, released, cfg)
        g = dict(groups)
        if t.kind == "random":
            sub = np.zeros(n_train, bool)
            sub[idx.numpy()] = True
            if not np.array_equal(sub, seeds_mask):
                g["subset"] = sub
            arrays["subset_mask"] = sub
        block = mia_block(scores, g, n_train, cfg)
        block.update({"target": t.kind, "n_train": int(len(t.y)), "lr": t.lr, "models": t.models,
                      "epochs": t.epochs, "seeds_n": int(seeds_mask.sum()),
                      "test_acc_mean": float(np.mean(outs["test_acc"])),
                      "test_acc_std": float(np.std(outs["test_acc"])),
                      "shadow": None if not cfg.shadow else {
                          "models": cfg.shadow, "pool": "val", "n_train": int(outs["shadow_n"][0]),
                          "epochs": cfg.shadow_epochs or t.epochs, "lr": t.lr,
                          "sigma": notes.get("sigma"), "variant": "offline"}})
        blocks[t.kind] = block
        for name, s in scores.items():
            arrays[f"score_{t.kind}_{name}"] = pm.finite_scores(s)[0]
    bar.close()
    refs: dict[str, Any] = {}
    if "random" in blocks:
        refs["random"] = {"kind": "random", "indices": idx.tolist(),
                          # the seeded subset is the set's own init when init="real"
                          "same_as_init": bool(np.array_equal(prov["first"], idx.numpy())),
                          "lr": blocks["random"]["lr"], "mia": blocks["random"]}
    if "full" in blocks:
        refs["full"] = {"kind": "full", "models": cfg.full_models, "epochs": cfg.full_epochs,
                        "lr": 0.01, "mia": blocks["full"]}
    result = {
        "artifact": shown_path(ds.path), "artifact_sha256": sha, "flag": ds.flag, "size": ds.size,
        "ipc": ds.ipc, "method": ds.method, "alpha": ds.lr, "n_images": len(ds),
        "class_names": list(data.class_names),
        "selected_iteration": ds.manifest.get("selected_iteration"),
        "seed": int(ds.manifest.get("seed", 0)), "device": str(device), "params": {
            k: v for k, v in cfg.to_dict().items() if k not in NON_IDENTITY},
        "epochs": epochs, "threat_model": THREAT_MODEL, "lira": LIRA_NOTE if cfg.shadow else None,
        "init": {"source": prov["source"], "first": prov["first"].tolist(),
                 "rows": prov["rows"].tolist(), "seeds": prov["seeds"],
                 "reseeded": prov["reseeded"]},
        "nearest": nearest, "dcr": dcr, "mia": blocks["distilled"], "references": refs,
        "feature_network": {"split": "val", "epochs": cfg.feature_epochs, "lr": 0.01,
                            "seed": audit_seed(cfg.seed, FEATURE_OFFSET)},
        "seed_ranges": {"base": SEED_BASE, "stride": SEED_STRIDE, "targets": "k",
                        "shadows": f"{SHADOW_OFFSET} + k", "features": FEATURE_OFFSET},
        "version": __version__}
    from .privacy_report import limits
    result["limits"] = limits(result)
    return result, arrays


def _released_distance(t: Target, data: mdata.MedMNIST, test_dcr: np.ndarray,
                       device: torch.device) -> np.ndarray | None:
    """Each candidate's (train then test) pixel distance to the nearest released image of
    target ``t``: the images an attacker holds when the set itself is shared."""
    if t.kind == "full":   # sharing the training split: a member is its own nearest image
        return np.r_[np.zeros(len(data.train)), test_dcr]
    d_train = pm.nearest_pixel_distance(data.train.x, t.x, device=device)
    d_test = pm.nearest_pixel_distance(data.test.x, t.x, device=device)
    return np.r_[d_train, d_test]


# ====================================================================== output
def sanitize(obj: Any) -> Any:
    """Strict-JSON values: non-finite floats → None, numpy scalars/arrays → Python."""
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return sanitize(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _write(folder: Path, result: dict, arrays: dict, figures: bool) -> None:
    from .privacy_report import summary_markdown
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "arrays.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    if figures:
        from . import privacy_viz as pv, viz
        for name, fig in pv.audit_figures(result, arrays).items():
            viz.save_figure(fig, name, folder)
    write_text(folder / "summary.md", summary_markdown(result))
    # strict JSON (no NaN) is the contract; json.dumps raises here if one slipped through
    json.dumps(result, allow_nan=False)
    write_json(folder / "audit.json", result)   # last: a folder with audit.json is complete


def load_arrays(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays an audit wrote (``<folder>/arrays.npz``; ``folder`` may be the
    artifact or run folder, whose ``audit/`` is then read)."""
    from .notebooks import resolve_path
    p = Path(folder)
    # as given (from the cwd), then from the project root (how the JSON shows paths)
    bases = [p] if p.is_absolute() else [p, resolve_path(p)]
    for cand in (b / sub for b in bases for sub in
                 ("arrays.npz", f"{AUDIT_DIR}/arrays.npz", f"{ARTIFACT_DIR}/{AUDIT_DIR}/arrays.npz")):
        if cand.is_file():
            with np.load(cand, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    raise FileNotFoundError(f"no audit arrays under {p}; run `mdd audit --distilled {p}` first")


# ====================================================================== CLI
_CLI_FIELDS: dict[str, tuple[type, str]] = {
    "models": (int, "K target networks per target (default 5)"),
    "epochs": (int, "target training epochs (default: the artifact's test protocol)"),
    "shadow": (int, "S shadow networks per target for the likelihood-ratio attack (0: none)"),
    "shadow_epochs": (int, "shadow epochs (default: as the target)"),
    "full_models": (int, "networks of the full-data reference (default 1)"),
    "full_epochs": (int, "epochs of the full-data reference (default 10)"),
    "feature_epochs": (int, "epochs of the val-trained feature network (default 50)"),
    "random_lr": (float, "lr of the random-subset reference (default 0.01)"),
    "bootstrap": (int, "bootstrap resamples for the CIs (default 1000)"),
    "topk": (int, "nearest training images kept per synthetic image (default 3)"),
    "seed": (int, "audit seed (network seeds derive from it)"),
    "threads": (int, "torch threads"),
}


def _audit_cli(args: argparse.Namespace) -> dict:
    fields = {k: getattr(args, k) for k in _CLI_FIELDS if getattr(args, k) is not None}
    fields["device"] = args.device
    if args.references is not None:
        fields["references"] = tuple(args.references)
    if args.quantized:
        fields["quantized"] = True
    return audit(args.distilled, preset=args.preset, root=args.root, out=args.out,
                 cache=None if args.no_cache else args.cache, figures=not args.no_figures,
                 reuse=not args.force, progress=not args.quiet, **fields)
