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
from .privacy import audit   # the function: the module is mdd.privacy

__all__ = ["ConvNet", "DataError", "DistillConfig", "EvalConfig", "MedMNIST", "Normalization",
           "ParamLayout", "audit", "check_root", "evaluate_distilled", "evaluate_set", "load",
           "load_distilled", "__version__"]
