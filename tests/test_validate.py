"""Every argument checked once, at the boundary (issue 14): the rules of mdd.validate,
the silent cases that used to run, every CLI option and config field covered, and a
property-based fuzz of the parsers and config resolution (never a traceback)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mdd.cli as cli
import mdd.data
from mdd import validate as V
from mdd.augment import AugmentConfig
from mdd.benchmark import GridConfig, run_grid
from mdd.evaluate import EvalConfig
from mdd.experts import ExpertRecipe, train_experts

dm = importlib.import_module("mdd.distill")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


# ---------------------------------------------------------------- the silent cases
def test_baseline_models_0_exits_2_naming_it(make_fake, tmp_path, capsys, monkeypatch) -> None:
    root = make_fake("breastmnist")
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    rc, out, err = run(capsys, "baseline", "--flag", "breastmnist", "--ipc", "1", "--kind", "random",
                       "--models", "0", "--root", str(root))
    assert rc == 2 and out == ""               # was: exit 0 and "acc_mean": NaN
    assert one_line(err) == ("mdd baseline: error: argument --models: models must be an integer "
                             "≥ 1, got 0")
    assert sorted(tmp_path.rglob("*")) == before


def test_experts_negative_epochs_exits_2_naming_it(make_fake, tmp_path, capsys) -> None:
    root = make_fake("breastmnist")
    out_dir = tmp_path / "experts"
    rc, out, err = run(capsys, "experts", "--flag", "breastmnist", "--preset", "smoke", "--out",
                       str(out_dir), "--root", str(root), "--epochs", "-3")
    assert rc == 2 and out == "" and not out_dir.exists()
    assert one_line(err) == "mdd experts: error: argument --epochs: epochs must be an integer ≥ 1, got -3"


@pytest.mark.parametrize("option, value, message", [
    ("--iterations", "0", "argument --iterations: iterations must be an integer ≥ 1, got 0"),
    ("--tau", "-1", "argument --tau: tau must be a number in (-1, 1], got -1.0"),
])
def test_distill_bad_number_exits_2_naming_it(tmp_path, capsys, option, value, message) -> None:
    out_dir = tmp_path / "run"
    rc, out, err = run(capsys, "distill", "--flag", "breastmnist", "--ipc", "1", "--preset", "smoke",
                       "--experts", str(tmp_path / "experts"), "--out", str(out_dir), option, value)
    assert rc == 2 and out == "" and not out_dir.exists()
    assert one_line(err) == f"mdd distill: error: {message}"


def test_distill_unknown_flag_is_named_before_the_experts(tmp_path, capsys) -> None:
    rc, out, err = run(capsys, "distill", "--flag", "nosuch", "--ipc", "1",
                       "--experts", str(tmp_path / "none"), "--out", str(tmp_path / "run"))
    line = one_line(err)
    assert rc == 2 and out == "" and not (tmp_path / "run").exists()
    assert line.startswith("mdd distill: error: argument --flag: unknown flag nosuch; known: ")
    assert "breastmnist" in line and "chestmnist" not in line   # multi-label: not offered
    assert "experts" not in line


def test_the_flag_is_checked_before_everything_else(tmp_path, capsys) -> None:
    rc, _, err = run(capsys, "distill", "--flag", "nosuch", "--ipc", "0", "--tau", "5")
    assert rc == 2 and "unknown flag nosuch" in err
    rc, _, err = run(capsys, "experts", "--flag", "organmnist3d", "--out", str(tmp_path / "e"),
                     "--epochs", "0")
    assert rc == 2 and "3D" in err and not (tmp_path / "e").exists()
    with pytest.raises(V.ArgumentError, match="unknown flag nosuch"):
        dm.resolve(dm.DistillConfig(flag="nosuch", iterations=0, preset="huge"))


def test_argparse_errors_are_one_line_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["distill", "--flag", "breastmnist", "--ipc", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and one_line(err) == (
        "mdd distill: error: argument --ipc: invalid int value: 'x' (see mdd distill --help)")


@pytest.mark.parametrize("argv, needle", [
    (["benchmark", "--flags", "breastmnist", "--ipcs", "1", "0"], "argument --ipcs: ipcs must be"),
    (["benchmark", "--flags", "breastmnist", "nosuch"], "argument --flags: unknown flag nosuch"),
    (["experts", "--flag", "breastmnist", "--out", "X", "--lr", "0"], "argument --lr: lr must be a number > 0"),
    (["experts", "--flag", "breastmnist", "--out", "X", "--workers", "-1"], "argument --workers"),
    (["experts", "--flag", "breastmnist", "--out", "X", "--size", "32"], "unknown size 32"),
    (["experts", "--flag", "breastmnist", "--out", "X", "--snapshot-every", "0"],
     "argument --snapshot-every: snapshot_every must be an integer ≥ 1, got 0"),
    (["experts", "--flag", "breastmnist", "--out", "X", "--steps", "0"], "argument --steps"),
    (["evaluate", "--distilled", "X", "--models", "0"], "argument --models"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--lr-images", "nan"], "argument --lr-images"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--threads", "0"], "argument --threads"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--alpha-init", "2"], "alpha_init ≤ alpha_max"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--device", "nosuch"], "argument --device"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--stage-quantiles", "0", "2"],
     "argument --stage-quantiles: "),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--tau-percentile", "101"],
     "argument --tau-percentile: tau_percentile must be a number in [0, 100], got 101.0"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--typical-quantile", "0"],
     "argument --typical-quantile: typical_quantile must be a number in (0, 1]"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--alpha-search", "0"],
     "argument --alpha-search: alpha_search must be an integer ≥ 1, got 0"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--lr-labels", "0"],
     "argument --lr-labels: lr_labels must be a number > 0"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--lr-images-warmup", "-1"],
     "argument --lr-images-warmup"),
    (["distill", "--flag", "breastmnist", "--ipc", "1", "--start-window", "-1"],
     "argument --start-window"),
    (["demo", "--method", "dc"], "argument --method: unknown method 'dc'"),
    (["notebooks", "run", "--preset", "huge"], "argument --preset: unknown preset 'huge'"),
])
def test_cli_arguments_are_checked(tmp_path, capsys, monkeypatch, argv, needle) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and needle in one_line(err)
    assert list(tmp_path.iterdir()) == []     # nothing written


@pytest.mark.parametrize("option, value", [
    ("--image-opt", "lbfgs"), ("--alpha-opt", "rmsprop"), ("--alpha-init-rule", "guess"),
    ("--augment-mode", "all"), ("--unit", "seconds"), ("--dom-space", "logits"),
    ("--dom-theta", "random"), ("--tau-rule", "mean"), ("--reseed", "nearest"),
    ("--init", "zeros"),
])
def test_distill_bad_choice_exits_2_naming_it(tmp_path, capsys, monkeypatch, option, value) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["distill", "--flag", "breastmnist", "--ipc", "1", option, value])
    line = one_line(capsys.readouterr().err)
    assert e.value.code == 2 and list(tmp_path.iterdir()) == []
    assert line.startswith(f"mdd distill: error: argument {option}: invalid choice: '{value}'")


def test_distill_bad_stage_quantiles_exit_2_before_anything_is_written(tmp_path, capsys) -> None:
    out_dir = tmp_path / "run"
    for values in (["0", "2"], ["0.5", "-0.1"], ["1.5"]):
        rc, out, err = run(capsys, "distill", "--flag", "breastmnist", "--ipc", "1", "--preset",
                           "smoke", "--experts", str(tmp_path / "experts"), "--out", str(out_dir),
                           "--stage-quantiles", *values)
        assert rc == 2 and out == "" and not out_dir.exists()
        assert one_line(err).startswith("mdd distill: error: argument --stage-quantiles: ")
        assert "(0, 1]" in err                 # what is allowed
    with pytest.raises(SystemExit) as e:      # no value at all: argparse's own line
        cli.main(["distill", "--flag", "breastmnist", "--ipc", "1", "--stage-quantiles"])
    assert e.value.code == 2 and "--stage-quantiles" in one_line(capsys.readouterr().err)


def test_a_missing_cuda_device_is_one_line(capsys, monkeypatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    rc, _, err = run(capsys, "baseline", "--flag", "breastmnist", "--device", "cuda")
    assert rc == 2 and "argument --device: device 'cuda' is not available here" in one_line(err)


# ---------------------------------------------------------------- the rules
def test_rule_messages_name_the_argument_value_and_range() -> None:
    with pytest.raises(V.ArgumentError, match=r"^tau must be a number in \(-1, 1\], got -1$"):
        V.check_range("tau", -1, -1, 1, lo_open=True)
    assert V.check_range("tau", 1.0, -1, 1, lo_open=True) == 1.0
    with pytest.raises(V.ArgumentError, match=r"fraction must be a number in \[0, 1\], got nan"):
        V.check_range("fraction", float("nan"), 0, 1)
    with pytest.raises(V.ArgumentError, match="must be an integer ≥ 1, got True"):
        V.count().check("models", True)            # a bool is not a count
    with pytest.raises(V.ArgumentError, match="an integer ≥ 1, got 2.0"):
        V.count().check("ipc", 2.0)
    assert V.count(optional=True).check("batch_syn", None) is None
    with pytest.raises(V.ArgumentError, match="a number > 0 or None, got inf"):
        V.positive(optional=True).check("lr", float("inf"))
    with pytest.raises(V.ArgumentError, match=r"unknown mode 'fast'; mode must be one of a, b"):
        V.check_choice("mode", "fast", ("a", "b"))
    with pytest.raises(V.ArgumentError, match="got \\[\\]"):
        V.GRID["ipcs"].check("ipcs", [])
    with pytest.raises(V.ArgumentError, match="increasing integers"):
        V.DISTILL["stages"].check("stages", [2, 2, 4])
    assert V.DISTILL["out"].check("out", Path("a/b")) == "a/b"
    e = V.ArgumentError("x", "x must be …")
    assert isinstance(e, ValueError) and e.name == "x"


def test_configs_check_themselves(tmp_path) -> None:
    with pytest.raises(V.ArgumentError, match="models must be an integer ≥ 1, got 0"):
        EvalConfig(models=0)
    with pytest.raises(V.ArgumentError, match="lr must be a number > 0, got 0"):
        ExpertRecipe(lr=0)
    with pytest.raises(V.ArgumentError, match="cutout must be a number in"):
        EvalConfig(augment=AugmentConfig(cutout=2.0))
    base = dm.DistillConfig(flag="breastmnist", out=str(tmp_path / "r"))
    for field, value, needle in [("iterations", 0, "iterations must be"), ("tau", -1.0, "tau must be"),
                                 ("lr_images", 0.0, "lr_images must be"),
                                 ("momentum", 1.0, "momentum must be a number in [0, 1)"),
                                 ("val_epochs", 0, "val_epochs must be"),
                                 ("retrain_iterations", -1, "retrain_iterations must be")]:
        with pytest.raises(V.ArgumentError, match=re_escape(needle)):
            dm.resolve(dataclasses.replace(base, **{field: value}))
    assert dm.resolve(dataclasses.replace(base, out=tmp_path / "p")).out == str(tmp_path / "p")
    with pytest.raises(V.ArgumentError, match="ipcs must be"):
        run_grid(GridConfig(flags=["breastmnist"], ipcs=[0], runs=str(tmp_path / "runs"),
                            results=str(tmp_path / "r.csv")))
    with pytest.raises(V.ArgumentError, match="experts must be"):
        train_experts("breastmnist", tmp_path / "e", 0)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "e").exists()


def re_escape(text: str) -> str:
    import re
    return re.escape(text)


# ---------------------------------------------------------------- coverage of the tables
NUMERIC = (int, float)


@pytest.mark.parametrize("cls, rules", [(dm.DistillConfig, V.DISTILL), (EvalConfig, V.EVAL),
                                        (ExpertRecipe, V.RECIPE), (GridConfig, V.GRID),
                                        (AugmentConfig, V.AUGMENT)])
def test_every_config_field_has_a_rule(cls, rules) -> None:
    nested = {"augment"}   # checked with its own table
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in rules and f.name not in nested]
    assert not missing, f"{cls.__name__} fields without a rule in mdd.validate: {missing}"


def _subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, prefix or name)
                yield prefix or name, sub


def test_every_cli_option_has_a_rule_or_is_free_text() -> None:
    """A new option of any subcommand must get a rule in mdd.validate.CLI (or be listed
    in UNCHECKED as a path, a switch or plumbing)."""
    missing = []
    for command, sub in _subparsers(cli.build_parser()):
        rules = V.CLI[command]
        for action in sub._actions:
            if action.dest in rules or action.dest in V.UNCHECKED or action.dest == "help":
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without a rule in mdd.validate.CLI: {missing}"


def test_every_numeric_cli_option_is_range_checked() -> None:
    """type=int/float options are ranged by a rule, never waved through as text."""
    loose = []
    for command, sub in _subparsers(cli.build_parser()):
        for action in sub._actions:
            if action.type in NUMERIC:
                rule = V.CLI[command].get(action.dest)
                if rule is None or rule.kind not in ("int", "real", "choice"):
                    loose.append(f"{command} {action.dest}")
    assert not loose, loose


# ---------------------------------------------------------------- property-based fuzz
class _Reached(BaseException):
    """Raised where a command would start working: the arguments made a valid run."""

    def __init__(self, what: str, config=None):
        super().__init__(what)
        self.what, self.config = what, config


def _raise(what: str):
    def hook(*args, **kwargs):
        raise _Reached(what, args[0] if args else kwargs)
    return hook


# mostly plausible values (so that many command lines are valid), then edges and junk
GOOD_INT = st.integers(1, 12).map(str)
NUM_TEXT = st.one_of(GOOD_INT, GOOD_INT, GOOD_INT, st.integers(-3, 0).map(str),
                     st.integers(-10**6, 10**7).map(str),
                     st.sampled_from(["x", "", "1.5", "nan", "inf", "-inf", "1e3", "0x10", "-"]))
GOOD_FLOAT = st.sampled_from(["0.5", "0.01", "0.9", "1", "1e-3", "-0.5"])
FLOAT_TEXT = st.one_of(GOOD_FLOAT, GOOD_FLOAT, GOOD_FLOAT,
                       st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
                       st.sampled_from(["-1", "-0.99", "0", "x", "1e-9", "1e400", "-1e-300"]))
GOOD_FLAG = st.sampled_from(["breastmnist", "pneumoniamnist"])
FLAG_TEXT = st.one_of(GOOD_FLAG, GOOD_FLAG, GOOD_FLAG, GOOD_FLAG, st.sampled_from(
    ["nosuch", "chestmnist", "organmnist3d", "", "BreastMNIST"]))


def _options(spec: dict[str, st.SearchStrategy]) -> st.SearchStrategy[list[str]]:
    """Some of ``spec``'s options, each with a drawn value, in a drawn order."""
    pairs = st.lists(st.sampled_from(sorted(spec)), unique=True, max_size=5)
    return pairs.flatmap(lambda names: st.tuples(*[spec[n] for n in names]).map(
        lambda values: [x for n, v in zip(names, values) for x in (n, v)]))


