"""Fixtures of the enforcement tests: network namespaces (and, for Redis, a real server)."""

from peers.netns import net_lab
from peers.redis import redis_server

__all__ = ["net_lab", "redis_server"]
