"""The PBXs behind the gateway: which one takes new requests, and OPTIONS health checks.

The first upstream that answers is used for new requests; one that misses
:data:`MISSES_ALLOWED` probes in a row is skipped until it answers again.
When none answers, the first is used anyway: a PBX that is merely slow to
answer OPTIONS must not take the whole service down with it.
"""

from __future__ import annotations

from typing import Final

from .model import Endpoint, Send

__all__ = ["MISSES_ALLOWED", "PROBE_BRANCH", "Upstreams"]

MISSES_ALLOWED: Final = 3
PROBE_BRANCH: Final = "z9hG4bKswhc"  # branches of our own probes: <prefix><index>x<sequence>


class Upstreams:
    def __init__(self, endpoints: tuple[Endpoint, ...], *, interval: float) -> None:
        if not endpoints:
            raise ValueError("at least one upstream is needed")
        self.endpoints = endpoints
        self.interval = interval
        self._misses = [0] * len(endpoints)
        self._outstanding = [False] * len(endpoints)
        self._next_probe = 0.0
        self._sequence = 0

    def pick(self) -> int:
        for index, misses in enumerate(self._misses):
            if misses < MISSES_ALLOWED:
                return index
        return 0

    def endpoint(self, index: int) -> Endpoint:
        return self.endpoints[index if 0 <= index < len(self.endpoints) else self.pick()]

    def index_of(self, endpoint: Endpoint) -> int:
        for index, known in enumerate(self.endpoints):
            if (known.host, known.port) == (endpoint.host, endpoint.port):
                return index
        return -1

    def healthy(self, index: int) -> bool:
        return self._misses[index] < MISSES_ALLOWED

    def probes(self, now: float, *, via_host: str, transport: str) -> list[Send]:
        """The OPTIONS probes due at ``now`` (one per upstream every ``interval``)."""
        if now < self._next_probe:
            return []
        self._next_probe = now + self.interval
        sends = []
        for index, endpoint in enumerate(self.endpoints):
            if self._outstanding[index]:
                self._misses[index] += 1  # the previous probe got no answer
            self._outstanding[index] = True
            self._sequence += 1
            sends.append(Send(endpoint, self._probe(index, endpoint, via_host, transport)))
        return sends

    def _probe(self, index: int, endpoint: Endpoint, via_host: str, transport: str) -> bytes:
        branch = f"{PROBE_BRANCH}{index}x{self._sequence}"
        request = (
            f"OPTIONS sip:{endpoint.hostport} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {via_host};branch={branch};rport\r\n"
            "Max-Forwards: 1\r\n"
            f"From: <sip:health@{via_host}>;tag=hc{index}\r\n"
            f"To: <sip:{endpoint.hostport}>\r\n"
            f"Call-ID: hc{index}x{self._sequence}@{via_host}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        return request.encode()

    def answered(self, branch: str) -> bool:
        """Record the answer to a probe; False if ``branch`` is not one of ours."""
        if not branch.startswith(PROBE_BRANCH):
            return False
        index_text = branch[len(PROBE_BRANCH) :].split("x", 1)[0]
        if not index_text.isdigit() or int(index_text) >= len(self.endpoints):
            return False
        index = int(index_text)
        self._misses[index] = 0
        self._outstanding[index] = False
        return True