DISTILL_SPEC = {
    "--ipc": NUM_TEXT, "--iterations": NUM_TEXT, "--steps": NUM_TEXT, "--batch-syn": NUM_TEXT,
    "--tau": FLOAT_TEXT, "--lr-images": FLOAT_TEXT, "--lr-alpha": FLOAT_TEXT,
    "--alpha-init": FLOAT_TEXT, "--span": NUM_TEXT, "--num-stages": NUM_TEXT,
    "--dom-every": NUM_TEXT, "--retrain-iterations": NUM_TEXT, "--skip-loss-above": FLOAT_TEXT,
    "--eval-every": NUM_TEXT, "--val-models": NUM_TEXT, "--test-epochs": NUM_TEXT,
    "--threads": NUM_TEXT, "--checkpoint-every-s": FLOAT_TEXT, "--seed": NUM_TEXT,
    "--size": st.sampled_from(["28", "64", "32", "0"]),
    "--preset": st.sampled_from(["smoke", "cpu", "paper", "huge"]),
    "--method": st.sampled_from(["mtt", "ptm", "ptm+dom", "dc"]),
    "--select": st.sampled_from(["acc", "auc", "loss"]), "--device": st.sampled_from(["cpu", "auto", "nosuch"]),
    "--tau-percentile": FLOAT_TEXT, "--typical-quantile": FLOAT_TEXT, "--lr-labels": FLOAT_TEXT,
    "--alpha-search": NUM_TEXT, "--lr-images-warmup": NUM_TEXT, "--start-window": NUM_TEXT,
    "--stage-quantiles": FLOAT_TEXT, "--image-opt": st.sampled_from(["adam", "sgd", "lbfgs"]),
    "--unit": st.sampled_from(["position", "steps", "epochs", "s"]),
}
COMMANDS = {
    "distill": (["--flag", "--ipc"], DISTILL_SPEC),
    "experts": (["--flag", "--out"], {"--epochs": NUM_TEXT, "--experts": NUM_TEXT, "--width": NUM_TEXT,
                             "--lr": FLOAT_TEXT, "--momentum": FLOAT_TEXT, "--batch-size": NUM_TEXT,
                             "--workers": NUM_TEXT, "--threads": NUM_TEXT, "--seed": NUM_TEXT,
                             "--preset": st.sampled_from(["smoke", "cpu", "x"])}),
    "baseline": (["--flag"], {"--ipc": NUM_TEXT, "--models": NUM_TEXT, "--epochs": NUM_TEXT,
                              "--lr": FLOAT_TEXT, "--threads": NUM_TEXT, "--seed": NUM_TEXT,
                              "--kind": st.sampled_from(["random", "full", "half"])}),
    "benchmark": (["--flags"], {"--ipcs": NUM_TEXT, "--seeds": NUM_TEXT,
                                "--preset": st.sampled_from(["smoke", "cpu", "huge"]),
                                "--methods": st.sampled_from(["random", "ptm", "dc"])}),
    "demo": (["--flag"], {"--ipc": NUM_TEXT, "--seed": NUM_TEXT,
                          "--method": st.sampled_from(["ptm+dom", "mtt", "dc"]),
                          "--preset": st.sampled_from(["smoke", "cpu", "huge"])}),
}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    required, spec = COMMANDS[command]
    argv = [command]
    for opt in required:
        if draw(st.integers(0, 9)):            # now and then left out: argparse's error
            value = {"--out": st.just("experts"), "--ipc": NUM_TEXT}.get(opt, FLAG_TEXT)
            argv += [opt, draw(value)]
    return argv + draw(_options(spec))


