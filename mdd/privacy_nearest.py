"""How close a distilled set is to real patients (DESIGN.md §6, the first half of
:func:`mdd.privacy.audit`): which training image each synthetic image started from
(:func:`init_provenance`), its nearest training images in pixel, SSIM and feature space
and how far it moved from its init (:func:`nearest_section`), and its distance to the
closest record against the test split's (:func:`dcr_section`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import data as mdata
from . import privacy_metrics as pm
from .artifact import ARTIFACT_DIR, DistilledSet
from .baselines import random_subset


def init_provenance(ds: DistilledSet, data: mdata.MedMNIST) -> dict:
    """Which training image each synthetic image started from, at the selected iteration.

    Each of the init indices and DOM's re-seeds is read from the manifest
    (``init_indices``, ``reseeds``), else from the run folder around the artifact
    (checkpoint metadata, ``dom_events.jsonl``); init indices last of all are recomputed
    from the manifest's seed (the seeded random subset ``init="real"`` starts from).
    Returns ``source``, ``first`` (train index each synthetic image was initialised
    from, −1 where unknown or noise-initialised), ``rows`` (the same after the re-seeds
    that precede the selected iteration), ``seeds`` (every train image used as an init or a re-seed up to
    the selected iteration, sorted) and ``reseeded`` (set indices re-seeded by DOM).
    """
    m, n = ds.manifest, len(ds)
    cfg = m.get("config") or {}
    sel = m.get("selected_iteration")
    run = ds.path.parent if ds.path is not None and ds.path.name == ARTIFACT_DIR else None
    in_run = run is not None and (run / "config.json").is_file()
    run_init, run_reseeds = _run_folder_provenance(run) if in_run else (None, None)
    init, source = m.get("init_indices"), "manifest"
    if init is None:
        init, source = run_init, "run folder"
    if init is None and cfg.get("init", "real") == "real" and "seed" in m:
        init, source = random_subset(data, ds.ipc, seed=int(m["seed"]))[2].tolist(), "config"
    if init is None:
        source = "none"
    reseeds = m.get("reseeds")
    if reseeds is None:   # an artifact from before re-seeds were recorded: its run folder
        reseeds = run_reseeds
    if reseeds is None:
        reseeds = []
        if "dom" in str(ds.method):
            source += " (DOM re-seeds unknown)"
    if cfg.get("init", "real") != "real" or init is None or len(init) != n:
        init = [-1] * n
    first = np.asarray(init, dtype=np.int64)
    rows = first.copy()
    seeds = {int(i) for i in rows if i >= 0}
    reseeded = set()
    for r in sorted(reseeds, key=lambda r: int(r["iteration"])):
        # a re-seed at iteration t happens before the evaluation at t + 1: it shaped the
        # images selected at any later iteration
        if sel is None or int(r["iteration"]) < int(sel):
            rows[int(r["index"])] = int(r["real_index"])
            seeds.add(int(r["real_index"]))
            reseeded.add(int(r["index"]))
    return {"source": source, "first": first, "rows": rows, "seeds": sorted(seeds),
            "reseeded": sorted(reseeded)}


def _run_folder_provenance(run: Path) -> tuple[list[int] | None, list[dict] | None]:
    """(init indices from the checkpoint's metadata or None, DOM re-seeds from
    ``dom_events.jsonl`` or None without one) of a run folder."""
    from safetensors import safe_open

    from .distill_config import CHECKPOINT
    from .run_folder import read_dom_events
    init = None
    if (run / CHECKPOINT).is_file():
        with safe_open(str(run / CHECKPOINT), framework="pt", device="cpu") as f:
            init = json.loads(f.metadata()["state"]).get("init_indices")
    if not (run / "dom_events.jsonl").is_file():
        return init, None
    reseeds = [{"iteration": int(e["iteration"]), "index": int(k), "real_index": int(v)}
               for e in read_dom_events(run) for k, v in (e.get("real_indices") or {}).items()]
    return init, reseeds


def nearest_section(ds: DistilledSet, data: mdata.MedMNIST, prov: dict, fnet: torch.nn.Module,
                    topk: int, device: torch.device) -> tuple[dict, dict]:
    """Nearest training images of every synthetic image in three spaces, and how far it
    moved from its init. Returns (the JSON section, arrays for the figures)."""
    x, train, k = ds.x.float(), data.train, topk
    pi, pd_ = pm.topk_pixel(x, train.x, k, device=device)
    unit = pm.to_unit_pixels(x, data.norm)
    si, sv = pm.topk_ssim(unit, train.x, data.norm, k, device=device)
    f_syn, f_train = pm.embed(fnet, x), pm.embed(fnet, train.x)
    fi, fv = pm.topk_cosine(f_syn, f_train, k)
    rows = prov["rows"]
    known = rows >= 0
    images, moved_px = [], []
    for i in range(len(x)):
        j = int(rows[i])
        rec: dict[str, Any] = {
            "index": i, "label": int(ds.y[i]), "init": j if j >= 0 else None,
            "reseeded": i in prov["reseeded"],
            "pixel": {"nearest": pi[i].tolist(), "distance": pd_[i].tolist()},
            "ssim": {"nearest": si[i].tolist(), "ssim": sv[i].tolist()},
            "feature": {"nearest": fi[i].tolist(), "cosine": fv[i].tolist()},
            "nearest_is_init": None, "flagged": None, "moved": None}
        if j >= 0:
            init_x = train.x[j:j + 1].float()
            d0 = float(torch.sqrt(((x[i:i + 1] - init_x) ** 2).mean()))
            # 1 = the init is the nearest training image; ties count for the init
            rank = int((pm.pixel_distances(x[i:i + 1], train.x, device=device) < d0 - 1e-9).sum()) + 1
            is_init = {"pixel": int(pi[i, 0]) == j, "ssim": int(si[i, 0]) == j,
                       "feature": int(fi[i, 0]) == j}
            rec["nearest_is_init"] = is_init
            rec["flagged"] = any(is_init.values())
            rec["moved"] = {"pixel": d0,
                            "ssim": float(pm.ssim_pairs(unit[i:i + 1], pm.to_unit_pixels(init_x, data.norm))[0]),
                            "cosine": float(f_syn[i] @ pm.embed(fnet, init_x)[0]),
                            "init_rank_pixel": rank}
            moved_px.append(d0)
        images.append(rec)
    flagged = [r["index"] for r in images if r["flagged"]]
    section = {
        "spaces": {"pixel": "RMS difference per pixel value, normalised units (lower = nearer)",
                   "ssim": "SSIM on [0, 1] pixels, 11×11 Gaussian window σ 1.5 (higher = nearer)",
                   "feature": "cosine of L2-normalised penultimate features of a ConvNet trained "
                              "on the val split only (higher = nearer)"},
        "search": "all training images, every class", "topk": k,
        "init_source": prov["source"], "n_images": len(x), "n_init_known": int(known.sum()),
        "n_flagged": len(flagged), "flagged": flagged,
        "share_flagged": len(flagged) / int(known.sum()) if known.any() else None,
        "nearest_is_init_counts": {s: sum(bool(r["nearest_is_init"] and r["nearest_is_init"][s])
                                          for r in images) for s in ("pixel", "ssim", "feature")},
        "moved_pixel": pm.quantiles(np.array(moved_px)) if moved_px else None,
        "images": images}

    def pixels(idx: np.ndarray) -> np.ndarray:
        return data.pixels(train.x[torch.as_tensor(idx).long()])

    safe_rows = np.where(known, rows, 0)
    arrays = {"syn": ds.pixels, "labels": ds.y.numpy(),
              "init": pixels(safe_rows), "init_known": known,
              "near_pixel": pixels(pi[:, 0]), "near_ssim": pixels(si[:, 0]),
              "near_feature": pixels(fi[:, 0]), "d_pixel": pd_[:, 0], "s_ssim": sv[:, 0],
              "c_feature": fv[:, 0], "flagged": np.array([bool(r["flagged"]) for r in images]),
              "moved_pixel": np.array([r["moved"]["pixel"] if r["moved"] else np.nan for r in images])}
    return section, {"f_syn": f_syn, "f_train": f_train, "arrays": arrays}


def dcr_section(syn_d: np.ndarray, data: mdata.MedMNIST, fnet: torch.nn.Module, f_syn: torch.Tensor,
                f_train: torch.Tensor, device: torch.device) -> tuple[dict, dict]:
    """DCR in pixel space (and 1 − cosine in feature space): synthetic→train against
    test→train. Returns (the JSON section, arrays)."""
    test_d = pm.nearest_pixel_distance(data.test.x, data.train.x, device=device)
    f_test = pm.embed(fnet, data.test.x)
    # 1 − cos, clipped at 0 (float error makes an exact copy's cosine 1 + 1e-7)
    syn_f = np.clip(1 - pm.topk_cosine(f_syn, f_train, 1)[1][:, 0], 0, None)
    test_f = np.clip(1 - pm.topk_cosine(f_test, f_train, 1)[1][:, 0], 0, None)
    section = {"space": "pixel (RMS per pixel value, normalised units)",
               **pm.dcr_summary(syn_d, test_d),
               "feature": {"space": "1 − cosine of the val-trained network's features",
                           **pm.dcr_summary(syn_f, test_f)}}
    return section, {"dcr_synthetic": syn_d, "dcr_test": test_d,
                     "dcr_feature_synthetic": syn_f, "dcr_feature_test": test_f}


def nearest_syn_distance(nearest: dict) -> np.ndarray:
    """Pixel distance of each synthetic image to its nearest training image, N."""
    return np.array([r["pixel"]["distance"][0] for r in nearest["images"]])
