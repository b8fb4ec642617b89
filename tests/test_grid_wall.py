"""The grid's wall time across sessions from its heartbeat log (benchmarks/grid_wall.py)."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "grid_wall", Path(__file__).resolve().parents[1] / "benchmarks" / "grid_wall.py")
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)


def test_beats_split_into_segments_at_gaps_and_sum():
    beats = [1000, 1060, 1120, 9000, 9060, 9120, 9180]          # two sessions, unordered ok
    assert gw.segments(list(reversed(beats))) == [(1000, 1120), (9000, 9180)]
    assert gw.segments([5]) == [(5, 5)] and gw.segments([]) == []
    md = gw.report(beats)
    assert "over 2 segment(s)" in md and f"**{(120 + 180) / 3600:.2f} h**" in md