def _last(argv: list[str], option: str, default: str | None = None) -> str | None:
    """The value argparse keeps for ``option``: the one after its last occurrence."""
    at = [i for i, a in enumerate(argv) if a == option]
    return argv[at[-1] + 1] if at else default


def _check_valid(what: str, config, argv: list[str]) -> None:
    """Independent of mdd.validate: what a run that got this far may assume."""
    supported = V.supported_flags()
    if what in ("experts", "baseline"):
        assert _last(argv, "--flag") in supported
        for opt in ("--epochs", "--experts", "--width", "--batch-size", "--models", "--ipc"):
            assert int(_last(argv, opt, "1")) >= 1
        for opt in ("--threads", "--workers"):
            assert 0 <= int(_last(argv, opt, "1")) <= V.MAX_PARALLEL
        assert 0 < float(_last(argv, "--lr", "1")) < math.inf
        assert 0 <= float(_last(argv, "--momentum", "0")) < 1
        assert 0 <= int(_last(argv, "--seed", "0")) <= V.SEED_MAX
    if what == "distill":
        c = config
        assert c.flag in supported and c.ipc >= 1 and c.iterations >= 1 and c.steps >= 1
        assert -1 < c.tau <= 1 and c.lr_images > 0 and c.lr_alpha > 0 and c.span >= 1
        assert 0 < c.alpha_min <= c.alpha_init <= c.alpha_max and math.isfinite(c.alpha_init)
        assert c.val_models >= 1 and c.test_epochs >= 1 and c.dom_every >= 1
        assert c.threads is None or 1 <= c.threads <= V.MAX_PARALLEL
        assert c.eval_every >= 0 and c.retrain_iterations >= 0 and c.checkpoint_every_s >= 0
        assert c.batch_syn is None or c.batch_syn >= 1
        assert c.method in dm.METHODS and c.size in mdd.data.SIZES
        assert 0 <= c.tau_percentile <= 100 and 0 < c.typical_quantile <= 1 and c.lr_labels > 0
        assert c.alpha_search >= 1 and c.lr_images_warmup >= 0 and c.start_window >= 0
        assert c.stage_quantiles is None or all(0 < q <= 1 for q in c.stage_quantiles)
        assert c.image_opt in ("sgd", "adam") and c.unit in ("position", "steps", "epochs")
    elif what == "benchmark":
        assert all(f in supported for f in config.flags) and all(i >= 1 for i in config.ipcs)
    elif what == "demo":
        assert config[0] in supported and config[1] >= 1


