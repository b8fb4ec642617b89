"""The order methods are shown in, in tables (:mod:`mdd.compare`) and plots
(:mod:`mdd.viz`)."""
from __future__ import annotations

#: Display order of known methods (``random@m`` right after ``m``); others follow alphabetically.
METHOD_ORDER = ("random", "mtt", "datm", "ptm", "ptm_dom", "ptm+dom", "full")


def method_rank(method: str) -> tuple:
    """Sort key: METHOD_ORDER, ``random@m`` right after ``m``, unknown methods last."""
    base, control = (method[len("random@"):], 1) if method.startswith("random@") else (method, 0)
    known = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return (known, "" if base in METHOD_ORDER else base, control, method)
