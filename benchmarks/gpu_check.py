"""A short end-to-end check on a CUDA device (run where a GPU is present).

Trains experts, distills (MTT and PTM+DOM at the smoke preset), checks that the
adjoint and unrolled matching agree on the GPU (with TF32 allowed and, as distillation
runs by default, forbidden), evaluates the artifact and the random baseline, all with
``device="cuda"``; prints one JSON line per step with its seconds.

    MDD_DATA=<folder with breastmnist.npz> python benchmarks/gpu_check.py --out /tmp/gpu
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdd import baselines, data as mdata  # noqa: E402
from mdd.augment import Augment  # noqa: E402
from mdd.distill import DistillConfig, distill, evaluate_distilled  # noqa: E402
from mdd.evaluate import EvalConfig, evaluate_set  # noqa: E402
from mdd.experts import ExpertRecipe, ExpertSet, train_experts  # noqa: E402
from mdd.matching import MatchProblem, Student, match  # noqa: E402
from mdd.runtime import tf32  # noqa: E402


def step(name: str, fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    print(json.dumps({"step": name, "seconds": round(time.perf_counter() - t, 2), **(out or {})}),
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/gpu")
    ap.add_argument("--flag", default="breastmnist")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__}))
    out = Path(args.out)
    data = mdata.load(args.flag)

    def experts():
        m = train_experts(args.flag, out / "experts", 2, ExpertRecipe(epochs=4), device="cuda",
                          workers=0, progress=False)
        return {"test_acc": [e["test_acc"] for e in m["experts"]], "dev": m["experts"][0].get("device")}
    step("experts", experts)

    def agree(allow_tf32: bool):
        es = ExpertSet(out / "experts")
        traj = es.trajectory(0, "cuda")
        x, y, _ = baselines.random_subset(data, 5, seed=0)
        student = Student(es.net().to("cuda"), es.layout)
        aug = Augment(args.flag).to("cuda")
        steps = 10
        prob = MatchProblem(start=traj[0], target=traj[2],
                            batches=[torch.arange(len(y), device="cuda")] * steps,
                            seeds=list(range(steps)))
        res = {}
        for mode in ("adjoint", "unrolled"):
            with tf32(allow_tf32):
                r = match(student, x.cuda(), y.cuda(), torch.tensor(-4.6, device="cuda"), prob,
                          augment=aug, mode=mode)
            res[mode] = (float(r.loss), r.grad_images.cpu())
        diff = float((res["adjoint"][1] - res["unrolled"][1]).abs().max())
        scale = float(res["unrolled"][1].abs().max())
        return {"tf32": allow_tf32, "loss_adjoint": res["adjoint"][0],
                "loss_unrolled": res["unrolled"][0], "max_grad_diff": diff, "max_grad": scale}
    for allow in (True, False):
        try:
            step("adjoint_vs_unrolled", lambda: agree(allow))
        except Exception as e:  # the API check is secondary to the end-to-end runs below
            print(json.dumps({"step": "adjoint_vs_unrolled", "error": repr(e)[:300]}))

    for method in ("mtt", "ptm+dom"):
        def run(method=method):
            r = distill(DistillConfig(flag=args.flag, ipc=2, method=method, preset="smoke",
                                      experts=str(out / "experts"), out=str(out / method),
                                      device="cuda", progress=False))
            return {"tf32_after": torch.backends.cudnn.allow_tf32,   # restored: True
                    **{k: r[k] for k in ("acc_mean", "auc_mean", "alpha", "mode", "distill_seconds")}}
        step(f"distill_{method}", run)

    step("evaluate_artifact", lambda: {k: v for k, v in evaluate_distilled(
        out / "ptm+dom", models=2, epochs=50, device="cuda", progress=False).items()
        if k in ("acc_mean", "auc_mean", "device")})

    def random():
        x, y, _ = baselines.random_subset(data, 10, seed=0)
        r = evaluate_set(x, y, data, EvalConfig(models=2, epochs=100, device="cuda"), progress=False)
        return {k: r[k] for k in ("acc_mean", "auc_mean", "device")}
    step("random_baseline", random)


if __name__ == "__main__":
    main()
