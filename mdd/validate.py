"""Argument checks at the boundaries: every numeric and enumerated argument of every
entry point is checked once, before anything is read or written, and a bad one is a
one-line :class:`ArgumentError` naming the argument, the value and what is allowed::

    iterations must be an integer ≥ 1, got 0
    tau must be a number in (-1, 1], got -1.0
    unknown flag nosuch; known: bloodmnist, breastmnist, …

The command line checks its parsed arguments with :func:`check_namespace` (``mdd.cli``
prefixes the option, ``argument --tau: …``, and exits 2); the config dataclasses check
themselves when built or resolved (:func:`distill_config` from ``mdd.distill.resolve``,
:func:`eval_config`, :func:`expert_recipe`, :func:`grid_config`). What each name may
hold is declared once, in the rule tables below (``DISTILL``, ``EVAL``, ``RECIPE``,
``GRID``, ``CLI``); the known flag is always checked first.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

#: Seeds are used as torch and numpy seeds, plus an offset per model or expert.
SEED_MAX = 2**32 - 1


class ArgumentError(ValueError):
    """A bad argument. ``str(e)`` is one line; ``e.name`` is the argument (a field or
    CLI dest), so that the command line can show it as its option."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


# ====================================================================== rules
@dataclass(frozen=True)
class Rule:
    """The values one argument may take.

    ``kind``: int | real | choice | flag | bool | device | path | stages. Numbers lie in
    [lo, hi] (``lo_open``/``hi_open`` exclude an end) and are finite; ``optional``
    admits None; ``many`` means a non-empty list of such values; ``note`` explains a
    special value in the message (``"0: never"``).
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False
    many: bool = False
    choices: tuple | Callable[[], Iterable] | None = None
    note: str = ""
    min_items: int = 1          # with ``many``: 0 admits an empty list

    def options(self) -> tuple:
        c = self.choices() if callable(self.choices) else self.choices
        return tuple(c or ())

    def allowed(self) -> str:
        """What is allowed, as the message says it: "an integer ≥ 1 or None"."""
        if self.kind in ("int", "real"):
            noun = "an integer" if self.kind == "int" else "a number"
            if self.lo is not None and self.hi is not None:
                text = (f"{noun} in {'(' if self.lo_open else '['}{_num(self.lo)}, "
                        f"{_num(self.hi)}{')' if self.hi_open else ']'}")
            elif self.lo is not None:
                text = f"{noun} {'>' if self.lo_open else '≥'} {_num(self.lo)}"
            elif self.hi is not None:
                text = f"{noun} {'<' if self.hi_open else '≤'} {_num(self.hi)}"
            else:
                text = "a finite number" if self.kind == "real" else noun
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.options()))
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind == "device":
            text = "auto, cpu, cuda, cuda:N or mps"
        elif self.kind == "path":
            text = "a path"
        elif self.kind == "stages":
            text = "increasing integers ≥ 1"
        else:
            text = "a supported MedMNIST flag"
        if self.many and self.kind != "stages":
            text = f"a {'non-empty ' if self.min_items else ''}list, each {text}"
        if self.note:
            text += f" ({self.note})"
        return text + (" or None" if self.optional else "")

    def check(self, name: str, value: Any) -> Any:
        """``value`` if allowed (a path as a str), else raise :class:`ArgumentError`."""
        if value is None:
            if self.optional:
                return None
            raise ArgumentError(name, f"{name} must be {self.allowed()}, got None")
        if self.many:
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise ArgumentError(name, f"{name} must be {self.allowed()}, got {value!r}")
            values = list(value)
            if len(values) < self.min_items:
                raise ArgumentError(name, f"{name} must be {self.allowed()}, got {values!r}")
            if self.kind == "choice":   # name every unknown one at once
                bad = [v for v in values if v not in self.options()]
                if bad:
                    raise ArgumentError(name, f"unknown {name} {bad}; {name} must be "
                                              f"{self.allowed()}")
            one = dataclasses.replace(self, many=False, optional=False)
            return [one.check(name, v) for v in values]
        return _CHECKS[self.kind](self, name, value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _fail(rule: Rule, name: str, value: Any) -> None:
    raise ArgumentError(name, f"{name} must be {rule.allowed()}, got {value!r}")


def _check_number(rule: Rule, name: str, value: Any) -> Any:
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if rule.kind == "int" and not integral:
        _fail(rule, name, value)
    if rule.kind == "real" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        _fail(rule, name, value)
    if not integral and not math.isfinite(float(value)):
        _fail(rule, name, value)
    if rule.lo is not None and (value <= rule.lo if rule.lo_open else value < rule.lo):
        _fail(rule, name, value)
    if rule.hi is not None and (value >= rule.hi if rule.hi_open else value > rule.hi):
        _fail(rule, name, value)
    return value


def _check_choice(rule: Rule, name: str, value: Any) -> Any:
    # the option itself, not an equal value of another type (True == 1, 28.0 == 28)
    if not any(value == o and type(value) is type(o) for o in rule.options()):
        raise ArgumentError(name, f"unknown {name} {value!r}; {name} must be {rule.allowed()}")
    return value


def _check_bool(rule: Rule, name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        _fail(rule, name, value)
    return value


def _check_path(rule: Rule, name: str, value: Any) -> Any:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        _fail(rule, name, value)
    return os.fspath(value)


def _check_device(rule: Rule, name: str, value: Any) -> Any:
    check_device(value, name)
    return value


def _check_flag(rule: Rule, name: str, value: Any) -> Any:
    return check_flag(value, name)


def _check_stages(rule: Rule, name: str, value: Any) -> Any:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        _fail(rule, name, value)
    stages = list(value)
    ok = stages and all(isinstance(t, numbers.Integral) and not isinstance(t, bool) and t >= 1
                        for t in stages)
    if not ok or any(b <= a for a, b in zip(stages, stages[1:])):
        _fail(rule, name, value)
    return stages


_CHECKS: dict[str, Callable[[Rule, str, Any], Any]] = {
    "int": _check_number, "real": _check_number, "choice": _check_choice, "bool": _check_bool,
    "path": _check_path, "device": _check_device, "flag": _check_flag, "stages": _check_stages}


# ---------------------------------------------------------------- rule makers
def count(lo: int = 1, optional: bool = False, note: str = "") -> Rule:
    """An integer ≥ ``lo`` (1: a count of things; 0 where 0 means "none" or "never")."""
    return Rule("int", lo=lo, optional=optional, note=note)


def integer(lo: int | None = None, hi: int | None = None, optional: bool = False) -> Rule:
    return Rule("int", lo=lo, hi=hi, optional=optional)


def positive(optional: bool = False, note: str = "") -> Rule:
    """A finite number > 0 (learning rates, step sizes)."""
    return Rule("real", lo=0, lo_open=True, optional=optional, note=note)


def nonnegative(optional: bool = False, note: str = "") -> Rule:
    return Rule("real", lo=0, optional=optional, note=note)


def real(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
         hi_open: bool = False, optional: bool = False) -> Rule:
    return Rule("real", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, optional=optional)


def fraction(optional: bool = False) -> Rule:
    """A number in [0, 1]."""
    return Rule("real", lo=0, hi=1, optional=optional)


def choice(options: Iterable | Callable[[], Iterable], optional: bool = False,
           many: bool = False) -> Rule:
    """One of ``options`` (a callable is asked at check time: tables stay import-free)."""
    return Rule("choice", choices=options if callable(options) else tuple(options),
                optional=optional, many=many)


def keys_of(module: str, name: str) -> Callable[[], tuple]:
    """Options read lazily from ``module.name`` (a dict's keys or a sequence)."""
    return lambda: tuple(getattr(importlib.import_module(module), name))


BOOL = Rule("bool")
OPT_BOOL = Rule("bool", optional=True)
PATH = Rule("path")
OPT_PATH = Rule("path", optional=True)
FLAG = Rule("flag")
FLAGS = Rule("flag", many=True)
DEVICE = Rule("device")
SEED = integer(0, SEED_MAX)
#: Threads and worker processes: at least 1, and not absurdly many (a typo of 10**6
#: would otherwise ask torch or the OS for a million threads or processes).
MAX_PARALLEL = 1024
THREADS = integer(1, MAX_PARALLEL, optional=True)
MOMENTUM = real(0, 1, hi_open=True)
SIZES = choice(keys_of("mdd.data", "SIZES"))
ARCH = choice(keys_of("mdd.nets", "ARCHS"))
PRESET_NAMES = ("smoke", "cpu", "paper")


# ====================================================================== checks
def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False, integer: bool = False,
                optional: bool = False) -> Any:
    """``value`` if it is a finite number (an integer with ``integer``) in the range, else
    an :class:`ArgumentError`: ``check_range("tau", t, -1, 1, lo_open=True)``."""
    rule = Rule("int" if integer else "real", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open,
                optional=optional)
    return rule.check(name, value)


