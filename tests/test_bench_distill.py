"""The speed benchmark's reference is the classic MTT loop: on a tiny problem without
augmentation it must give mdd's loss and gradients (else its ratios compare different work)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reference_and_mdd_agree_without_augmentation(tmp_path):
    out = tmp_path / "bench.json"
    # A subprocess: the benchmark's phase 2 changes glibc's malloc settings for good.
    subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_distill.py"), "--steps", "2",
                    "--repeats", "1", "--shapes", "2x1x28", "--ipcs", "1", "--width", "8",
                    "--threads", "1", "--modes", "adjoint,unrolled", "--no-augment",
                    "--device", "cpu", "--json", str(out)], check=True, capture_output=True, cwd=ROOT)
    result = json.loads(out.read_text())
    (problem,) = result["problems"]
    assert problem["shape"] == {"classes": 2, "channels": 1, "size": 28, "ipc": 1}
    assert set(problem["checks"]) == {"adjoint", "unrolled", "adjoint+tuned", "unrolled+tuned"}
    for name, check in problem["checks"].items():
        assert check["same"], (name, check)
        assert check["loss_abs_diff"] <= 1e-6
    assert "reference+tuned" in problem["best"] and result["config"]["device"] == "cpu"


def test_bad_shape_is_one_line_exit_2():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_distill.py"), "--shapes", "2x28"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2
    assert "CLASSESxCHANNELSxSIZE" in run.stderr.strip().splitlines()[-1]


def test_cuda_without_a_gpu_is_one_line_exit_2():
    import torch
    if torch.cuda.is_available():
        return   # the GPU path runs where a device is lent (results/gpu_*.log)
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_distill.py"), "--device", "cuda"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "no CUDA device" in run.stderr.strip().splitlines()[-1]
