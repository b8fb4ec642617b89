"""Every ``mdd`` subcommand's arguments, in one place (:mod:`mdd.cli` builds its parser
from :data:`COMMANDS`).

Each function adds one subcommand (``distill`` also adds ``evaluate``) to argparse's
subparsers and points ``handler`` at the function of the module that does the work.
The modules are imported inside the functions, so this file itself imports nothing of
mdd; building the parser imports every command module, as before. Option values are
checked before any handler runs (:func:`mdd.validate.check_namespace`).
"""
from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser, root: bool = True, download: bool = False) -> None:
    """Options every subcommand shares (``download``: also offer --download)."""
    p.add_argument("--format", choices=("json", "table"), default="json",
                   help="JSON for machines (default) or a readable table")
    if root:
        p.add_argument("--root", default=None,
                       help="MedMNIST folder (default: $MDD_DATA, else ./data)")
    if download:
        p.add_argument("--download", action="store_true",
                       help="fetch a missing MedMNIST file (needs internet), md5-verified")


# ---------------------------------------------------------------- data (mdd.data_cli)
def add_data(sub: argparse._SubParsersAction) -> None:
    """``mdd data check``."""
    from .data_cli import _check

    data = sub.add_parser("data", help="inspect the MedMNIST data root")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="list MedMNIST files found and whether their md5 is ok")
    add_common(check)
    check.set_defaults(handler=_check)


# ---------------------------------------------------------------- baseline (mdd.baseline_cli)
def add_baseline(sub: argparse._SubParsersAction) -> None:
    """``mdd baseline``: a random real subset or the full training set."""
    from .baseline_cli import _baseline
    from .ceiling import CeilingConfig
    from .evaluate import EvalConfig
    from .nets import ARCHS

    p = sub.add_parser("baseline", help="evaluate a random real subset or the full training set")
    p.add_argument("--flag", required=True)
    p.add_argument("--ipc", type=int, default=10, help="images per class (random subset)")
    p.add_argument("--kind", choices=("random", "full"), default="random")
    p.add_argument("--models", type=int, default=5, help="K fresh networks")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs (default {EvalConfig.epochs}; for full: chosen on val)")
    p.add_argument("--lr", type=float, default=None, help="training lr (default 0.01)")
    p.add_argument("--arch", choices=ARCHS, default="convnet", help="evaluation network")
    p.add_argument("--first-steps", type=int, default=CeilingConfig.first_steps,
                   help="full: the epoch search's first candidate, in SGD steps")
    p.add_argument("--max-steps", type=int, default=CeilingConfig.max_steps,
                   help="full: the epoch search's last candidate, in SGD steps")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 is fastest for a few images on a busy 2-core machine)")
    add_common(p, download=True)
    p.set_defaults(handler=_baseline)


