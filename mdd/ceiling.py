"""The full-data ceiling of every table (DESIGN.md §2): the whole training set, trained
to convergence with the number of epochs chosen on val, never on test.

Candidates are counted in SGD steps and turned into epochs by the dataset's own steps
per epoch (3 on BreastMNIST, 19 on PneumoniaMNIST at batch 256), so the same rule asks
for the same optimisation on every dataset. The search is fixed in advance: start at
``first_steps``, double while val AUC improves by more than ``min_gain`` (ties: balanced
accuracy), stop at ``max_steps``; one val network per candidate, from the val seed range.
The chosen epochs are then trained by the K test networks, from the test seed range.

The search and the test networks take hours on a CPU; with ``cache`` (a folder; the
grid gives each flag one) every finished evaluation is kept there and read back by a
rerun with the same data and protocol, so an interrupted ceiling resumes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from . import baselines
from .data import MedMNIST
from .evaluate import EvalConfig, evaluate_set, protocol
from .io import dumps, read_json, write_json


@dataclass
class CeilingConfig:
    """The epoch search of the full-data ceiling."""

    first_steps: int = 200
    max_steps: int = 1600
    min_gain: float = 0.002     # val AUC gain that justifies doubling again
    val_models: int = 1


#: The search and the number of test networks per preset. At cpu the ceiling trains
#: 3 networks, not 5: one SGD step on 256 images takes ~1.5 s on one core here, and
#: PneumoniaMNIST's 800-step candidate is 43 epochs (20 min per network).
PRESET_SEARCH: dict[str, CeilingConfig] = {
    "smoke": CeilingConfig(first_steps=2, max_steps=4),
    "cpu": CeilingConfig(first_steps=200, max_steps=800),
    "paper": CeilingConfig(first_steps=200, max_steps=6400),
}
PRESET_MODELS: dict[str, int] = {"smoke": 1, "cpu": 3, "paper": 5}


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def _cached(cache: str | Path | None, data: MedMNIST, cfg: EvalConfig, split: str,
            compute: Callable[[], dict]) -> dict:
    """``compute()``, or its earlier result kept in ``cache`` for the same data, split and
    protocol (threads excluded: they do not change what is computed)."""
    if cache is None:
        return compute()
    ident = {"flag": data.flag, "size": data.size, "n_train": len(data.split("train").y),
             "split": split, "config": {k: v for k, v in cfg.to_dict().items() if k != "threads"}}
    ident = json.loads(dumps(ident))   # as it reads back (tuples are lists in JSON)
    path = Path(cache) / f"{split}-{cfg.epochs}ep-{cfg.models}net-s{cfg.seed}.json"
    if path.is_file():
        saved = read_json(path)
        if saved.get("identity") == ident:
            return saved["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"identity": ident, "result": result})
    return result


def choose_epochs(data: MedMNIST, cfg: EvalConfig, search: CeilingConfig | None = None,
                  progress: bool = True, cache: str | Path | None = None) -> dict:
    """Run the val search; returns ``{"epochs", "steps", "candidates": [...]}``, each
    candidate with its steps, epochs, val acc/bacc/auc and seeds."""
    search = search or CeilingConfig()
    if not 1 <= search.first_steps <= search.max_steps:
        raise ValueError(f"the epoch search needs 1 ≤ first_steps ≤ max_steps, got "
                         f"{search.first_steps} and {search.max_steps}")
    x, y = baselines.full(data)
    per_epoch = steps_per_epoch(len(y), cfg.batch_size)
    candidates: list[dict] = []
    best: dict | None = None
    steps = search.first_steps
    while steps <= search.max_steps:
        epochs = max(1, math.ceil(steps / per_epoch))
        vc = replace(cfg, epochs=epochs, models=search.val_models)
        r = _cached(cache, data, vc, "val",
                    lambda: evaluate_set(x, y, data, vc, split="val", progress=progress))
        cand = {"steps": epochs * per_epoch, "epochs": epochs,
                **{k: r[k] for k in ("acc_mean", "bacc_mean", "auc_mean", "val_seeds", "seconds")}}
        candidates.append(cand)
        if best is not None and cand["auc_mean"] <= best["auc_mean"] + search.min_gain:
            if (cand["auc_mean"], cand["bacc_mean"]) > (best["auc_mean"], best["bacc_mean"]):
                best = cand
            break
        best = cand
        steps *= 2
    return {"epochs": best["epochs"], "steps": best["steps"], "steps_per_epoch": per_epoch,
            "rule": f"double from {search.first_steps} SGD steps while val AUC gains > "
                    f"{search.min_gain}, at most {search.max_steps}; ties by balanced accuracy",
            "candidates": candidates}


def full_ceiling(data: MedMNIST, cfg: EvalConfig, search: CeilingConfig | None = None,
                 progress: bool = True, cache: str | Path | None = None) -> dict:
    """Choose epochs on val, then train ``cfg.models`` test networks on the full training
    set at those epochs. Returns evaluate_set's fields plus ``epoch_selection``.
    ``cache``: a folder where finished evaluations are kept (module docstring)."""
    chosen = choose_epochs(data, cfg, search, progress=progress, cache=cache)
    x, y = baselines.full(data)
    tc = replace(cfg, epochs=chosen["epochs"])
    res = _cached(cache, data, tc, "test",
                  lambda: evaluate_set(x, y, data, tc, split="test", progress=progress))
    return {**res, "epoch_selection": chosen, "protocol": protocol(tc)}
