"""The routing key file: created once, owner-only, the same for every worker."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest

from sipwarden.errors import ConfigError
from sipwarden.gateway.command import SECRET_BYTES, load_secret


def test_a_missing_key_is_created_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "gateway.key"
    key = load_secret(str(path))
    assert len(key) == SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(str(path)) == key
    assert [entry.name for entry in tmp_path.iterdir()] == ["gateway.key"]  # no leftovers


def test_a_short_or_unreadable_key_names_the_setting(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"too short")
    with pytest.raises(ConfigError, match=r"gateway\.secret_file"):
        load_secret(str(short))
    with pytest.raises(ConfigError, match=r"gateway\.secret_file"):
        load_secret(str(tmp_path))  # a directory


def test_workers_creating_it_at_once_all_get_the_same_key(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.key")
    context = multiprocessing.get_context("fork")
    start = context.Barrier(8)
    keys = context.SimpleQueue()
    workers = [context.Process(target=_load_together, args=(path, start, keys)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0] * 8
    seen = {keys.get() for _ in range(8)}
    assert seen == {Path(path).read_bytes()}


def _load_together(path: str, start: object, keys: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    keys.put(load_secret(path))  # type: ignore[attr-defined]
