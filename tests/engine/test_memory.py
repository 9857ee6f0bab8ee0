"""A flood from distinct spoofed sources costs the engine a bounded amount of memory.

DESIGN: every per-source table is bounded; with the default limits the
engine's state stays under 200 MB. flood_memory.py (run in a fresh
interpreter so nothing else is resident) sends 120k INVITEs, each from a new
source with a new Call-ID, tag and branch, through the default engine with
every detector, and prints the resident memory the engine added. Every table
fills by ~90k sources; after that the memory must stay flat.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BUDGET_MB = 200.0


def test_spoofed_source_flood_stays_within_the_memory_budget_and_flat() -> None:
    script = Path(__file__).with_name("flood_memory.py")
    result = subprocess.run(
        [sys.executable, str(script), "120000", "30000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    points = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["sources"] for p in points] == [30000, 60000, 90000, 120000]
    peak = max(p["engine_mb"] for p in points)
    assert peak < BUDGET_MB, points
    # Saturated: the last 30k new sources added (almost) nothing.
    assert points[-1]["engine_mb"] - points[-2]["engine_mb"] < 8.0, points
