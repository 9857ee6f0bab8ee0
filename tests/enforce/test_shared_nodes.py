"""Two real sipwarden processes sharing a real Redis: bans converge, and survive Redis dying.

Node B is a live monitor (a long-running process with its ban manager in the
background); node A is ``sipwarden bans ban`` run by an administrator.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis

from monitor.live_support import LiveMonitor
from peers.redis import RedisServer
from sipwarden.store.sqlite import SqliteStore
from support import free_port

SOURCE = "198.51.100.7"


def node_config(name: str, url: str) -> str:
    return (
        f'\n[shared]\nredis_url = "{url}"\nnode_name = "{name}"\n'
        "\n[enforce]\nretry_interval = 0.2\n"
    )


def active_sources(store: Path) -> set[str]:
    with SqliteStore(store) as opened:
        return {ban.source for ban in opened.active_bans(time.time())}


def wait_until(condition: object, timeout: float) -> float | None:
    """Seconds until ``condition()`` held, or ``None`` after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def test_a_ban_by_one_node_reaches_the_other_within_a_second_and_survives_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store_b = tmp_path / "b.sqlite3"
    node_b = LiveMonitor(
        tmp_path / "b",
        ports=[free_port()],
        extra_config=node_config("node-b", redis_server.url),
        store=store_b,
    )
    config_a = tmp_path / "a.toml"
    config_a.write_text(
        f'[store]\npath = "{tmp_path / "a.sqlite3"}"\n' + node_config("node-a", redis_server.url)
    )
    with node_b:
        command = ["bans", "ban", SOURCE, "--duration", "1h", "--reason", "seen on node a"]
        made = subprocess.run(
            [sys.executable, "-m", "sipwarden", "--config", str(config_a), *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        # B keeps what it received in its own store: that is what we can see of it.
        latency = wait_until(lambda: SOURCE in active_sources(store_b), timeout=3.0)
        assert latency is not None, node_b.output()
        assert latency < 1.0, latency

        client = redis.Redis.from_url(redis_server.url)
        redis_server.kill()
        redis_server.restart()  # empty: no persistence configured
        assert client.zscore("sipwarden:bans", SOURCE) is None
        # B notices the outage and re-publishes every ban it holds.
        back = wait_until(lambda: client.zscore("sipwarden:bans", SOURCE) is not None, 5.0)
        client.close()
        assert back is not None, node_b.output()
    errors = [line for line in node_b.problems() if "redis" in line.lower()]
    assert errors, "the outage must be reported"
    assert all("Traceback" not in line for line in node_b.problems())
