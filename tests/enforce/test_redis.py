"""Bans and counters shared through a real Redis (``redis-server`` on loopback, started per test).

What the shared state promises, each proved here against the real server:
a ban made on one node is in force on every other node within a second (in
one process and across two OS processes), lifts travel the same way, a node
started later catches up, concurrent extensions keep the later expiry, a
Redis killed and restarted empty loses no ban while every node keeps
enforcing from memory, a refusing Redis is reported clearly, and garbage on
the channel is ignored.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import redis

from peers.redis import RedisServer
from sipwarden.enforce.ban import Ban
from sipwarden.enforce.manager import BanManager
from sipwarden.enforce.redis import RedisShare, SharedCounters, redact_url
from sipwarden.engine.contract import BanDecision
from sipwarden.errors import EnforcementError
from support import free_port, stop_process

ATTACKER = "203.0.113.7"
OTHER = "198.51.100.9"
PREFIX6 = "2001:db8:66::/64"
CONVERGE = 1.0  # the promise: a ban reaches every node within one second
NODE_SCRIPT = Path(__file__).with_name("redis_node.py")

MakeNode = Callable[..., BanManager]


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> float:
    """Seconds until ``predicate()`` held, polling every millisecond; fails after ``timeout``."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what or predicate}")
        time.sleep(0.001)
    return time.perf_counter() - start


def banned(manager: BanManager, source: str) -> bool:
    return manager.banned(source, time.time()) is not None


def stored(url: str, prefix: str = "sipwarden") -> dict[str, float]:
    """The shared ban set as Redis holds it: source -> until."""
    with redis.Redis.from_url(url) as client:
        members = client.zrange(f"{prefix}:bans", 0, -1, withscores=True)
    return {member.decode(): score for member, score in members}


def share_health(manager: BanManager) -> bool:
    return all(status.healthy for status in manager.status())


@pytest.fixture
def make_node() -> Iterator[MakeNode]:
    """Start a BanManager sharing through Redis; ``tick=None`` leaves ticking to the test."""
    made: list[BanManager] = []

    def make(url: str, node: str, *, tick: float | None = 0.05) -> BanManager:
        manager = BanManager(share=RedisShare(url, node=node), origin=node, retry_interval=0.2)
        made.append(manager)
        manager.start(time.time())
        if tick is not None:
            manager.run_in_background(tick)
        return manager

    yield make
    for manager in made:
        manager.close()


# --- two nodes in one process ------------------------------------------------------


def test_a_ban_reaches_the_other_node_within_a_second(
    redis_server: RedisServer, make_node: MakeNode, record_property: Callable[[str, object], None]
) -> None:
    # Ticking at the gateway's default pace (0.2 s): the latency a deployment sees.
    a = make_node(redis_server.url, "node-a", tick=0.2)
    b = make_node(redis_server.url, "node-b", tick=0.2)

    a.ban(ATTACKER, duration=600, reason="scanner", now=time.time())
    latency = wait_until(lambda: banned(b, ATTACKER), what="manual ban on b")
    decision = BanDecision(
        time=time.time(), source=PREFIX6, duration=600, rule="scanner", reason="svmap",
        returnable=True, evidence=("OPTIONS from sipvicious",),
    )  # fmt: skip
    a.apply(decision)
    engine_latency = wait_until(lambda: banned(b, "2001:db8:66::1234"), what="engine ban on b")

    record_property("manual_ban_latency_s", round(latency, 4))
    record_property("engine_ban_latency_s", round(engine_latency, 4))
    print(f"\nin-process convergence: {latency * 1000:.1f} ms, {engine_latency * 1000:.1f} ms")
    assert latency < CONVERGE
    assert engine_latency < CONVERGE
    received = b.banned("2001:db8:66::1234", time.time())
    assert received is not None
    assert (received.origin, received.rule, received.evidence) == (
        "node-a",
        "scanner",
        ("OPTIONS from sipvicious",),
    )
    assert set(stored(redis_server.url)) == {ATTACKER, PREFIX6}


def test_a_lift_reaches_the_other_node(redis_server: RedisServer, make_node: MakeNode) -> None:
    a = make_node(redis_server.url, "node-a")
    b = make_node(redis_server.url, "node-b")
    b.ban(ATTACKER, duration=600, reason="cracking", now=time.time())
    wait_until(lambda: banned(a, ATTACKER))

    a.lift(ATTACKER)
    assert wait_until(lambda: not banned(b, ATTACKER), what="lift on b") < CONVERGE
    assert stored(redis_server.url) == {}