# ---------------------------------------------------------------- experts (mdd.experts)
def add_experts(sub: argparse._SubParsersAction) -> None:
    """``mdd experts``: train expert trajectories."""
    from .experts import PRESETS, _experts_cli

    p = sub.add_parser("experts", help="train expert trajectories (resumable; local or Dask)",
                       description="Train expert trajectories into --out, one safetensors file "
                       "per expert plus manifest.json. Re-running the same command resumes.")
    p.add_argument("--flag", required=True)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--out", required=True, help="folder of the experts (created; resumed if present)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="cpu",
                   help="scale: " + "; ".join(
                       f"{k}: {v['experts']} experts × "
                       + (f"{v['steps']} SGD steps" if v.get("steps") else f"{v['epochs']} epochs")
                       + f", width {v['width']}" for k, v in PRESETS.items())
                   + " (default cpu); the options below override it")
    p.add_argument("--experts", type=int, default=None, help="number of experts E")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per expert (instead of the preset's SGD steps)")
    p.add_argument("--steps", type=int, default=None, help="SGD steps per expert")
    p.add_argument("--snapshot-every", dest="snapshot_every", type=int, default=None,
                   help="SGD steps between saved positions (default: the preset's)")
    p.add_argument("--width", type=int, default=None, help="ConvNet width")
    p.add_argument("--lr", type=float, default=None, help="SGD learning rate (default 0.01)")
    p.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 256)")
    p.add_argument("--fp16", action="store_true", help="store trajectories in float16")
    p.add_argument("--seed", type=int, default=0, help="expert i uses seed + i")
    p.add_argument("--device", default="auto")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="local worker processes (0: this process; default: one per core)")
    where.add_argument("--scheduler", default=None,
                       help="Dask scheduler address, e.g. tcp://host:8786 (needs mdd[dask]); "
                            "its workers must be able to read --root")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per local worker (default: cores // workers)")
    p.add_argument("--no-tuned-malloc", action="store_true",
                   help="leave glibc's allocator at its defaults (see mdd.alloc)")
    add_common(p)
    p.set_defaults(handler=_experts_cli)


# ---------------------------------------------------------------- distill, evaluate (mdd.distill)
def add_distill(sub: argparse._SubParsersAction) -> None:
    """``mdd distill`` and ``mdd evaluate``."""
    from .distill import _CLI_FIELDS, _distill_cli, _evaluate_cli
    from .distill_config import METHODS, PRESETS
    from .evaluate import EvalConfig
    from .nets import ARCHS
    from .validate import DISTILL

    p = sub.add_parser("distill", help="distill a MedMNIST flag (MTT, PTM, PTM + DOM)")
    p.add_argument("--flag", required=True)
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--method", choices=tuple(METHODS), default="ptm+dom")
    p.add_argument("--experts", default=None,
                   help="experts folder (default runs/experts/FLAG-PRESET)")
    p.add_argument("--out", default=None, help="run folder (default runs/distill/FLAG-ipcI-METHOD)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--device", default="auto")
    for name, (typ, help_) in _CLI_FIELDS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
    p.add_argument("--stage-quantiles", dest="stage_quantiles", nargs="+", type=float,
                   default=None, metavar="Q",
                   help="PTM: targets at these shares of the experts' distance (instead of stages)")
    # choices: the allowed values of mdd.validate.DISTILL, declared there once
    for name, help_ in (
            ("advance", "PTM stage advance"),
            ("step_rule", "PTM: fixed N or N growing with the segment"),
            ("init", "real (random subset) | noise | real-correct (images the expert gets right)"),
            ("select", "val metric that picks the reported images (default auc, ties by "
                       "balanced accuracy: the protocol; acc only for ablations)"),
            ("mode", "how the unroll is differentiated (default auto: the faster, timed at the first iteration)"),
            ("image_opt", "image optimiser (default adam; sgd: momentum, engine v1)"),
            ("alpha_opt", "optimiser of log α (default adam)"),
            ("alpha_init_rule", "α₀: fixed (--alpha-init) | expert | search (default)"),
            ("augment_mode", "dsa: one op per call (default) | compose: all of them"),
            ("unit", "what positions count: position | steps (SGD steps) | epochs"),
            ("dom_space", "DOM features: preact (default) | pooled (post-ReLU)"),
            ("dom_theta", "DOM network: trained (expert 0, last position) | target"),
            ("tau_rule", "DOM τ: percentile of real–real similarity (default) | fixed (--tau)"),
            ("reseed", "DOM re-seeds: typical unused real images (default) | farthest")):
        p.add_argument("--" + name.replace("_", "-"), dest=name, choices=DISTILL[name].options(),
                       default=None, help=help_)
    # --x / --no-x; None (not given) keeps the config's default
    p.add_argument("--alpha-stage-rescale", action=argparse.BooleanOptionalAction, default=None,
                   help="PTM: rescale α at a stage change (default: yes)")
    p.add_argument("--dom-center", action=argparse.BooleanOptionalAction, default=None,
                   help="DOM: centre features by the class's real mean (default: yes)")
    p.add_argument("--soft-labels", dest="soft_labels", action="store_true", default=None,
                   help="DATM: learnable labels from expert logits")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the adjoint's reverse step (default: in adjoint mode; "
                        "--no-compile runs it eager)")
    p.add_argument("--val-background", dest="val_background", action="store_true", default=None,
                   help="val evaluations in a background process (same numbers; uses a second "
                        "core for a single run, not worth it beside other jobs)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 on CUDA (faster; matching gradients lose precision)")
    p.add_argument("--no-augment", action="store_true", help="no augmentation in the unroll")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common(p)
    p.set_defaults(handler=_distill_cli)

    e = sub.add_parser("evaluate", help="evaluate a distilled set (same fields as mdd baseline)")
    e.add_argument("--distilled", required=True, help="artifact folder (or a run folder)")
    e.add_argument("--models", type=int, default=5, help="K fresh networks")
    e.add_argument("--epochs", type=int, default=EvalConfig.epochs)
    e.add_argument("--split", choices=("val", "test"), default="test")
    e.add_argument("--seed", type=int, default=None,
                   help="seed range of the networks (default: the artifact's distillation seed)")
    e.add_argument("--arch", choices=ARCHS, default="convnet",
                   help="evaluation network (cross-architecture: convnet-d4, resnet18)")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 is fastest for a few images on a busy 2-core machine)")
    e.add_argument("--quantized", action="store_true",
                   help="use the uint8 MedMNIST arrays instead of the exact learned images")
    add_common(p=e)
    e.set_defaults(handler=_evaluate_cli)


