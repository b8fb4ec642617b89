"""The cpu preset is what its stated rules chose from the val evidence in
results/ablations/ — once that evidence is final. While a rule's report says "Not
final", the preset keeps the engine v2 values the curves were measured at."""
import re
from pathlib import Path

from mdd.distill_config import PRESETS

ABLATIONS = Path(__file__).resolve().parents[1] / "results" / "ablations"
#: What the curves measured (benchmarks/preset_curves.py MEASURED): PTM's stage length.
STAGE_ITERATIONS = 150 // 4


def _final(name: str, pattern: str) -> str | None:
    path = ABLATIONS / name
    if not path.is_file():
        return None
    m = re.search(pattern, path.read_text(), re.M)
    return m.group(1) if m else None


def test_iterations_and_stage_length_follow_the_curves():
    budget = _final("preset_curves.md", r"Budget by the rule: \*\*(\d+) iterations\*\*")
    cpu = PRESETS["cpu"]
    if budget is None:
        assert cpu["iterations"] == 150          # the preset the curves measured
        return
    assert cpu["iterations"] == int(budget)
    # a longer run extends PTM's last stage, as the curves did; it does not stretch them
    assert cpu.get("stage_iterations") == STAGE_ITERATIONS


def test_eval_every_follows_the_held_out_rule():
    verdict = _final("eval_every.md", r"^By the rule: \*\*eval_every (?:= |stays )(\d+)\*\*")
    want = int(verdict) if verdict else 25
    assert PRESETS["cpu"]["eval_every"] == want


def test_evaluation_epochs_follow_their_rule():
    epochs = _final("eval_epochs.md", r"^\*\*E by the rule: (\d+)\*\*")
    assert epochs is not None and PRESETS["cpu"]["test_epochs"] == int(epochs)
