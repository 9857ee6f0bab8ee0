"""Test support shared by every room's tests: where the shared test data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

# The workplace lays ``shared/`` beside the repository (``../shared`` from the repo root).
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``; fails (never skips) when the data is missing."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"shared test data missing: ../shared/{'/'.join(parts)} (lay shared/ beside the repo)"
        )
    return path
