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
