"""Tests of sipwarden.runtime: the process-wide settings entry points apply."""

from __future__ import annotations

import gc

from sipwarden.runtime import tune_garbage_collector


def test_tune_garbage_collector_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == (100_000, 50, 100)
    finally:
        gc.set_threshold(*before)  # the rest of the suite keeps the interpreter's defaults
