"""A store that is corrupt or locked is reported, and the analysis goes on without it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from support import shared_path


def monitor(tmp_path: Path, store: Path, *extra_config: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "sipwarden.toml"
    settings = "\n".join(extra_config)
    config.write_text(f'[store]\npath = "{store}"\n{settings}\n')
    capture = shared_path("testdata", "captures", "svmap.pcap")
    command = ["monitor", "--pcap", str(capture), "--json"]
    return subprocess.run(
        [sys.executable, "-m", "sipwarden", "--config", str(config), *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def kinds(stdout: str) -> set[str]:
    return {json.loads(line)["kind"] for line in stdout.splitlines()}


def test_a_corrupt_store_is_reported_and_the_analysis_still_runs(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    store.write_bytes(b"not a database " * 200)
    done = monitor(tmp_path, store)
    assert done.returncode == 0, done.stderr
    assert "cannot open the store" in done.stderr
    assert "running without a store" in done.stderr
    assert "scanner" in kinds(done.stdout)
    assert store.read_bytes() == b"not a database " * 200  # left for the administrator


def test_a_locked_store_is_reported_and_the_analysis_still_runs(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    assert monitor(tmp_path, store).returncode == 0  # creates it
    holder = sqlite3.connect(store)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock throughout
    try:
        done = monitor(tmp_path, store, "busy_timeout = 0.2")
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "database is locked" in done.stderr
    assert "scanner" in kinds(done.stdout)
    assert "Traceback" not in done.stderr