def test_fuzzed_command_lines_exit_2_in_one_line_or_make_a_valid_run(tmp_path) -> None:
    """Random values for every entry point's options: each command line either stops
    with exit 2 and one line on stderr, or reaches the start of the work with a
    configuration that satisfies the documented ranges. Never a traceback."""
    parser = cli.build_parser()
    seen: dict[str, int] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setattr(cli, "build_parser", lambda: parser)       # built once: the fuzz stays fast
        mp.setattr(dm, "DistillRun", _raise("distill"))
        mp.setattr("mdd.experts._load_cached", _raise("experts"))
        mp.setattr("mdd.baseline_cli.mdata.load", _raise("baseline"))
        grids = []
        real_grid_config = V.grid_config
        mp.setattr(V, "grid_config", lambda cfg: (grids.append(cfg), real_grid_config(cfg)))
        mp.setattr("mdd.benchmark.file_lock", lambda *a: (_ for _ in ()).throw(
            _Reached("benchmark", grids[-1])))
        mp.setattr("mdd.demo._demo", lambda *a: (_ for _ in ()).throw(_Reached("demo", a)))

        @settings(max_examples=250, deadline=None, derandomize=False,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(command_lines())
        def prop(argv: list[str]) -> None:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = cli.main(argv)
                except SystemExit as e:   # argparse: a bad type or a missing option
                    rc = e.code
                except _Reached as r:
                    seen[r.what] = seen.get(r.what, 0) + 1
                    _check_valid(r.what, r.config, argv)
                    return
            text = err.getvalue()
            assert rc == 2, (argv, rc, text)
            assert text.count("\n") == 1 and text.startswith("mdd") and "error:" in text, (argv, text)
            assert "Traceback" not in text
            seen["refused"] = seen.get("refused", 0) + 1

        prop()
    print("fuzz outcomes", seen)
    assert seen.get("refused", 0) > 10 and sum(v for k, v in seen.items() if k != "refused") > 10, seen


CONFIG_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10),
                          st.floats(allow_nan=True, allow_infinity=True),
                          st.sampled_from(["", "x", "auto", "real", "auc", "fixed", "ptm"]))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(dm.DistillConfig)
                                        if f.name not in ("flag", "out", "experts", "root")]),
                       CONFIG_VALUES, max_size=6))
def test_fuzzed_distill_configs_resolve_or_raise_one_line(fields: dict) -> None:
    """DistillConfig from Python, any field any value: resolve() either returns a config
    that re-validates or raises a one-line ValueError (never TypeError and the like)."""
    cfg = dm.DistillConfig(flag="breastmnist", out="unused", **fields)
    try:
        r = dm.resolve(cfg)
    except ValueError as e:
        assert "\n" not in str(e) and str(e)
        return
    V.distill_config(r)
    assert r.iterations >= 1 and -1 < r.tau <= 1 and r.lr_images > 0 and r.val_epochs >= 1
