"""The numbered notebooks: committed clean, and executed end to end at preset="smoke"
on the real BreastMNIST file with papermill, then re-run by ``pytest --nbval-lax``."""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys

import nbformat
import pytest

from mdd import commands, notebooks as nb

#: Every notebook takes these, so that `mdd notebooks run` can drive it.
STANDARD_PARAMETERS = {"flag", "preset", "root", "out", "figures_dir"}
#: What the notebooks write at smoke (stable names, under <out>/figures).
EXPECTED_FIGURES = {
    "01_montage_breastmnist.png", "01_montage_pneumoniamnist.png",
    "01_class_balance.png", "01_class_balance.csv", "01_class_balance.md",
    "01_trajectories_breastmnist.png", "01_trajectories_breastmnist.csv",
    "02_loss_breastmnist_ipc2.png", "02_alpha_breastmnist_ipc2.png",
    "02_skips_breastmnist_ipc2.png", "02_val_acc_breastmnist_ipc2.png",
    "02_val_acc_breastmnist_ipc2.csv", "02_stability_breastmnist_ipc2.csv",
    "02_stability_breastmnist_ipc2.md", "02_stability_runs_breastmnist_ipc2.csv",
    "03_similarity_breastmnist_ipc2.png", "03_overlap_breastmnist_ipc2.png",
    "03_overlap_breastmnist_ipc2.csv", "03_dom_events_breastmnist_ipc2.csv",
    "03_dom_events_breastmnist_ipc2.md", "03_replaced_breastmnist_ipc2.png",
    "02_dynamics_breastmnist_ipc2.png", "02_dynamics_breastmnist_ipc2.csv",
    "03_distinct_breastmnist_ipc2.png", "03_distinct_breastmnist_ipc2.csv",
    "04_grids_breastmnist_ipc2.png", "04_evolution_breastmnist_ipc2.png",
    "04_nearest_breastmnist_ipc2.png", "04_nearest_breastmnist_ipc2.csv",
    "05_benchmark.csv", "05_benchmark.md", "05_benchmark_results.csv", "05_benchmark_glance.md",
    "05_benchmark_bars.png", "05_benchmark_lines.png", "05_claims.md",
    "06_compare_breastmnist_ipc2.png", "06_compare_breastmnist_ipc2.csv",
    "06_compare_breastmnist_ipc2.md",
    "07_nearest_breastmnist_ipc2_ptm_dom.png", "07_dcr_breastmnist_ipc2_ptm_dom.png",
    "07_roc_breastmnist_ipc2_ptm_dom.png", "07_privacy_breastmnist_ipc2_ptm_dom.csv",
    "07_privacy_breastmnist_ipc2_ptm_dom.md", "07_summary_breastmnist_ipc2_ptm_dom.md",
}


def _tree_digest(folder) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------- committed state
def test_notebooks_are_committed_clean():
    books = nb.list_notebooks()
    names = [b.name for b in books]
    assert names[:1] == ["01_data_and_experts.ipynb"] and "06_compare.ipynb" in names
    assert names == sorted(names)
    for book in books:
        assert nb.check_clean(book) == [], f"run `mdd notebooks strip` on {book.name}"
        declared = set(nb.notebook_parameters(book))
        assert STANDARD_PARAMETERS <= declared, f"{book.name} lacks {STANDARD_PARAMETERS - declared}"
        meta = nbformat.read(book, as_version=4).metadata
        assert meta["kernelspec"]["name"] == nb.KERNEL


def test_check_clean_catches_outputs_counts_and_missing_parameters(tmp_path):
    src = nb.list_notebooks()[0]
    dirty = nbformat.read(src, as_version=4)
    first = next(i for i, c in enumerate(dirty.cells) if c.cell_type == "code")
    later = next(i for i, c in enumerate(dirty.cells) if c.cell_type == "code" and i > first)
    dirty.cells[later].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    dirty.cells[later].execution_count = 3
    dirty.cells[first].metadata["tags"] = []
    path = tmp_path / "01_dirty.ipynb"
    nbformat.write(dirty, path)
    problems = nb.check_clean(path)
    assert f"01_dirty.ipynb: cell {later} has 1 output(s)" in problems
    assert f"01_dirty.ipynb: cell {later} has execution count 3" in problems
    assert "01_dirty.ipynb: the first code cell is not tagged 'parameters'" in problems
    assert nb.strip_outputs(path) is True and nb.strip_outputs(path) is False
    assert nb.check_clean(path) == ["01_dirty.ipynb: the first code cell is not tagged 'parameters'"]


def test_run_refuses_to_write_into_notebooks():
    with pytest.raises(ValueError, match="must not be written back"):
        nb.run_notebooks(nb.notebook_dir() / "executed")


def test_figures_of_record_only_at_cpu_and_paper(tmp_path):
    assert nb.figures_folder(tmp_path, None, "smoke") == tmp_path / "figures"
    assert nb.figures_folder(tmp_path) == tmp_path / "figures"
    assert nb.figures_folder(tmp_path, tmp_path / "f", "cpu") == tmp_path / "f"
    for preset in ("cpu", "paper"):
        assert nb.figures_folder(tmp_path, None, preset) == nb.resolve_path("figures")


def test_python3_kernel_is_this_environment():
    from jupyter_client.manager import KernelManager
    cmd = KernelManager(kernel_name=nb.KERNEL).format_kernel_cmd()
    assert cmd[0] == sys.executable and "ipykernel_launcher" in cmd


def test_cli_arguments():
    parser = argparse.ArgumentParser(prog="mdd")
    commands.add_notebooks(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["notebooks", "run", "--preset", "smoke", "--flag", "pneumoniamnist",
                              "--out", "x", "--only", "01", "-p", "ipc=5", "-p", "methods=[\"a\"]"])
    assert (args.preset, args.flag, args.out, args.only) == ("smoke", "pneumoniamnist", "x", ["01"])
    assert dict(args.param) == {"ipc": 5, "methods": ["a"]}
    assert parser.parse_args(["notebooks", "check"]).handler is nb._check


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_notebooks_execute_at_smoke_and_pass_nbval(real_root, tmp_path):
    before = _tree_digest(nb.notebook_dir())
    out = tmp_path / "out"
    runs = nb.run_notebooks(out, preset="smoke", flag="breastmnist", root=real_root,
                            parameters={"results": str(tmp_path / "no_saved_results")},
                            cell_timeout=300)
    assert [r["notebook"] for r in runs] == [b.name for b in nb.list_notebooks()]
    assert all(r["ok"] for r in runs)
    assert _tree_digest(nb.notebook_dir()) == before  # nothing written back

    figures = {p.name for p in (out / "figures").iterdir()}
    assert EXPECTED_FIGURES <= figures, f"missing {EXPECTED_FIGURES - figures}"
    assert (out / "experts" / "breastmnist_smoke" / "manifest.json").is_file()
    for r in runs:
        executed = nbformat.read(r["executed"], as_version=4)
        code = [c for c in executed.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code)
        assert not any(o.output_type == "error" for c in code for o in c.outputs)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in code)

    # nbval re-executes the executed copies in this environment's kernel; cells marked
    # NBVAL_CHECK_OUTPUT must reproduce their outputs, every cell must run without error.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *sorted(r["executed"] for r in runs)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
