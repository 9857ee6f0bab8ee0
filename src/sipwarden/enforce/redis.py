"""Bans and per-source counters shared between nodes through Redis.

Several gateways and monitors point at one Redis (``shared.redis_url``). What
they keep there, under ``prefix`` (``shared.key_prefix``, one per cluster):

* ``{prefix}:bans``, a sorted set: member = source, score = ``until``. What is in
  force and when it ends, so expired bans are pruned with one ZREMRANGEBYSCORE and
  the set never outgrows the bans in force.
* ``{prefix}:ban``, a hash: field = source, value = the JSON :meth:`Ban.record`.
* ``{prefix}:bans:events``, a channel: ``{"op": "ban", "node": ..., "ban": record}``
  or ``{"op": "lift", "node": ..., "source": ...}``.
* ``{prefix}:count:{name}:{window}:{index}:{key}``: the :class:`SharedCounters`.

A ban is written by one Lua script that keeps the later ``until`` when the source
is banned already (``ZADD GT``, Redis ≥ 6.2), writes the set and the hash together
and publishes the change in the same atomic step. So two nodes extending one ban
at once keep the longer ban, a reader never sees a member without its record,
and a ban that changes nothing (the usual case when a node re-publishes what it
heard from another) is not echoed to every node again.

Keeping up. Each :class:`RedisShare` runs one subscriber thread that applies the
other nodes' bans and lifts as they are published (well within a second). When
the subscription is lost, whatever was published meanwhile is gone for this
node, and Redis itself may have come back empty; so the next
:meth:`RedisShare.publish` raises :class:`~sipwarden.errors.EnforcementError`, and
the :class:`~sipwarden.enforce.manager.BanManager` marks the share unhealthy and
catches up when it retries: :meth:`RedisShare.snapshot` (taken once the
subscription is back, so nothing falls between the two) and a re-publish of
every ban it holds. That is how a Redis that was killed and restarted empty gets
every ban back, and a node that missed messages gets them.

Every redis-py error becomes an :class:`EnforcementError` naming the server (its
URL without the password); connect and command timeouts are short
(:data:`DEFAULT_TIMEOUT`), so a dead Redis costs the manager's background
thread a second, never the packet path, which only reads the in-process table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from sipwarden.errors import EnforcementError

from .backend import BanListener, LiftListener
from .ban import Ban, canonical_source

__all__ = ["DEFAULT_TIMEOUT", "RedisShare", "SharedCounters", "redact_url"]

log = logging.getLogger("sipwarden.enforce.redis")

#: Seconds allowed for a connect and for each command.
DEFAULT_TIMEOUT: Final = 1.0
#: A ban record is well under 2 KiB; a bigger message on the channel is not ours.
MAX_MESSAGE_BYTES: Final = 64 * 1024
# Bans per script call: a flood of bans never holds the (single-threaded) Redis long.
_BATCH: Final = 500
# Reconnect backoff of the subscriber (seconds): quick after a blip, 1/s while down.
_BACKOFF_MIN: Final = 0.05
_BACKOFF_MAX: Final = 1.0
# How often the subscriber thread looks at close() while the channel is quiet.
_POLL: Final = 0.25

# Drop the bans that ran out (score <= now) from the set and the hash. HDEL in
# slices: Lua's unpack() has a stack limit of a few thousand values.
_PRUNE: Final = """
local function prune(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  for i = 1, #gone, 500 do
    redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 499, #gone)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
"""

# KEYS: set, hash, channel. ARGV: now, then (source, until, record, message) per ban.
# GT keeps the later expiry; CH makes ZADD count an extension as a change.
_PUBLISH: Final = (
    _PRUNE
    + """
prune(ARGV[1])
local changed = 0
for i = 2, #ARGV, 4 do
  if redis.call('ZADD', KEYS[1], 'GT', 'CH', ARGV[i + 1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
    redis.call('PUBLISH', KEYS[3], ARGV[i + 3])
    changed = changed + 1
  end
end
return changed
"""
)

# KEYS: set, hash. ARGV: now. Returns the records of the bans in force.
_SNAPSHOT: Final = (
    _PRUNE
    + """
prune(ARGV[1])
local sources = redis.call('ZRANGE', KEYS[1], 0, -1)
local records = {}
for i = 1, #sources, 500 do
  local part = redis.call('HMGET', KEYS[2], unpack(sources, i, math.min(i + 499, #sources)))
  for _, record in ipairs(part) do
    if record then records[#records + 1] = record end
  end
end
return records
"""
)


def redact_url(url: str) -> str:
    """``url`` fit for a log line: the password shown as ``***``, the query dropped
    (redis-py also reads ``?password=`` there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable Redis URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = hostport
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"{user}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _passwords(url: str) -> list[str]:
    """The secrets ``url`` carries, to scrub them from any error text."""
    try:
        parts = urlsplit(url)
        secrets = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    except ValueError:
        return []
    return [unquote(secret) for secret in secrets if secret]


class _Endpoint:
    """One Redis server: how to connect, and how to say what went wrong with it."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.display = redact_url(url)
        self.timeout = timeout
        self._secrets = _passwords(url)

    def connect(self, *, retries: int) -> redis.Redis:
        """A client that fails within ``timeout`` per try, with ``retries`` retries
        after a lost connection (redis-py's default is ten, with backoff)."""
        try:
            return redis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
            )
        except ValueError as error:
            raise EnforcementError(
                f"bad Redis URL {self.display}: {self.scrub(str(error))}"
            ) from None

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def describe(self, error: RedisError, action: str) -> str:
        """What an operator needs to read; connection failures leave ``action`` out,
        so an outage reads the same on every retry (the manager logs it once)."""
        detail = self.scrub(str(error) or type(error).__name__)
        if isinstance(error, AuthenticationError | AuthorizationError):
            return (
                f"Redis at {self.display} refused access "
                f"(check the user and password in the URL): {detail}"
            )
        if isinstance(error, RedisTimeoutError):
            return f"Redis at {self.display} did not answer within {self.timeout:g} s: {detail}"
        if isinstance(error, RedisConnectionError):
            return f"Redis at {self.display} is unreachable: {detail}"
        return f"Redis at {self.display} failed to {action}: {detail}"

    @contextlib.contextmanager
    def translated(self, action: str) -> Iterator[None]:
        """Turn any redis-py error raised inside into an :class:`EnforcementError`."""
        try:
            yield
        except RedisError as error:
            raise EnforcementError(self.describe(error, action)) from error


class RedisShare:
    """The :class:`~sipwarden.enforce.backend.BanShare` of a node in a Redis cluster.

    ``node`` names this node in the messages (it ignores its own) and in the
    ``origin`` of the bans it shares; every node of a cluster needs its own
    name. ``clock`` gives the wall-clock time that :meth:`publish` prunes
    expired bans with (bans carry wall-clock expiries).

    Raises:
        EnforcementError: ``url`` is not a Redis URL.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        node: str,
        prefix: str = "sipwarden",
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not node:
            raise ValueError("a shared node needs a name")
        self.node = node
        self.bans_key = f"{prefix}:bans"
        self.records_key = f"{prefix}:ban"
        self.channel = f"{prefix}:bans:events"
        self._endpoint = _Endpoint(url, timeout)
        # Every write is idempotent (the later expiry wins), so one retry on a
        # fresh connection is safe and hides a connection Redis closed while idle.
        self._client = self._endpoint.connect(retries=1)
        # The subscriber must see every lost connection (never reconnect
        # silently): a message sent in between would be missed unnoticed.
        self._subscriber = self._endpoint.connect(retries=0)
        self._publish_script = self._client.register_script(_PUBLISH)
        self._snapshot_script = self._client.register_script(_SNAPSHOT)
        self._clock = clock
        self._on_ban: BanListener = _ignore
        self._on_lift: LiftListener = _ignore
        # Subscription state, guarded by _state: whether subscribed now, how many
        # subscriptions were made, and which one the last snapshot was taken under.
        self._state = threading.Condition()
        self._subscribed = False
        self._generation = 0
        self._synced = -1
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._malformed = 0

    @property
    def url(self) -> str:
        """The server's URL without its password."""
        return self._endpoint.display

    # ------------------------------------------------------------------ BanShare

    def start(self, on_ban: BanListener, on_lift: LiftListener) -> None:
        """Subscribe to the other nodes' bans on a daemon thread that reconnects until
        :meth:`close`; never fails for want of the server."""
        if self._thread is not None:
            raise RuntimeError("RedisShare.start() called twice")
        self._on_ban, self._on_lift = on_ban, on_lift
        self._thread = threading.Thread(
            target=self._subscribe_forever, name=f"sipwarden-redis-{self.node}", daemon=True
        )
        self._thread.start()

    def publish(self, bans: Sequence[Ban]) -> None:
        """Store ``bans`` (an existing ban is only ever extended) and tell every node.

        Also the manager's health check, called every tick: raises
        :class:`EnforcementError` while the subscription is down or after it was
        lost, until a :meth:`snapshot` has caught up with what was missed.
        """
        if self._out_of_sync():
            self._report_gap()
        now = self._clock()
        live = [ban for ban in bans if ban.until > now]
        with self._endpoint.translated("publish bans"):
            for first in range(0, len(live), _BATCH):
                args: list[str] = [repr(now)]
                for ban in live[first : first + _BATCH]:
                    args += self._ban_args(ban)
                self._publish_script(
                    keys=[self.bans_key, self.records_key, self.channel], args=args
                )

    def publish_lift(self, source: str) -> None:
        """Lift the ban on ``source`` in Redis and tell every node."""
        message = json.dumps({"op": "lift", "node": self.node, "source": source})
        with self._endpoint.translated("lift a ban"), self._client.pipeline() as pipe:
            pipe.zrem(self.bans_key, source)
            pipe.hdel(self.records_key, source)
            pipe.publish(self.channel, message)
            pipe.execute()

    def snapshot(self, now: float) -> list[Ban]:
        """The bans in force cluster-wide, read once the subscription is up, so that
        with the messages that follow nothing is missed."""
        with self._endpoint.translated("reach the server"):
            self._client.ping()  # fail fast, before waiting for the subscriber
        generation = self._await_subscription()
        with self._endpoint.translated("read the shared bans"):
            raw = self._snapshot_script(keys=[self.bans_key, self.records_key], args=[repr(now)])
        if generation is not None:
            with self._state:
                self._synced = generation
        bans = (self._stored_ban(item) for item in raw)
        return [ban for ban in bans if ban is not None and ban.active(now)]

    def close(self) -> None:
        """Stop the subscriber and close the connections (the shared bans stay)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=_POLL + 3 * self._endpoint.timeout)
        self._subscriber.close()
        self._client.close()

    # ------------------------------------------------------------------ writing

    def _ban_args(self, ban: Ban) -> list[str]:
        shared = ban if ban.origin else replace(ban, origin=self.node)
        record = shared.record()
        message = {"op": "ban", "node": self.node, "ban": record}
        return [ban.source, repr(ban.until), _json(record), _json(message)]

    def _out_of_sync(self) -> bool:
        if self._thread is None:
            return False  # not subscribed at all (a one-shot command): nothing to miss
        with self._state:
            return not self._subscribed or self._generation != self._synced

    def _report_gap(self) -> None:
        with self._endpoint.translated("reach the server"):
            self._client.ping()  # a server that is down says so, in its own words
        raise EnforcementError(self._gap_message())

    def _gap_message(self) -> str:
        # One text for the whole gap, so the manager logs it once.
        return (
            f"Redis at {self.url}: the subscription to the other nodes' bans was "
            "interrupted; catching up with the shared bans"
        )

    def _await_subscription(self) -> int | None:
        """The current subscription's number, waiting up to the timeout for it."""
        if self._thread is None:
            return None
        self._wake.set()  # the server answers: cut the subscriber's backoff short
        with self._state:
            if not self._state.wait_for(lambda: self._subscribed, self._endpoint.timeout):
                raise EnforcementError(self._gap_message())
            return self._generation

    # ------------------------------------------------------------------ reading

    def _stored_ban(self, raw: object) -> Ban | None:
        try:
            ban = _ban_from(_json_object(raw), node="")
        except (ValueError, RecursionError) as error:
            log.warning("ignoring a malformed ban record in %s: %s", self.records_key, error)
            return None
        # Our own bans come back from Redis: "" is how this node spells itself.
        return replace(ban, origin="") if ban.origin == self.node else ban

    def _subscribe_forever(self) -> None:
        """Listen until close(), reconnecting with a backoff after every failure."""
        backoff = _BACKOFF_MIN
        while not self._stop.is_set():
            before = self._generation
            try:
                self._listen()
            except RedisError as error:
                self._lost(error, was_subscribed=self._generation != before)
            except Exception:
                # A bug here must not end sharing for good: log it, reconnect.
                log.exception("the subscriber of shared bans at %s failed", self.url)
            finally:
                with self._state:
                    self._subscribed = False
            if self._generation != before:
                backoff = _BACKOFF_MIN  # it worked until now: reconnect at once
            self._wake.wait(backoff)
            self._wake.clear()
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _lost(self, error: RedisError, *, was_subscribed: bool) -> None:
        text = self._endpoint.describe(error, "subscribe")
        if was_subscribed and not self._stop.is_set():
            log.warning("lost the subscription to shared bans: %s; reconnecting", text)
        else:
            log.debug("cannot subscribe to shared bans: %s", text)

    def _listen(self) -> None:
        pubsub: PubSub = self._subscriber.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.channel)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=_POLL)
                if message is not None:
                    self._dispatch(message)
        finally:
            with contextlib.suppress(RedisError, OSError):
                pubsub.close()

    def _dispatch(self, message: Mapping[str, object]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            with self._state:
                if self._generation > 0:
                    log.info("subscribed to shared bans at %s again", self.url)
                self._subscribed = True
                self._generation += 1
                self._state.notify_all()
        elif kind == "message":
            self._handle(message.get("data"))

    def _handle(self, data: object) -> None:
        try:
            event = self._decode(data)
        except (ValueError, RecursionError) as error:
            self._report_malformed(data, error)
            return
        try:
            if isinstance(event, Ban):
                self._on_ban(event)
            elif event is not None:
                self._on_lift(event)
        except Exception:
            # A bug in a listener must not end the subscription of every later ban.
            log.exception("a shared ban from %s could not be applied", self.url)

    def _decode(self, data: object) -> Ban | str | None:
        """The ban or the lifted source a message carries; ``None`` for our own."""
        event = _json_object(data)
        node = event.get("node")
        if not isinstance(node, str) or not node:
            raise ValueError("no node name")
        if node == self.node:
            return None
        op = event.get("op")
        if op == "ban":
            record = event.get("ban")
            if not isinstance(record, dict):
                raise ValueError("no ban record")
            return _ban_from(record, node=node)
        source = event.get("source")
        if op == "lift" and isinstance(source, str):
            return canonical_source(source)
        raise ValueError(f"unknown operation {op!r}")

    def _report_malformed(self, data: object, error: Exception) -> None:
        # Bounded: a garbage flood costs one line per hundred messages.
        self._malformed += 1
        if self._malformed == 1 or self._malformed % 100 == 0:
            sample = data[:80] if isinstance(data, bytes) else type(data).__name__
            log.warning(
                "ignoring malformed message #%d on Redis channel %s: %s (%r)",
                self._malformed,
                self.channel,
                error,
                sample,
            )


class SharedCounters:
    """Per-source counters summed over every node, in fixed windows.

    A rate limit that holds cluster-wide: each node adds what it saw and gets
    back the total of all nodes for the current window. A window's key expires
    after the window, so an idle source costs Redis nothing.

    Raises:
        EnforcementError: ``url`` is not a Redis URL.
    """

    def __init__(
        self, url: str, *, prefix: str = "sipwarden", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._prefix = prefix
        self._endpoint = _Endpoint(url, timeout)
        # INCRBY is not idempotent: a command that may have run is never resent.
        self._client = self._endpoint.connect(retries=0)

    @property
    def url(self) -> str:
        """The server's URL without its password."""
        return self._endpoint.display

    def add(self, name: str, key: str, amount: int, *, window: float, now: float) -> int:
        """Add ``amount`` to counter ``name`` of ``key`` (e.g. a source address) and
        return the cluster-wide total of the window ``now`` falls in.

        Raises:
            ValueError: ``window`` is not positive, or ``name`` holds a ``:``.
            EnforcementError: Redis failed or is unreachable.
        """
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        if not name or ":" in name:
            raise ValueError(f"counter name {name!r} must be non-empty and without ':'")
        index = math.floor(now / window)
        redis_key = f"{self._prefix}:count:{name}:{window:g}:{index}:{key}"
        # Kept to the end of its window, plus a second for nodes whose clocks differ a little.
        ttl_ms = max(1, math.ceil(((index + 1) * window - now + 1.0) * 1000))
        with self._endpoint.translated(f"count {name}"), self._client.pipeline() as pipe:
            pipe.incrby(redis_key, amount)
            pipe.pexpire(redis_key, ttl_ms)
            total, _ = pipe.execute()
        return int(total)

    def close(self) -> None:
        self._client.close()


def _ban_from(record: dict[str, object], *, node: str) -> Ban:
    """A ban from its record; a record without an origin is ``node``'s."""
    ban = Ban.from_record(record)
    if not (math.isfinite(ban.since) and math.isfinite(ban.until)):
        raise ValueError("ban times must be finite")
    return ban if ban.origin or not node else replace(ban, origin=node)


def _json_object(raw: object) -> dict[str, object]:
    """A JSON object read from Redis; ``ValueError`` when it is anything else."""
    if not isinstance(raw, bytes) or len(raw) > MAX_MESSAGE_BYTES:
        raise ValueError("not a JSON object (too long, or not a string)")
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - one error type for callers
    return value


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _ignore(_: object) -> None:
    """The listener of a share that was never started."""
