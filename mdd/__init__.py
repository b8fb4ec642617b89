"""mdd — medical dataset distillation with progressive trajectory matching.

The distillation entry point is ``mdd.distill.distill(DistillConfig(...))``: the function
is not bound here, so that ``mdd.distill`` stays the module.
"""
__version__ = "0.1.0"   # first: submodules record it in what they write

from .artifact import load_distilled
from .data import DataError, MedMNIST, Normalization, check_root, load
from .distill import DistillConfig, evaluate_distilled
from .evaluate import EvalConfig, evaluate_set
from .nets import ConvNet, ParamLayout

__all__ = ["ConvNet", "DataError", "DistillConfig", "EvalConfig", "MedMNIST", "Normalization",
           "ParamLayout", "check_root", "evaluate_distilled", "evaluate_set", "load",
           "load_distilled", "__version__"]
