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
              "skipped", "skips", "nonfinite", "dx_rms", "lr_images", "main_iteration",
              "seconds", "elapsed", "mode")

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
    iterations: int = 200                    # matching iterations (DOM's retraining comes on top)
    # -- student unroll
    steps: int = 20                          # N, unrolled student steps
    batch_syn: int | None = None             # images per step; None: all of them
    experts_per_iteration: int = 1           # matching problems averaged per iteration
                                             # (one thread each: use both cores)
    init: str = "real"                       # real (seeded random subset) | noise |
                                             # real-correct (images the expert gets right)
    # -- outer optimisation (mdd.optim; engine v2: Adam, α calibrated before images move)
    image_opt: str = "adam"                  # sgd (momentum, the first engine) | adam
    lr_images: float = 0.01                  # adam: about σ per iteration; sgd: MTT's 100
    lr_images_warmup: int = 10               # iterations of linear warm-up of lr_images
    alpha_opt: str = "adam"                  # on log α: sgd (lr_alpha·∂L/∂log α) | adam
    lr_alpha: float = 0.02
    momentum: float = 0.5                    # sgd only
    alpha_init: float = 0.01                 # α₀ with alpha_init_rule="fixed"
    alpha_init_rule: str = "search"          # fixed | expert (lr_expert · segment steps / N)
                                             # | search (best loss on a ×2 grid around expert)
    alpha_search: int = 2                    # problems per grid point of the search
    alpha_stage_rescale: bool = True         # PTM: α × (segment_k+1 / segment_k) at a stage
    alpha_min: float = 1e-6                  # α is kept in [alpha_min, alpha_max]
    alpha_max: float = 1.0
    soft_labels: bool = False                # DATM: learnable labels from expert logits
    lr_labels: float = 0.01                  # adam on the label logits
    augment: bool = True
    augment_mode: str = "dsa"                # dsa (one op per call) | compose (all of them),
                                             # in the unroll and the val/test networks
    mode: str = "auto"                       # adjoint | unrolled | auto (timed: mdd.mode_choice)
    unrolled_memory_gb: float = 2.0          # auto: unrolled only when it needs less than this
    compile: bool | None = None              # torch.compile the adjoint's reverse step
                                             # (None: whenever the mode is adjoint)
    threads: int | None = None               # torch threads (None: leave as is)
    tf32: bool = False                       # allow TF32 on CUDA (off: exact gradients)
    # -- positions on the experts' trajectories (mdd.run_setup)
    unit: str = "position"                   # what the fields below count: position |
                                             # steps (expert SGD steps) | epochs
    # -- MTT / DATM window
    span: int = 2                            # M: target = start + M
    max_start: int = 10                      # T⁺
    max_start_init: int = 1                  # DATM: T⁺ at iteration 0
    # -- PTM
    stages: list[int] | None = None          # T_1 < … < T_K; None: default_stages
    stage_quantiles: list[float] | None = None  # targets at these shares of the experts'
                                             # parameter distance (instead of stages)
    num_stages: int = 4
    max_target: int | None = None            # cap on T_K (default: the experts' last position)
    first_target: int | None = None          # T_1 (default: even spacing)
    start_epoch: int = 0                     # PTM's fixed start
    start_window: int = 0                    # > 0: start drawn from [start, start + window]
    step_rule: str = "fixed"                 # fixed | grow (N_k ∝ T_k, capped)
    max_steps: int | None = None
    advance: str = "fixed"                   # fixed | plateau
    stage_iterations: int | None = None      # default iterations // K
    min_stage_iterations: int = 10
    plateau_window: int = 10
    plateau_tol: float = 0.01
    # -- DOM (mdd.dom; v1 = pooled, uncentred, target, fixed τ 0.9, farthest)
    dom_every: int = 50                      # P
    retrain_iterations: int = 10             # R (no check in the last R iterations)
    dom_pool: int = 512                      # real candidates per class
    dom_space: str = "preact"                # pooled (post-ReLU) | preact (before the ReLU)
    dom_center: bool = True                  # centre by the class's real mean
    dom_theta: str = "trained"               # trained (expert 0, last position) | target
    tau_rule: str = "percentile"             # percentile (of real–real similarity) | fixed
    tau_percentile: float = 99.0
    tau: float = 0.9                         # tau_rule="fixed"
    reseed: str = "typical"                  # typical unused real images | farthest (v1)
    typical_quantile: float = 0.5
    # -- guards
    skip_loss_above: float | None = None     # DATM-style skip (≈1)
    # -- selection and evaluation
    select: str = "auc"                      # val metric that picks the reported images:
                                             # auc (ties: balanced acc; the protocol) | acc
    select_init: bool = False                # is iteration 0 (the init) a candidate?
    eval_every: int = 50
    val_background: bool = False             # val evaluations in a background process
                                             # (mdd.val_worker): same numbers, off the
                                             # matching's critical path
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


#: Preset fields. ``cpu``: sized for 2 cores, one torch thread: its batches are a few
#: images, and on a busy 2-core machine two threads wait on each other (measured: 4
#: images, N=10: 7.9 s per iteration with 2 threads under load, 1.0 s with 1).
#: Positions are in expert SGD steps (unit="steps"), so the cpu preset is the same
#: problem on BreastMNIST (2 steps an epoch) and PneumoniaMNIST (18): PTM's targets
#: run from 10 to 80 steps of the 150 the cpu experts take, MTT matches 25-step
#: segments starting in the first 50.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(iterations=8, steps=3, num_stages=2, dom_every=3, retrain_iterations=2,
                  eval_every=4, val_models=1, test_models=1, test_epochs=20,
                  snapshot_every=4, max_start=2, span=1, dom_pool=64, alpha_search=1,
                  lr_images_warmup=2),
    # iterations and eval_every by their val rules (results/ablations/preset_curves.md,
    # eval_every.md); PTM's stages keep the 37 iterations the curves measured, so a longer
    # run extends the last stage instead of stretching all four
    "cpu": dict(iterations=225, stage_iterations=37, steps=12, unit="steps", num_stages=4,
                first_target=10, max_target=80, span=25, max_start=50, max_start_init=10,
                dom_every=25, retrain_iterations=5, eval_every=50, val_models=3,
                test_models=5, test_epochs=300, snapshot_every=25, threads=1),
    "paper": dict(iterations=5000, steps=30, unit="steps", num_stages=5, first_target=40,
                  max_target=1000, span=400, max_start=4000, max_start_init=400,
                  dom_every=100, retrain_iterations=50, eval_every=500, val_models=3,
                  test_models=5, test_epochs=1000, snapshot_every=100),
}

#: The first engine's choices (engine v1), for ablations and comparisons: momentum SGD
#: at MTT's rates, α₀ = 0.01 with a fixed rate on log α, the composed augmentation, and
#: DOM in post-ReLU features against a fixed τ with re-seeds from the farthest image.
V1: dict[str, Any] = dict(image_opt="sgd", lr_images=100.0, lr_images_warmup=0, alpha_opt="sgd",
                          lr_alpha=0.01, alpha_init=0.01, alpha_init_rule="fixed",
                          alpha_stage_rescale=False, augment_mode="compose", dom_space="pooled",
                          dom_center=False, dom_theta="target", tau_rule="fixed", tau=0.9,
                          reseed="farthest")

#: Fields that do not change what a run computes (a run folder may be resumed with
#: other values of these).
NON_IDENTITY = ("out", "root", "device", "progress", "checkpoint_every_s", "checkpoint_every",
                "tuned_malloc", "threads", "compile", "mode", "unrolled_memory_gb", "tf32",
                "val_background")


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