def check_choice(name: str, value: Any, options: Iterable) -> Any:
    """``value`` if it is one of ``options``."""
    return choice(options).check(name, value)


def supported_flags() -> list[str]:
    """The MedMNIST flags mdd can distill: 2D and single-label (from ``medmnist.INFO``)."""
    from . import data as mdata
    return [f for f in mdata.flags_2d() if not mdata.INFO[f]["task"].startswith("multi-label")]


def check_flag(flag: Any, name: str = "flag") -> str:
    """``flag`` if it is a supported MedMNIST flag; checked before anything else, so
    that a typo is named as such and not as a missing file or experts folder."""
    from . import data as mdata
    if not isinstance(flag, str) or flag not in mdata.INFO:
        raise ArgumentError(name, f"unknown flag {flag}; known: {', '.join(supported_flags())}")
    try:
        mdata.check_flag(flag)   # 3D and multi-label flags, with their own reason
    except mdata.DataError as e:
        raise ArgumentError(name, str(e)) from None
    return flag


def check_device(device: Any, name: str = "device", available: bool = False) -> str:
    """``device`` if torch can parse it ("auto", "cpu", "cuda:1" …); with ``available``,
    also if it is present on this machine (the command line asks for that)."""
    rule = Rule("device")
    if not isinstance(device, str):
        _fail(rule, name, device)
    if device == "auto":
        return device
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        _fail(rule, name, device)
    if available and dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(name, f"{name} {device!r} is not available here (no CUDA device "
                                  "that torch can use); use cpu or auto")
    if available and dev.type == "cuda" and dev.index is not None \
            and dev.index >= torch.cuda.device_count():
        raise ArgumentError(name, f"{name} {device!r} is not available here (this machine has "
                                  f"{torch.cuda.device_count()} CUDA devices); use cpu or auto")
    if available and dev.type == "mps" and not torch.backends.mps.is_available():
        raise ArgumentError(name, f"{name} {device!r} is not available here; use cpu or auto")
    return device