def test_a_node_started_later_catches_up(redis_server: RedisServer, make_node: MakeNode) -> None:
    a = make_node(redis_server.url, "node-a")
    a.ban(ATTACKER, duration=600, reason="flood", now=time.time())
    a.ban(PREFIX6, duration=600, reason="rotation", now=time.time())
    a.ban(OTHER, duration=0.3, reason="short", now=time.time())
    wait_until(lambda: set(stored(redis_server.url)) >= {ATTACKER, PREFIX6, OTHER})
    time.sleep(0.4)  # OTHER's ban runs out

    c = make_node(redis_server.url, "node-c", tick=None)

    # start() read the snapshot: no waiting, no tick needed.
    assert {ban.source for ban in c.active(time.time())} == {ATTACKER, PREFIX6}
    assert c.banned("2001:db8:66::1", time.time()) is not None
    assert set(stored(redis_server.url)) == {ATTACKER, PREFIX6}  # the expired one was pruned


def test_concurrent_extensions_keep_the_later_until(redis_server: RedisServer) -> None:
    base = time.time() + 600
    shares = [RedisShare(redis_server.url, node=name) for name in ("node-a", "node-b")]
    untils = [base + step for step in range(100)]

    def extend(share: RedisShare, order: list[float]) -> None:
        for until in order:
            share.publish([_ban(ATTACKER, until=until, reason=f"{share.node} {until}")])

    threads = [
        threading.Thread(target=extend, args=(shares[0], untils)),
        threading.Thread(target=extend, args=(shares[1], untils[::-1])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert stored(redis_server.url) == {ATTACKER: untils[-1]}
    # The record moved with the score (one atomic step), and came from whoever wrote the max.
    [ban] = shares[0].snapshot(time.time())
    assert ban.until == untils[-1]
    assert ban.reason.endswith(repr(untils[-1]))
    for share in shares:
        share.close()


def test_managers_extending_one_ban_converge_on_the_later_until(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    a = make_node(redis_server.url, "node-a")
    b = make_node(redis_server.url, "node-b")
    now = time.time()
    a.ban(ATTACKER, duration=60, reason="short", now=now)
    b.ban(ATTACKER, duration=3600, reason="long", now=now)

    def converged() -> bool:
        bans = [node.banned(ATTACKER, time.time()) for node in (a, b)]
        return all(ban is not None and ban.until == now + 3600 for ban in bans)

    wait_until(converged, what="both nodes holding the hour-long ban")
    assert stored(redis_server.url) == {ATTACKER: now + 3600}


def test_a_node_ignores_its_own_messages(redis_server: RedisServer) -> None:
    heard: list[Ban | str] = []
    a = RedisShare(redis_server.url, node="node-a")
    b = RedisShare(redis_server.url, node="node-b")
    a.start(heard.append, heard.append)
    assert a.snapshot(time.time()) == []  # catches up: publish() works from here on

    a.publish([_ban(OTHER, until=time.time() + 600, reason="mine")])
    b.publish([_ban(ATTACKER, until=time.time() + 600, reason="theirs")])
    b.publish_lift(ATTACKER)
    wait_until(lambda: len(heard) == 2)
    time.sleep(0.1)

    assert [item.reason if isinstance(item, Ban) else item for item in heard] == [
        "theirs",
        ATTACKER,
    ]
    assert isinstance(heard[0], Ban)
    assert heard[0].origin == "node-b"  # stamped by the node that shared it
    [own] = a.snapshot(time.time())
    assert own.origin == ""  # our own ban reads back as ours
    a.close()
    b.close()


# --- two OS processes ---------------------------------------------------------------


class NodeProcess:
    """``redis_node.py`` in its own interpreter: commands on stdin, one answer line each."""

    def __init__(self, url: str, node: str, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(NODE_SCRIPT), url, node],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        assert self.expect() == "ready"

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.put(line.decode().strip())

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        self.proc.stdin.flush()

    def expect(self, timeout: float = 10.0) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"node process said nothing for {timeout} s:\n{self.log_path.read_text()}")

    def stamped(self, word: str) -> float:
        """The time of the next answer, which must start with ``word``."""
        answer = self.expect().split()
        assert answer[0] == word, f"{answer} (log: {self.log_path.read_text()})"
        return float(answer[2])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[Callable[[str, str], NodeProcess]]:
    started: list[NodeProcess] = []

    def start(url: str, node: str) -> NodeProcess:
        started.append(NodeProcess(url, node, tmp_path / f"{node}.log"))
        return started[-1]

    yield start
    for node in started:
        node.close()


def test_two_processes_converge_within_a_second(
    redis_server: RedisServer,
    node_process: Callable[[str, str], NodeProcess],
    record_property: Callable[[str, object], None],
) -> None:
    a = node_process(redis_server.url, "node-a")
    b = node_process(redis_server.url, "node-b")

    b.send(f"wait-ban {ATTACKER} 5")
    a.send(f"ban {ATTACKER} 600")
    ban_latency = b.stamped("seen") - a.stamped("banned")

    a.send(f"wait-lift {ATTACKER} 5")
    b.send(f"lift {ATTACKER}")
    lift_latency = a.stamped("gone") - b.stamped("lifted")

    record_property("process_ban_latency_s", round(ban_latency, 4))
    record_property("process_lift_latency_s", round(lift_latency, 4))
    print(f"\ncross-process: ban {ban_latency * 1000:.1f} ms, lift {lift_latency * 1000:.1f} ms")
    assert ban_latency < CONVERGE
    assert lift_latency < CONVERGE


# --- outages ------------------------------------------------------------------------


def test_redis_killed_and_restarted_empty_loses_no_ban(
    redis_server: RedisServer,
    make_node: MakeNode,
    caplog: pytest.LogCaptureFixture,
    record_property: Callable[[str, object], None],
) -> None:
    caplog.set_level(logging.WARNING, logger="sipwarden.enforce")
    a = make_node(redis_server.url, "node-a")
    b = make_node(redis_server.url, "node-b")
    a.ban(ATTACKER, duration=600, reason="before", now=time.time())
    b.ban(PREFIX6, duration=600, reason="before", now=time.time())
    wait_until(lambda: banned(b, ATTACKER) and banned(a, "2001:db8:66::1"))

    redis_server.kill()
    wait_until(lambda: not share_health(a) and not share_health(b), what="outage noticed")
    a.ban(OTHER, duration=600, reason="during the outage", now=time.time())
    # Meanwhile every node enforces from memory.
    for node in (a, b):
        assert banned(node, ATTACKER)
        assert banned(node, "2001:db8:66::1")
    assert banned(a, OTHER)
    time.sleep(0.5)  # a few failed retries: they must not be logged again

    redis_server.restart()  # empty: no persistence
    recovery = wait_until(lambda: banned(b, OTHER), what="the outage's ban on b")
    wait_until(lambda: share_health(a) and share_health(b))

    record_property("recovery_after_restart_s", round(recovery, 4))
    print(f"\nban made during the outage reached b {recovery * 1000:.0f} ms after the restart")
    assert set(stored(redis_server.url)) == {ATTACKER, PREFIX6, OTHER}
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    assert len(errors) == 2, [record.getMessage() for record in errors]  # once per node
    assert all(url in record.getMessage() for record in errors)
    assert all("unreachable" in record.getMessage() for record in errors)


def test_an_append_only_redis_keeps_the_bans_through_a_kill(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        share = RedisShare(server.url, node="node-a")
        share.publish([_ban(ATTACKER, until=time.time() + 600)])
        server.kill()
        server.restart()
        assert [ban.source for ban in share.snapshot(time.time())] == [ATTACKER]
        share.close()


def test_a_refusing_port_is_reported_and_the_manager_stays_usable(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.perf_counter()
    manager = make_node(url, "node-a")
    assert time.perf_counter() - started < 1.0  # a refused connection costs no wait

    [status] = manager.status()
    assert not status.healthy
    assert f"Redis at {url} is unreachable" in status.error
    assert [record.levelname for record in caplog.records if url in record.getMessage()] == [
        "ERROR"
    ]
    manager.ban(ATTACKER, duration=600, reason="local", now=time.time())
    assert banned(manager, ATTACKER)


def test_a_password_protected_redis_names_the_problem_not_the_password(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", password="s3cret-pw") as server:
        port = server.port
        wrong = RedisShare(f"redis://:wrong-pw@127.0.0.1:{port}/0", node="a")
        with pytest.raises(EnforcementError, match="refused access") as raised:
            wrong.snapshot(time.time())
        assert f"redis://:***@127.0.0.1:{port}/0" in str(raised.value)
        assert "wrong-pw" not in str(raised.value)

        anonymous = RedisShare(f"redis://127.0.0.1:{port}/0", node="a")
        with pytest.raises(EnforcementError, match="refused access"):
            anonymous.publish([_ban(ATTACKER, until=time.time() + 60)])

        right = RedisShare(server.url, node="a")
        right.publish([_ban(ATTACKER, until=time.time() + 60)])
        assert [ban.source for ban in right.snapshot(time.time())] == [ATTACKER]
        for share in (wrong, anonymous, right):
            share.close()


def test_a_frozen_redis_costs_a_second_not_a_hang(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    manager = make_node(redis_server.url, "node-a", tick=None)
    share = RedisShare(redis_server.url, node="probe")
    redis_server.pause()
    try:
        started = time.perf_counter()
        with pytest.raises(EnforcementError, match=r"did not answer within 1 s"):
            share.publish([_ban(ATTACKER, until=time.time() + 60)])
        assert time.perf_counter() - started < 1.5
        manager.ban(ATTACKER, duration=600, reason="local", now=time.time())
        manager.tick(time.time())  # publishing times out: logged, not raised
        assert banned(manager, ATTACKER)
        assert not share_health(manager)
    finally:
        redis_server.resume()
    time.sleep(0.25)  # the retry interval
    manager.tick(time.time())
    assert share_health(manager)
    assert set(stored(redis_server.url)) == {ATTACKER}
    share.close()


def test_a_bad_url_is_an_enforcement_error() -> None:
    with pytest.raises(EnforcementError, match="must specify one of") as raised:
        RedisShare("http://:hunter2@h:1/0", node="a")
    assert str(raised.value).startswith("bad Redis URL http://:***@h:1/0: ")


def test_redact_url_hides_every_password() -> None:
    assert redact_url("redis://app:pa%40ss@10.0.0.5:6379/2?password=x") == (
        "redis://app:***@10.0.0.5:6379/2"
    )
    assert redact_url("rediss://:pw@[2001:db8::5]:6380/0") == "rediss://:***@[2001:db8::5]:6380/0"
    assert redact_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


# --- garbage on the channel ---------------------------------------------------------


def test_malformed_messages_are_logged_and_ignored(
    redis_server: RedisServer, make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sipwarden.enforce")
    a = make_node(redis_server.url, "node-a")
    b = make_node(redis_server.url, "node-b")
    forever = _ban(OTHER, until=time.time() + 600).record() | {"until_ts": float("inf")}
    garbage = [
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'{"op": "ban"}',
        b'{"op": "ban", "node": "x", "ban": {"source": "not an address"}}',
        b'{"op": "ban", "node": "x", "ban": "record"}',
        json.dumps({"op": "ban", "node": "x", "ban": forever}).encode(),
        b'{"op": "lift", "node": "x", "source": 42}',
        b'{"op": "explode", "node": "x"}',
        b"[" * 30_000 + b"]" * 30_000,
    ]
    with redis.Redis.from_url(redis_server.url) as client:
        for message in garbage:
            client.publish("sipwarden:bans:events", message)
        # and a broken record in the persisted set, for the next node's snapshot
        client.zadd("sipwarden:bans", {"192.0.2.1": time.time() + 600})
        client.hset("sipwarden:ban", "192.0.2.1", "{broken")

    a.ban(ATTACKER, duration=600, reason="after the garbage", now=time.time())
    wait_until(lambda: banned(b, ATTACKER), what="a real ban after the garbage")
    assert not banned(b, OTHER)
    c = make_node(redis_server.url, "node-c", tick=None)
    assert [ban.source for ban in c.active(time.time())] == [ATTACKER]

    warnings = [record.getMessage() for record in caplog.records]
    assert any("malformed message #1 on Redis channel" in text for text in warnings)
    assert any("malformed ban record" in text for text in warnings)
    assert not any(record.levelno >= logging.ERROR for record in caplog.records)


# --- shared counters ----------------------------------------------------------------


def test_counters_add_up_across_clients(redis_server: RedisServer) -> None:
    one, two = SharedCounters(redis_server.url), SharedCounters(redis_server.url)
    now = 1_000_000.5
    assert one.add("register", ATTACKER, 3, window=10, now=now) == 3
    assert two.add("register", ATTACKER, 4, window=10, now=now + 1) == 7
    assert two.add("register", OTHER, 1, window=10, now=now) == 1
    assert one.add("invite", ATTACKER, 1, window=10, now=now) == 1
    assert one.add("register", ATTACKER, 1, window=60, now=now) == 1  # another window length
    with redis.Redis.from_url(redis_server.url) as client:
        ttl = client.pttl(f"sipwarden:count:register:10:100000:{ATTACKER}")
    assert 0 < ttl <= 10_500  # to the window's end (9.5 s) plus a second
    one.close()
    two.close()


def test_counters_start_again_in_the_next_window(redis_server: RedisServer) -> None:
    counters = SharedCounters(redis_server.url, prefix="cluster2")
    assert counters.add("register", ATTACKER, 5, window=10, now=1_000_009.9) == 5
    assert counters.add("register", ATTACKER, 2, window=10, now=1_000_010.0) == 2
    assert counters.add("register", ATTACKER, 2, window=10, now=1_000_019.0) == 4
    with pytest.raises(ValueError, match="window"):
        counters.add("register", ATTACKER, 1, window=0, now=1.0)
    counters.close()


def test_counters_fail_with_an_enforcement_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    counters = SharedCounters(url)
    with pytest.raises(EnforcementError, match=f"Redis at {url} is unreachable"):
        counters.add("register", ATTACKER, 1, window=10, now=time.time())
    counters.close()


def _ban(source: str, *, until: float, reason: str = "test") -> Ban:
    return Ban(
        source=source, since=time.time(), until=until, rule="manual", reason=reason,
        returnable=True,
    )  # fmt: skip
