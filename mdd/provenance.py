"""What produced a file: mdd's version, torch's, Python's and the git commit of the
checkout mdd runs from (recorded in expert manifests and distillation results)."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from . import __version__


def git_commit() -> str | None:
    """HEAD of the checkout mdd runs from, with "+dirty" when tracked files changed."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=here, timeout=5).stdout.strip()
        if not head:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "."], cwd=here.parent,
                               capture_output=True, timeout=5).returncode == 1
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    """mdd, torch and Python versions and the git commit, for a manifest or result."""
    return {"mdd": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": git_commit()}
