"""Fixtures of the gateway tests: real peers from ``tests/peers``."""

from peers.certs import test_certs
from peers.rtpengine import rtpengine_daemon

__all__ = ["rtpengine_daemon", "test_certs"]
