"""mdd — medical dataset distillation with progressive trajectory matching."""
from .data import DataError, MedMNIST, Normalization, check_root, load
from .evaluate import EvalConfig, evaluate_set
from .nets import ConvNet, ParamLayout

__version__ = "0.1.0"
__all__ = ["ConvNet", "DataError", "EvalConfig", "MedMNIST", "Normalization", "ParamLayout",
           "check_root", "evaluate_set", "load", "__version__"]
