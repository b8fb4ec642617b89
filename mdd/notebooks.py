"""The numbered notebooks in ``notebooks/``: list, check, strip and run them.

Running executes each notebook with papermill into an output folder (never back into
``notebooks/``)::

    <out>/executed/01_data_and_experts.ipynb   executed copy, with outputs
    <out>/figures/…                            figures and tables (the notebooks' default)
    <out>/experts/<flag>_<preset>/…            experts trained by notebook 01
    <out>/results/<preset>/…                   results computed by the notebooks

Needs the ``notebooks`` extra (papermill, nbformat), imported only when used. Also the
small helpers the notebooks share (paths relative to the project root,
presets, the experts folder), so that every notebook stays thin.

CLI: ``mdd notebooks run [--preset smoke] [--flag F] [--out DIR]``, ``mdd notebooks
list``, ``mdd notebooks check`` (no outputs committed), ``mdd notebooks strip``.

Writing notebook ``NN_name.ipynb`` (the pattern of 01 and 06):

* first code cell tagged ``parameters``: at least ``flag``, ``preset``, ``root``, ``out``,
  ``figures_dir`` (plus ``ipc``, ``seeds``, … as needed). No ``=`` inside comments on
  those lines: papermill then skips the line and cannot override it.
* then ``from mdd import notebooks as nb, viz`` and ``figs = nb.figures_folder(out,
  figures_dir, preset)``; experts come from ``nb.ensure_experts(flag, preset, out, root=root)``
  (trained by 01, reused here), computed results go to ``nb.results_folder(out, preset)``.
* every figure through ``viz.publish(fig, "NN_what", figs)`` (saved and shown), every
  table through ``viz.save_table(df, "NN_what", figs)``; logic lives in ``mdd``.
* one cell starting ``# NBVAL_CHECK_OUTPUT`` that prints something deterministic.
* about a minute at ``preset="smoke"``; committed without outputs (``mdd notebooks
  strip``); its figure names added to ``EXPECTED_FIGURES`` in tests/test_notebooks.py.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

from .data import check_root, resolve_root

#: Where the numbered notebooks live, in a checkout (``<project>/notebooks``).
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
DEFAULT_OUT = "runs/notebooks"
KERNEL = "python3"

#: Evaluation sizes per preset (K networks × epochs of DESIGN.md §2) for what the
#: notebooks evaluate themselves; expert sizes come from ``mdd.experts.PRESETS``.
EVAL_PRESETS: dict[str, dict] = {
    "smoke": dict(models=1, epochs=2),
    "cpu": dict(models=5, epochs=300),
    "paper": dict(models=5, epochs=1000),
}


# ---------------------------------------------------------------- paths
def project_root() -> Path | None:
    """The checkout holding this package (the folder with ``pyproject.toml`` and
    ``notebooks/``), or None for an installed copy."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() and (here / "notebooks").is_dir() else None


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path; a relative one is taken from the project root (so a notebook
    running in ``notebooks/`` writes to ``<project>/runs/…``), else from the cwd."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return ((project_root() or Path.cwd()) / p).resolve()


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as tables show it: relative to the project root when inside it (so a
    committed table does not carry this machine's folders), else absolute."""
    p, root = resolve_path(path), project_root()
    return str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else str(p)


def notebook_dir() -> Path:
    root = project_root()
    if root is None:
        raise FileNotFoundError("notebooks/ is only in a checkout of mdd; pass the folder "
                                "explicitly")
    return root / "notebooks"


#: Presets whose figures are the figures of record (``figures/``) unless told otherwise.
OF_RECORD = ("cpu", "paper")


def figures_folder(out: str | os.PathLike = DEFAULT_OUT, figures_dir: str | os.PathLike | None = None,
                   preset: str | None = None) -> Path:
    """``figures_dir`` when given; else the project's ``figures/`` for the presets of
    record (cpu, paper), and ``<out>/figures`` otherwise, so that smoke runs (CI) never
    touch the figures of record."""
    if figures_dir:
        return resolve_path(figures_dir)
    return resolve_path("figures") if preset in OF_RECORD else resolve_path(out) / "figures"


def experts_folder(out: str | os.PathLike, flag: str, preset: str) -> Path:
    """Where notebook 01 trains the experts that the later notebooks read."""
    return resolve_path(out) / "experts" / f"{flag}_{preset}"


def results_folder(out: str | os.PathLike, preset: str) -> Path:
    """Where a notebook writes results it computes itself (kept apart per preset)."""
    return resolve_path(out) / "results" / preset


def preset_sizes(preset: str) -> dict:
    """Expert sizes (``experts``, ``epochs``, ``width``) and evaluation sizes
    (``eval_models``, ``eval_epochs``) of a preset."""
    from .experts import PRESETS
    if preset not in PRESETS or preset not in EVAL_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    ev = EVAL_PRESETS[preset]
    return {**PRESETS[preset], "eval_models": ev["models"], "eval_epochs": ev["epochs"]}


def datasets_in_root(root: str | os.PathLike | None = None, size: int = 28) -> list[str]:
    """Flags whose file at ``size`` is in the data root and md5-verified, sorted."""
    return sorted(r["flag"] for r in check_root(root) if r["ok"] and r["size"] == size)


def ensure_experts(flag: str, preset: str, out: str | os.PathLike = DEFAULT_OUT,
                   root: str | os.PathLike | None = None, seed: int = 0,
                   device: str = "auto", workers: int | None = None, progress: bool = False):
    """Train (or resume, or just reuse) the preset's experts for ``flag`` in
    :func:`experts_folder`; return the :class:`mdd.experts.ExpertSet`. ``workers`` as in
    :func:`mdd.experts.train_experts` (None: one local process per core, 0: inline)."""
    from .experts import ExpertSet, preset_recipe, train_experts
    recipe, experts = preset_recipe(preset)
    folder = experts_folder(out, flag, preset)
    train_experts(flag, folder, experts, recipe, root=root, seed=seed, device=device,
                  workers=workers, progress=progress)
    return ExpertSet(folder)


# ---------------------------------------------------------------- notebooks as files
def list_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in ``folder``, in order."""
    folder = Path(folder) if folder is not None else notebook_dir()
    return sorted(folder.glob(NOTEBOOK_GLOB))


def check_clean(path: str | os.PathLike) -> list[str]:
    """What keeps ``path`` from being committed: outputs, execution counts, no cell
    tagged ``parameters`` as the first code cell. Empty list = clean."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    problems = []
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    for i, c in code:
        if c.get("outputs"):
            problems.append(f"cell {i} has {len(c.outputs)} output(s)")
        if c.get("execution_count") is not None:
            problems.append(f"cell {i} has execution count {c.execution_count}")
    if not code or "parameters" not in code[0][1].get("metadata", {}).get("tags", []):
        problems.append("the first code cell is not tagged 'parameters'")
    return [f"{Path(path).name}: {p}" for p in problems]


def strip_outputs(path: str | os.PathLike) -> bool:
    """Remove outputs and execution counts in place; True when the file changed."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    changed = False
    for c in nb.cells:
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None):
            c.outputs, c.execution_count, changed = [], None, True
    if changed:
        from .io import write_text
        write_text(path, nbformat.writes(nb) + "\n")
    return changed


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """Names of the ``parameters`` cell → their defaults as written (source text)."""
    import papermill
    return {k: v["default"] for k, v in papermill.inspect_notebook(str(path)).items()}


# ---------------------------------------------------------------- running
def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def run_notebooks(out: str | os.PathLike = DEFAULT_OUT, preset: str = "smoke",
                  flag: str = "breastmnist", root: str | os.PathLike | None = None,
                  only: Sequence[str] | None = None, parameters: dict | None = None,
                  folder: str | os.PathLike | None = None, kernel_name: str = KERNEL,
                  stop_on_error: bool = True, log_output: bool = False,
                  cell_timeout: float | None = None) -> list[dict]:
    """Execute the numbered notebooks in order with papermill.

    Executed copies go to ``<out>/executed/`` and the notebooks' own ``out`` parameter is
    ``out``. Each notebook gets ``preset``, ``flag``, ``root`` and ``out`` plus
    ``parameters``, but only those its ``parameters`` cell declares. ``only`` keeps the
    notebooks whose name starts with one of its entries (``["01", "06_compare"]``);
    ``cell_timeout`` (seconds) fails a cell that runs longer.
    Returns one dict per notebook (``notebook``, ``executed``, ``seconds``, ``ok``,
    ``error``); with ``stop_on_error`` the first failure raises RuntimeError instead.
    """
    from . import validate
    validate.check_values({"flag": flag, "preset": preset}, validate.CLI["notebooks"])
    import papermill
    from papermill.exceptions import PapermillExecutionError

    src = Path(folder) if folder is not None else notebook_dir()
    out = resolve_path(out)
    if _inside(out, src):
        raise ValueError(f"--out {out} is inside {src}: executed notebooks must not be "
                         "written back into the notebooks folder")
    books = list_notebooks(src)
    if only:
        books = [b for b in books if any(b.name.startswith(o) for o in only)]
    if not books:
        raise FileNotFoundError(f"no notebooks matching {list(only or [])} in {src}")
    given = {"preset": preset, "flag": flag, "out": str(out)}
    if root is not None:  # else the notebook's default ($MDD_DATA, then ./data)
        given["root"] = str(resolve_root(root).resolve())
    given.update(parameters or {})
    cwd = project_root() or Path.cwd()
    results = []
    for book in books:
        declared = notebook_parameters(book)
        if "out" not in declared:  # it would write into its own default, maybe the repo
            raise ValueError(f"{book.name} declares no `out` in its parameters cell "
                             f"(declared: {sorted(declared)}); every notebook must take `out`")
        params = {k: v for k, v in given.items() if k in declared}
        target = out / "executed" / book.name
        target.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        error = None
        try:
            papermill.execute_notebook(str(book), str(target), parameters=params,
                                       kernel_name=kernel_name, cwd=str(cwd),
                                       progress_bar=False, log_output=log_output,
                                       start_timeout=180, execution_timeout=cell_timeout)
        except PapermillExecutionError as e:
            error = f"{e.ename}: {e.evalue} (cell {e.exec_count}; see {target})"
        except TimeoutError as e:  # nbclient's CellTimeoutError
            error = f"a cell ran over {cell_timeout}s ({e}); see {target}"
        results.append({"notebook": book.name, "executed": str(target),
                        "seconds": round(time.perf_counter() - t0, 1), "ok": error is None,
                        "error": error, "parameters": params})
        if error and stop_on_error:
            raise RuntimeError(f"notebook {book.name} failed: {error}")
    return results


# ---------------------------------------------------------------- CLI
def _parse_param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"-p expects NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _run(args: argparse.Namespace) -> list[dict]:
    res = run_notebooks(args.out, preset=args.preset, flag=args.flag, root=args.root,
                        only=args.only, parameters=dict(args.param or []),
                        stop_on_error=False, log_output=args.verbose)
    args.failed = not all(r["ok"] for r in res)
    return [{k: v for k, v in r.items() if k != "parameters"} for r in res]


def _list(args: argparse.Namespace) -> list[dict]:
    return [{"notebook": p.name, "parameters": notebook_parameters(p)}
            for p in list_notebooks(args.folder)]


def _check(args: argparse.Namespace) -> list[dict]:
    rows = [{"notebook": p.name, "clean": not (probs := check_clean(p)), "problems": probs}
            for p in list_notebooks(args.folder)]
    args.failed = not all(r["clean"] for r in rows)
    return rows


def _strip(args: argparse.Namespace) -> list[dict]:
    return [{"notebook": p.name, "stripped": strip_outputs(p)}
            for p in list_notebooks(args.folder)]
