import json
import shutil

import pytest

from mdd import data as D
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
