import json

import pytest

from mdd.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_data_check_ok_and_corrupt(make_fake, capsys, tmp_path):
    root = make_fake("breastmnist")
    rc, out, _ = run(capsys, "data", "check", "--root", str(root))
    assert rc == 0 and json.loads(out)[0]["ok"] is True
    bad = tmp_path / "bad"
    bad.mkdir()
    blob = (root / "breastmnist.npz").read_bytes()
    (bad / "breastmnist.npz").write_bytes(blob[: len(blob) // 2])
    rc, out, _ = run(capsys, "data", "check", "--root", str(bad), "--format", "table")
    assert rc == 1 and "False" in out and "truncated, corrupt" in out


def test_baseline_prints_json(make_fake, capsys):
    root = make_fake("breastmnist")
    rc, out, _ = run(capsys, "baseline", "--flag", "breastmnist", "--ipc", "2", "--kind", "random",
                     "--models", "2", "--epochs", "1", "--root", str(root), "--device", "cpu",
                     "--threads", "1")
    r = json.loads(out)
    assert rc == 0
    assert {"flag", "ipc", "kind", "acc_mean", "acc_std", "auc_mean", "auc_std"} <= set(r)
    assert r["flag"] == "breastmnist" and r["ipc"] == 2 and r["n_train"] == 4


def test_errors_are_one_line(tmp_path, capsys):
    rc, out, err = run(capsys, "baseline", "--flag", "breastmnist", "--root", str(tmp_path))
    assert rc == 2 and out == ""
    assert err.startswith("mdd baseline: error: MedMNIST file breastmnist.npz not found")
    assert err.count("\n") == 1


@pytest.mark.slow
def test_real_baseline_end_to_end(real_root, capsys):
    args = ("baseline", "--flag", "breastmnist", "--ipc", "5", "--kind", "random", "--models", "1",
            "--epochs", "10", "--root", str(real_root), "--device", "cpu")
    rc, out, _ = run(capsys, *args)
    r = json.loads(out)
    assert rc == 0 and r["n_train"] == 10 and 0 < r["acc_mean"] <= 1 and 0 < r["auc_mean"] <= 1
    assert json.loads(run(capsys, *args)[1])["accs"] == r["accs"]  # seeded: same numbers again


# ---------------------------------------------------------------- strict JSON (issue 14)
def _strict_loads(text: str):
    def no_constants(name):
        raise AssertionError(f"{name} in the JSON output")
    return json.loads(text, parse_constant=no_constants)


def test_emit_is_strict_json_with_a_reason_for_each_null(capsys):
    from mdd.cli import emit
    emit({"acc_mean": 0.5, "auc_mean": float("nan"), "accs": [0.5, float("inf")],
          "nested": {"auc": float("-inf")}, "std": None})
    r = _strict_loads(capsys.readouterr().out)
    assert r["acc_mean"] == 0.5 and r["auc_mean"] is None and r["accs"] == [0.5, None]
    assert r["auc_mean_null_reason"] == "could not be computed (the value was nan)"
    assert r["accs_null_reason"] == "could not be computed (the value was inf)"
    assert r["nested"] == {"auc": None, "auc_null_reason": "could not be computed (the value was -inf)"}
    assert "std_null_reason" not in r            # a plain None is not a failed metric
    emit([{"a": float("nan"), "a_null_reason": "one class only in the test split"}])
    (row,) = _strict_loads(capsys.readouterr().out)
    assert row == {"a": None, "a_null_reason": "one class only in the test split"}  # kept


def test_write_json_is_strict(tmp_path):
    from mdd.io import read_json, write_json
    write_json(tmp_path / "r.json", {"val_auc": float("nan"), "n": 3})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and _strict_loads(text)["val_auc"] is None
    assert read_json(tmp_path / "r.json")["val_auc_null_reason"].startswith("could not be computed")


def test_os_errors_are_one_line_with_the_file_and_a_hint():
    import errno
    from mdd.cli import error_line
    full = error_line(OSError(errno.ENOSPC, "No space left on device", "/x/checkpoint.safetensors"))
    assert full.startswith("/x/checkpoint.safetensors: No space left on device (ENOSPC); every file")
    ro = error_line(OSError(errno.EROFS, "Read-only file system", "/x/config.json"))
    assert ro.startswith("/x/config.json: Read-only file system (EROFS); the folder is not writable")
    assert error_line(FileNotFoundError("no experts at X; train them first")) == \
        "no experts at X; train them first"
    assert "\n" not in error_line(ValueError("two\nlines"))


def test_ctrl_c_is_one_line_exit_130(capsys, monkeypatch):
    import mdd.baseline_cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mdd.baseline_cli, "run_baseline", interrupted)
    rc, out, err = run(capsys, "baseline", "--flag", "breastmnist")
    assert rc == 130 and out == "" and err == "mdd baseline: interrupted\n"


# ---------------------------------------------------------------- distill options (engine v2)
def _captured_distill(monkeypatch, *argv):
    """What ``mdd distill ARGV`` would run: the DistillConfig and explicit set that
    ``_distill_cli`` hands to ``mdd.distill.distill`` (nothing runs)."""
    import mdd.distill
    seen = {}

    def fake(config, explicit=None, **kw):
        seen["config"], seen["explicit"] = config, set(explicit or ())
        return {"ok": True}

    monkeypatch.setattr(mdd.distill, "distill", fake)
    assert main(["distill", "--flag", "breastmnist", "--ipc", "2", *argv]) == 0
    return seen["config"], seen["explicit"]


def test_distill_v2_options_round_trip(monkeypatch, capsys):
    from mdd.distill_config import resolve
    cfg, explicit = _captured_distill(
        monkeypatch, "--preset", "cpu", "--image-opt", "sgd", "--lr-images", "100",
        "--lr-images-warmup", "0", "--alpha-opt", "sgd", "--alpha-init-rule", "expert",
        "--alpha-search", "3", "--no-alpha-stage-rescale", "--soft-labels", "--lr-labels", "0.1",
        "--augment-mode", "compose", "--unit", "position", "--stage-quantiles", "0.25", "0.5", "1",
        "--start-window", "4", "--dom-space", "pooled", "--no-dom-center", "--dom-theta", "target",
        "--tau-rule", "fixed", "--tau-percentile", "95", "--reseed", "farthest",
        "--typical-quantile", "0.25", "--init", "real-correct")
    want = dict(image_opt="sgd", lr_images=100.0, lr_images_warmup=0, alpha_opt="sgd",
                alpha_init_rule="expert", alpha_search=3, alpha_stage_rescale=False,
                soft_labels=True, lr_labels=0.1, augment_mode="compose", unit="position",
                stage_quantiles=[0.25, 0.5, 1.0], start_window=4, dom_space="pooled",
                dom_center=False, dom_theta="target", tau_rule="fixed", tau_percentile=95.0,
                reseed="farthest", typical_quantile=0.25, init="real-correct")
    assert {k: getattr(cfg, k) for k in want} == want
    assert set(want) <= explicit
    r = resolve(cfg, explicit)    # explicit wins over the preset (cpu: unit="steps")
    assert {k: getattr(r, k) for k in want} == want and r.preset == "cpu"
    from mdd.distill_config import PRESETS
    assert r.iterations == PRESETS["cpu"]["iterations"]    # not given: the preset's


def test_distill_options_not_given_stay_unset(monkeypatch, capsys):
    cfg, explicit = _captured_distill(monkeypatch, "--preset", "smoke", "--dom-center")
    assert explicit == {"flag", "ipc", "method", "dom_center"} and cfg.dom_center is True
    from mdd.distill_config import DistillConfig
    d = DistillConfig()
    assert (cfg.image_opt, cfg.alpha_stage_rescale, cfg.soft_labels, cfg.stage_quantiles,
            cfg.unit) == (d.image_opt, d.alpha_stage_rescale, d.soft_labels, None, d.unit)


def _distill_parser():
    import argparse
    from mdd.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["distill"]


def test_every_distill_option_given_counts_as_explicit(monkeypatch, capsys):
    """Any option named after a DistillConfig field, once given, wins over the preset."""
    import dataclasses
    from mdd.distill_config import DistillConfig
    fields = {f.name for f in dataclasses.fields(DistillConfig)}
    always = {"flag", "ipc", "method", "preset", "seed", "size", "device", "experts", "out",
              "root", "tf32"}   # set every run, or paths, or (tf32) outside every preset
    argv, dests = [], set()
    for action in _distill_parser()._actions:
        if action.dest not in fields or action.dest in always or action.dest in dests:
            continue
        dests.add(action.dest)
        argv.append(action.option_strings[0])
        if action.nargs == 0:
            continue
        value = (action.choices[0] if action.choices else
                 "1" if action.type is int else "0.5")
        argv += [value] * (2 if action.nargs == "+" else 1)
    assert {"image_opt", "stage_quantiles", "alpha_stage_rescale", "dom_center",
            "soft_labels", "typical_quantile"} <= dests
    _, explicit = _captured_distill(monkeypatch, *argv)
    assert dests <= explicit, sorted(dests - explicit)


def test_distill_choices_come_from_the_validate_table():
    from mdd.validate import DISTILL
    choices = {a.dest: tuple(a.choices) for a in _distill_parser()._actions
               if a.choices and a.dest in DISTILL}
    assert {"init", "image_opt", "alpha_opt", "alpha_init_rule", "augment_mode", "unit",
            "dom_space", "dom_theta", "tau_rule", "reseed"} <= set(choices)
    assert "real-correct" in choices["init"]
    for dest, got in choices.items():
        assert got == DISTILL[dest].options(), dest
