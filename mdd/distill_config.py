"""What a distillation run is (:mod:`mdd.distill`): :class:`DistillConfig`, the presets,
:func:`resolve` (a preset under the explicit fields), the identity a run folder is resumed
by, and the names of a run folder's files and log columns."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import validate

#: method → (schedule, DOM on)
METHODS: dict[str, tuple[str, bool]] = {
    "mtt": ("mtt", False), "datm": ("datm", False), "ptm": ("ptm", False), "ptm+dom": ("ptm", True)}

#: Fields of every per-iteration log row, in CSV column order.
LOG_FIELDS = ("iteration", "phase", "loss", "alpha", "grad_norm", "grad_alpha", "expert", "start",
              "target", "steps", "stage", "overlap_ratio", "mean_similarity", "replaced",
              "skipped", "skips", "nonfinite", "seconds", "elapsed")

CHECKPOINT, CONFIG, RESULT = "checkpoint.safetensors", "config.json", "result.json"


# ====================================================================== config
@dataclass
class DistillConfig:
    """One distillation run. Defaults work (a small BreastMNIST PTM + DOM run); a preset
    overrides the fields it names, and fields set explicitly win over the preset
    (see :func:`resolve`).
    """

    flag: str = "breastmnist"
    ipc: int = 1
    method: str = "ptm+dom"                  # mtt | datm | ptm | ptm+dom
    experts: str | None = None               # default runs/experts/{flag}-{preset or cpu}
    out: str | None = None                   # default runs/distill/{flag}-ipc{ipc}-{method}
    root: str | None = None                  # MedMNIST folder ($MDD_DATA, ./data)
    size: int = 28
    preset: str | None = None                # smoke | cpu | paper
    seed: int = 0
    device: str = "auto"
    iterations: int = 200
    # -- student unroll
    steps: int = 20                          # N, unrolled student steps
    batch_syn: int | None = None             # images per step; None: all of them
    init: str = "real"                       # real (seeded random subset) | noise
    lr_images: float = 100.0
    lr_alpha: float = 0.01                   # on log α
    momentum: float = 0.5
    alpha_init: float = 0.01                 # α₀ (the student's step size)
    alpha_min: float = 1e-6                  # α is kept in [alpha_min, alpha_max]
    alpha_max: float = 1.0
    augment: bool = True
    mode: str = "auto"                       # adjoint | unrolled | auto (by memory)
    unrolled_memory_gb: float = 2.0          # auto: unrolled when it needs less than this
    compile: bool | None = None              # torch.compile the adjoint's reverse step
                                             # (None: whenever the mode is adjoint)
    threads: int | None = None               # torch threads (None: leave as is)
    tf32: bool = False                       # allow TF32 on CUDA (off: exact gradients)
    # -- MTT / DATM window
    span: int = 2                            # M: target = start + M
    max_start: int = 10                      # T⁺
    max_start_init: int = 1                  # DATM: T⁺ at iteration 0
    # -- PTM
    stages: list[int] | None = None          # T_1 < … < T_K; None: default_stages
    num_stages: int = 4
    max_target: int | None = None            # cap on T_K (default: the experts' epochs)
    first_target: int | None = None          # T_1 (default: even spacing)
    start_epoch: int = 0
    step_rule: str = "fixed"                 # fixed | grow (N_k ∝ T_k, capped)
    max_steps: int | None = None
    advance: str = "fixed"                   # fixed | plateau
    stage_iterations: int | None = None      # default iterations // K
    min_stage_iterations: int = 10
    plateau_window: int = 10
    plateau_tol: float = 0.01
    # -- DOM
    dom_every: int = 50                      # P
    tau: float = 0.9
    retrain_iterations: int = 10             # R
    dom_pool: int = 512                      # real candidates per class
    # -- guards
    skip_loss_above: float | None = None     # DATM-style skip (≈1)
    # -- selection and evaluation
    select: str = "auc"                      # val metric that picks the reported images:
                                             # auc (ties: balanced acc; the protocol) | acc
    select_init: bool = False                # is iteration 0 (the init) a candidate?
    eval_every: int = 50
    val_models: int = 3                      # ≥ 3, trained as the test networks are
    val_epochs: int | None = None            # None: test_epochs (the protocol)
    test_models: int = 5
    test_epochs: int = 300
    # -- logging and checkpoints
    log_similarity_every: int = 1
    snapshot_every: int = 50
    checkpoint_every_s: float = 120.0
    checkpoint_every: int | None = None      # iterations (besides the time rule)
    progress: bool = True
    tuned_malloc: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


#: Preset fields. ``cpu``: sized for 2 cores (BreastMNIST ipc 2 in a few minutes), one
#: torch thread: its batches are a few images, and on a busy 2-core machine two threads
#: wait on each other (measured: 4 images, N=10: 7.9 s per iteration with 2 threads
#: under load, 1.0 s with 1).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(iterations=8, steps=3, num_stages=2, dom_every=3, retrain_iterations=2,
                  eval_every=4, val_models=1, test_models=1, test_epochs=20,
                  snapshot_every=4, max_start=2, span=1, dom_pool=64),
    "cpu": dict(iterations=120, steps=12, num_stages=4, max_target=8, first_target=2,
                dom_every=20, retrain_iterations=5, eval_every=30, val_models=3,
                test_models=5, test_epochs=300, snapshot_every=10,
                max_start=8, span=2, lr_images=100.0, lr_alpha=0.01, threads=1),
    "paper": dict(iterations=5000, steps=30, num_stages=5, max_target=20, first_target=2,
                  dom_every=100, retrain_iterations=50, eval_every=500, val_models=3,
                  test_models=5, test_epochs=1000, snapshot_every=100,
                  max_start=20, span=2),
}

#: Fields that do not change what a run computes (a run folder may be resumed with
#: other values of these).
NON_IDENTITY = ("out", "root", "device", "progress", "checkpoint_every_s", "checkpoint_every",
                "tuned_malloc", "threads", "compile", "mode", "unrolled_memory_gb", "tf32")


def resolve(config: DistillConfig, explicit: set[str] | None = None) -> DistillConfig:
    """Apply ``config.preset`` under the explicit fields — those named in ``explicit``
    and those that differ from DistillConfig's defaults — and fill the derived defaults."""
    validate.check_flag(config.flag)   # a typo is named as such, before anything else
    cfg = dataclasses.replace(config)
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise ValueError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
        base = DistillConfig()
        explicit = set(explicit or ()) | {f.name for f in dataclasses.fields(cfg)
                                          if getattr(cfg, f.name) != getattr(base, f.name)}
        for k, v in PRESETS[cfg.preset].items():
            if k not in explicit:
                setattr(cfg, k, v)
    # every field against mdd.validate.DISTILL (ranges, choices, α bounds): one line
    # naming the argument, its value and what is allowed
    validate.distill_config(cfg)
    if cfg.val_epochs is None:
        cfg.val_epochs = cfg.test_epochs
    if cfg.experts is None:
        cfg.experts = str(Path("runs") / "experts" / f"{cfg.flag}-{cfg.preset or 'cpu'}")
    if cfg.out is None:
        cfg.out = str(Path("runs") / "distill" / f"{cfg.flag}-ipc{cfg.ipc}-{cfg.method}")
    return cfg


def identity(cfg: DistillConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in NON_IDENTITY}


def config_diff(a: dict, b: dict) -> str:
    """The first few fields in which two identities differ, as ``name: a → b``."""
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys[:6])