# ---------------------------------------------------------------- notebooks (mdd.notebooks)
def add_notebooks(sub: argparse._SubParsersAction) -> None:
    """``mdd notebooks run|list|check|strip``."""
    from .notebooks import DEFAULT_OUT, _check, _list, _parse_param, _run, _strip

    p = sub.add_parser("notebooks", help="run, list, check or strip the numbered notebooks")
    nsub = p.add_subparsers(dest="action", required=True)
    r = nsub.add_parser("run", help="execute the notebooks in order with papermill")
    r.add_argument("--preset", default="smoke", help="smoke (about a minute) | cpu | paper")
    r.add_argument("--flag", default="breastmnist")
    r.add_argument("--out", default=DEFAULT_OUT,
                   help=f"output folder (default {DEFAULT_OUT}); executed copies in OUT/executed")
    r.add_argument("--only", nargs="*", default=None, metavar="PREFIX",
                   help="run only notebooks whose name starts with one of these (e.g. 01 06)")
    r.add_argument("-p", "--param", type=_parse_param, action="append", metavar="NAME=VALUE",
                   help="extra notebook parameter (VALUE parsed as JSON when it can be)")
    r.add_argument("--verbose", action="store_true", help="stream the notebooks' output")
    add_common(r)
    r.set_defaults(handler=_run)
    for name, handler, text in (("list", _list, "the notebooks and their parameters"),
                                ("check", _check, "fail when a notebook has outputs"),
                                ("strip", _strip, "remove outputs and execution counts")):
        q = nsub.add_parser(name, help=text)
        q.add_argument("--folder", default=None, help="notebooks folder (default: notebooks/)")
        add_common(q, root=False)
        q.set_defaults(handler=handler)