def check_values(values: Mapping[str, Any], rules: Mapping[str, Rule],
                 skip_none: bool = False) -> dict[str, Any]:
    """Check every name of ``values`` that ``rules`` knows (the flag first); returns the
    checked values (paths as str). ``skip_none``: None means "not given" (the CLI)."""
    order = sorted(values, key=lambda k: (k not in ("flag", "flags"),))
    out = {}
    for name in order:
        if name in rules and not (skip_none and values[name] is None):
            out[name] = rules[name].check(name, values[name])
    return out


def check_fields(obj: Any, rules: Mapping[str, Rule]) -> None:
    """Check every field of dataclass ``obj`` that ``rules`` knows; normalized values
    (a ``Path`` given for a path field) are written back."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    for name, value in check_values(values, rules).items():
        if value is not values[name] and not isinstance(value, list):
            object.__setattr__(obj, name, value)


# ====================================================================== the tables
#: mdd.distill.DistillConfig, after the preset is applied (see :func:`distill_config`).
DISTILL: dict[str, Rule] = {
    "flag": FLAG, "ipc": count(), "method": choice(keys_of("mdd.distill", "METHODS")),
    "experts": OPT_PATH, "out": OPT_PATH, "root": OPT_PATH, "size": SIZES,
    "preset": choice(keys_of("mdd.distill", "PRESETS"), optional=True),
    "seed": SEED, "device": DEVICE, "iterations": count(),
    "steps": count(), "batch_syn": count(optional=True, note="None: every image each step"),
    "init": choice(("real", "noise", "real-correct")), "lr_images": positive(),
    "lr_alpha": positive(), "image_opt": choice(("sgd", "adam")),
    "alpha_opt": choice(("sgd", "adam")), "lr_images_warmup": count(0, note="0: none"),
    "alpha_init_rule": choice(("fixed", "expert", "search")), "alpha_search": count(),
    "alpha_stage_rescale": BOOL, "soft_labels": BOOL, "lr_labels": positive(),
    "augment_mode": choice(("dsa", "compose")), "unit": choice(("position", "steps", "epochs")),
    "start_window": count(0, note="0: a fixed start"),
    "stage_quantiles": Rule("real", lo=0, hi=1, lo_open=True, many=True, optional=True),
    "dom_space": choice(("preact", "pooled")), "dom_center": BOOL,
    "dom_theta": choice(("trained", "target")), "tau_rule": choice(("percentile", "fixed")),
    "tau_percentile": real(0, 100), "reseed": choice(("typical", "farthest")),
    "typical_quantile": real(0, 1, lo_open=True),
    "momentum": MOMENTUM, "alpha_init": positive(), "alpha_min": positive(),
    "alpha_max": positive(), "augment": BOOL, "mode": choice(("auto", "adjoint", "unrolled")),
    "unrolled_memory_gb": nonnegative(), "compile": OPT_BOOL, "threads": THREADS,
    "tf32": BOOL, "span": count(), "max_start": count(), "max_start_init": count(),
    "stages": Rule("stages", optional=True), "num_stages": count(),
    "max_target": count(optional=True), "first_target": count(optional=True),
    "start_epoch": count(0), "step_rule": choice(("fixed", "grow")),
    "max_steps": count(optional=True), "advance": choice(("fixed", "plateau")),
    "stage_iterations": count(optional=True), "min_stage_iterations": count(),
    "plateau_window": count(), "plateau_tol": nonnegative(), "dom_every": count(),
    "tau": real(-1, 1, lo_open=True), "retrain_iterations": count(0, note="0: no retraining"),
    "dom_pool": count(), "skip_loss_above": nonnegative(optional=True),
    "select": choice(("acc", "auc")), "select_init": BOOL,
    "eval_every": count(0, note="0: only at the end"), "val_background": BOOL,
    "experts_per_iteration": count(),
    "val_models": count(), "val_epochs": count(optional=True, note="None: test_epochs"),
    "test_models": count(), "test_epochs": count(),
    "log_similarity_every": count(0, note="0: never"),
    "snapshot_every": count(0, note="0: never"), "checkpoint_every_s": nonnegative(),
    "checkpoint_every": count(0, optional=True, note="0 or None: by time only"),
    "progress": BOOL, "tuned_malloc": BOOL,
}

#: mdd.augment.AugmentConfig (inside EvalConfig and ExpertRecipe).
AUGMENT: dict[str, Rule] = {
    "enabled": BOOL, "brightness": nonnegative(), "contrast": fraction(),
    "rotate": real(0, 180), "translate": fraction(), "scale": real(1, None),
    "cutout": fraction(), "flip": OPT_BOOL, "mode": choice(("dsa", "compose")),
}

#: mdd.evaluate.EvalConfig.
EVAL: dict[str, Rule] = {
    "models": count(), "epochs": count(), "lr": positive(optional=True, note="None: 0.01"),
    "momentum": MOMENTUM, "weight_decay": nonnegative(), "batch_size": count(),
    "width": count(), "seed": SEED, "device": DEVICE, "eval_batch": count(),
    "threads": THREADS, "arch": ARCH,
}

#: mdd.experts.ExpertRecipe.
RECIPE: dict[str, Rule] = {
    "epochs": count(), "lr": positive(), "momentum": MOMENTUM, "weight_decay": nonnegative(),
    "batch_size": count(), "width": count(), "fp16": BOOL,
    "steps": count(optional=True, note="None: epochs × steps per epoch"),
    "snapshot_every": count(optional=True, note="None: every epoch"), "drop_last": BOOL,
}

#: mdd.benchmark.GridConfig.
GRID: dict[str, Rule] = {
    "flags": FLAGS, "ipcs": Rule("int", lo=1, many=True),
    "methods": choice(keys_of("mdd.benchmark", "METHODS"), many=True),
    "preset": choice(PRESET_NAMES), "seed": SEED, "seeds": Rule("int", lo=0, hi=SEED_MAX, many=True),
    "root": OPT_PATH, "runs": PATH, "results": PATH, "records": OPT_PATH, "controls": BOOL,
    "device": DEVICE, "progress": BOOL,
    "workers": Rule("int", lo=0, hi=MAX_PARALLEL, optional=True, note="0: this process"),
    "scheduler": OPT_PATH, "threads": THREADS,
}

#: mdd.privacy.AuditConfig (``mdd audit``).
AUDIT: dict[str, Rule] = {
    "models": count(), "epochs": count(optional=True), "shadow": count(0, note="0: no LiRA"),
    "shadow_epochs": count(optional=True), "full_models": count(), "full_epochs": count(),
    "feature_epochs": count(), "random_lr": positive(optional=True), "bootstrap": count(),
    "topk": count(), "seed": SEED, "threads": THREADS, "device": DEVICE, "quantized": BOOL,
    "references": Rule("choice", many=True, min_items=0, optional=True,
                       choices=lambda: importlib.import_module("mdd.privacy").TARGETS[1:]),
}

#: Arguments of each subcommand (argparse dests; None means "not given"). Dests that
#: hold free text, paths or on/off switches are listed in ``UNCHECKED``; every other
#: option must have a rule here (tests/test_validate.py walks the parser to make sure).
CLI: dict[str, dict[str, Rule]] = {
    "data": {},
    "baseline": {"flag": FLAG, "ipc": count(), "kind": choice(("random", "full")),
                 "models": count(), "epochs": count(), "lr": positive(), "arch": ARCH,
                 "first_steps": count(), "max_steps": count(), "size": SIZES, "seed": SEED,
                 "device": DEVICE, "threads": THREADS},
    "experts": {"flag": FLAG, "size": SIZES, "preset": choice(keys_of("mdd.experts", "PRESETS")),
                "experts": count(), "epochs": count(), "steps": count(), "snapshot_every": count(),
                "width": count(), "lr": positive(),
                "momentum": MOMENTUM, "batch_size": count(), "seed": SEED, "device": DEVICE,
                "workers": Rule("int", lo=0, hi=MAX_PARALLEL, note="0: this process"),
                "threads": THREADS},
    "distill": DISTILL,
    "evaluate": {"distilled": PATH, "models": count(), "epochs": count(),
                 "split": choice(("val", "test")), "seed": SEED, "arch": ARCH,
                 "device": DEVICE, "threads": THREADS},
    "benchmark": GRID,
    "notebooks": {"preset": choice(PRESET_NAMES), "flag": FLAG},
    "audit": {**AUDIT, "distilled": PATH, "preset": choice(keys_of("mdd.privacy", "PRESETS"),
                                                            optional=True)},
    "demo": {"flag": FLAG, "ipc": count(), "method": choice(keys_of("mdd.distill", "METHODS")),
             "preset": choice(PRESET_NAMES), "seed": SEED, "device": DEVICE},
}

#: Dests no rule checks: paths and free text (argparse or the code reading them reports
#: a bad one), on/off switches, and the CLI's own plumbing.
UNCHECKED = frozenset({
    "command", "handler", "format", "failed", "data_command", "action", "root", "out",
    "scheduler", "folder", "only", "param",
    "quiet", "no_augment", "tf32", "compile", "val_background", "download", "fp16", "no_tuned_malloc",
    "verbose", "quantized", "no_controls", "report", "claims", "cache", "no_cache", "no_figures", "force",
    "help"})


def check_namespace(command: str, args: Any) -> None:
    """Check a parsed command line (``argparse.Namespace``) against ``CLI[command]``,
    the flag first; a device must also be present on this machine."""
    values = dict(vars(args))
    check_values(values, CLI.get(command, {}), skip_none=True)
    if isinstance(values.get("device"), str):
        check_device(values["device"], available=True)


def distill_config(cfg: Any) -> None:
    """Check a resolved ``DistillConfig`` (the preset applied): every field, then the
    fields that constrain each other."""
    check_fields(cfg, DISTILL)
    q = cfg.stage_quantiles
    if q is not None and (not isinstance(q, (list, tuple)) or not q
                          or not all(isinstance(v, (int, float)) and 0 < v <= 1 for v in q)):
        raise ArgumentError("stage_quantiles", f"need a list of shares in (0, 1], got {q!r}")
    if not cfg.alpha_min <= cfg.alpha_init <= cfg.alpha_max:
        raise ArgumentError("alpha_init", f"need 0 < alpha_min ≤ alpha_init ≤ alpha_max, got "
                                          f"{cfg.alpha_min}, {cfg.alpha_init}, {cfg.alpha_max}")


def eval_config(cfg: Any) -> None:
    """Check an ``EvalConfig`` (and its augmentation)."""
    check_fields(cfg, EVAL)
    check_fields(cfg.augment, AUGMENT)


def expert_recipe(recipe: Any) -> None:
    """Check an ``ExpertRecipe`` (and its augmentation)."""
    check_fields(recipe, RECIPE)
    check_fields(recipe.augment, AUGMENT)


def grid_config(cfg: Any) -> None:
    """Check a ``GridConfig``: flags first, then ipcs, methods, preset, seed, paths."""
    check_fields(cfg, GRID)
