import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mdd import baselines, data as D, evaluate as E
from mdd.evaluate import EvalConfig, evaluate_set, metrics, resolve_device


def test_metrics_follow_medmnist():
    y = np.array([0, 1, 1, 0])
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    acc, auc = metrics(y, scores, "binary-class")
    assert acc == 0.5 and auc == pytest.approx(roc_auc_score(y, scores[:, 1]))
    acc3, _ = metrics(np.array([2, 0, 1]), np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2]]), "multi-class")
    assert acc3 == 1.0


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_random_subset_is_balanced_and_seeded(make_fake):
    d = D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))
    x, y, idx = baselines.random_subset(d, 3, seed=1)
    assert x.shape == (6, 1, 28, 28) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(d.train.y[idx], y) and torch.equal(d.train.x[idx], x)
    assert torch.equal(baselines.random_subset(d, 3, seed=1)[2], idx)
    assert not torch.equal(baselines.random_subset(d, 3, seed=2)[2], idx)
    with pytest.raises(ValueError, match="fewer than ipc=11"):
        baselines.random_subset(d, 11)


def test_evaluate_set_protocol(make_fake):
    d = D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))
    cfg = EvalConfig(models=2, epochs=2, width=8, device="cpu")
    x, y, _ = baselines.random_subset(d, 2)
    r = evaluate_set(x, y, d, cfg, progress=False)
    assert r["models"] == 2 and len(r["accs"]) == 2 and r["lr"] == 0.01 and r["n_train"] == 4
    assert r["acc_std"] == pytest.approx(np.std(r["accs"]))
    assert all(0 <= a <= 1 for a in r["accs"] + r["aucs"])
    # seeds reproduce
    assert evaluate_set(x, y, d, cfg, progress=False)["accs"] == r["accs"]
    assert evaluate_set(x, y, d, cfg, lr=0.05, split="val", progress=False)["lr"] == 0.05


def test_evaluate_set_trains_under_the_configured_threads(make_fake, monkeypatch):
    d = D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))
    x, y, _ = baselines.random_subset(d, 2)
    seen, train = [], E.train_network
    monkeypatch.setattr(E, "train_network", lambda *a, **k: seen.append(torch.get_num_threads()) or train(*a, **k))
    before = torch.get_num_threads()
    evaluate_set(x, y, d, EvalConfig(models=2, epochs=1, width=8, device="cpu", threads=1), progress=False)
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_balanced_accuracy_is_the_mean_recall():
    # 3 of class 0 all right, 1 of class 1 wrong: ACC 0.75, balanced ACC 0.5
    y = np.array([0, 0, 0, 1])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    m = E.all_metrics(y, scores, "binary-class")
    assert m["acc"] == 0.75 and m["bacc"] == 0.5


def test_val_and_test_networks_never_share_a_seed(make_fake):
    from mdd.seeds import model_seeds
    d = D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))
    x, y, _ = baselines.random_subset(d, 2)
    cfg = EvalConfig(models=3, epochs=1, width=8, device="cpu", seed=5)
    val = evaluate_set(x, y, d, cfg, split="val", progress=False)
    test = evaluate_set(x, y, d, cfg, split="test", progress=False)
    assert val["val_seeds"] == model_seeds("val", 5, 3) and test["test_seeds"] == model_seeds("test", 5, 3)
    assert not set(val["seeds"]) & set(test["seeds"])
    assert 5 not in set(val["seeds"]) | set(test["seeds"])
    # no two distillation seeds share a network either
    every = [set(model_seeds(r, s, 1000)) for r in ("val", "test") for s in range(0, 1000, 37)]
    assert sum(map(len, every)) == len(set().union(*every))
    with pytest.raises(ValueError, match="seed must be in"):
        model_seeds("test", 1000, 1)


@pytest.mark.parametrize("arch", ["convnet-d4", "resnet18"])
def test_cross_architecture_evaluation(make_fake, arch):
    d = D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))
    x, y, _ = baselines.random_subset(d, 2)
    r = evaluate_set(x, y, d, EvalConfig(models=1, epochs=1, width=8, device="cpu", arch=arch),
                     progress=False)
    assert r["arch"] == arch and 0 <= r["bacc_mean"] <= 1
    with pytest.raises(ValueError, match="arch must be one of"):
        EvalConfig(arch="vit")