# ---------------------------------------------------------------- benchmark (mdd.benchmark)
def add_benchmark(sub: argparse._SubParsersAction) -> None:
    """``mdd benchmark``: the modality × ipc × method × seed grid."""
    from .benchmark import METHODS, GridConfig, _cli

    d = GridConfig()
    p = sub.add_parser("benchmark", help="run (resumably) the modality × ipc × method × seed grid")
    p.add_argument("--flags", nargs="+", default=d.flags)
    p.add_argument("--ipcs", nargs="+", type=int, default=d.ipcs)
    p.add_argument("--methods", nargs="+", default=d.methods, choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=d.seeds,
                   help="distillation seeds (each fixes the initial real subset)")
    p.add_argument("--preset", default=d.preset, choices=("smoke", "cpu", "paper"))
    p.add_argument("--runs", default=d.runs, help="folder for experts and distillation runs")
    p.add_argument("--results", default=d.results, help="results CSV (rows are added as cells finish)")
    p.add_argument("--report", action="store_true",
                   help="run nothing: print the results as Markdown (also written beside the CSV, .md)")
    p.add_argument("--claims", action="store_true",
                   help="run nothing: write the claims verdicts (stability, accuracy, DOM) as "
                        "claims.md beside the CSV, from it and --runs' logs, and print them; "
                        "every --flags × --ipcs cell is expected (missing ones are listed)")
    p.add_argument("--no-controls", action="store_true",
                   help="skip the random@<method> rows (the real subset at the learned α)")
    p.add_argument("--device", default="auto")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="local worker processes running cells (0: this process, one cell "
                            "after the other; default: a Dask LocalCluster, see --scheduler, or "
                            "without Dask one process per core, at most the pending cells)")
    where.add_argument("--scheduler", default=None,
                       help="Dask scheduler address, e.g. tcp://host:8786 (needs mdd[dask]); its "
                            "workers must share this file system (--root, --runs, --results); "
                            "'local': a LocalCluster of one single-threaded worker per core "
                            "(the default with Dask installed and more than one cell to run)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker job (default: cores // workers)")
    add_common(p)
    p.set_defaults(handler=_cli)


# ---------------------------------------------------------------- demo (mdd.demo)
def add_demo(sub: argparse._SubParsersAction) -> None:
    """``mdd demo``: the main job."""
    from .demo import _cli

    p = sub.add_parser("demo", help="the main job: experts → PTM+DOM → evaluation vs random")
    p.add_argument("--flag", default="breastmnist")
    p.add_argument("--ipc", type=int, default=2)
    p.add_argument("--method", default="ptm+dom", help="mtt | datm | ptm | ptm+dom")
    p.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "paper"))
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    add_common(p)
    p.set_defaults(handler=_cli, format="table")


# ---------------------------------------------------------------- audit (mdd.privacy)
def add_audit(sub: argparse._SubParsersAction) -> None:
    """``mdd audit``: the privacy audit of a distilled set."""
    from .privacy import _CLI_FIELDS, DEFAULT_CACHE, PRESETS, TARGETS, _audit_cli

    p = sub.add_parser("audit", help="privacy audit of a distilled set: nearest real images, "
                                     "DCR, membership inference (JSON; figures beside the artifact)")
    p.add_argument("--distilled", required=True, help="artifact folder (or its run folder)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="sizes: smoke (seconds) | cpu | paper; explicit options win")
    for name, (typ, help_) in _CLI_FIELDS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
    p.add_argument("--references", nargs="*", choices=TARGETS[1:], default=None,
                   help="reference targets (default: random full; none: give the flag alone)")
    p.add_argument("--quantized", action="store_true", help="audit the uint8 MedMNIST arrays")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="output folder (default <artifact>/audit)")
    p.add_argument("--cache", default=DEFAULT_CACHE,
                   help=f"cache of trained networks' outputs (default {DEFAULT_CACHE})")
    p.add_argument("--no-cache", action="store_true", help="train every network afresh")
    p.add_argument("--no-figures", action="store_true", help="JSON, arrays and summary only")
    p.add_argument("--force", action="store_true", help="recompute even if audit.json matches")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(p)
    p.set_defaults(handler=_audit_cli)


#: Every subcommand, in the order ``mdd --help`` lists them.
COMMANDS = (add_data, add_baseline, add_experts, add_distill, add_notebooks, add_benchmark,
            add_demo, add_audit)


def register_all(sub: argparse._SubParsersAction) -> None:
    """Add every subcommand to ``sub``."""
    for add in COMMANDS:
        add(sub)
