"""Drives an IpsetBackend (and a BanManager over it) inside a test namespace.

The backend shells out to ``ipset``, ``iptables`` and ``conntrack``, which act
on the network namespace they run in, so the tests start this script with
``ip netns exec`` and talk to it line by line: one JSON command per line on
stdin, one JSON answer per line on stdout. The backend and the manager live
for the whole session, so a test can break a tool, tick, repair it and tick
again, looking at the kernel with ``ipset``/``iptables`` in between.

Commands (``op`` and its arguments); every answer has ``ok`` and either
``result`` and ``elapsed`` (seconds the call took) or ``error``:

* ``backend`` prefix, max_elements, flush_conntrack: make the backend
* ``install``; ``add``/``sync`` bans: [[source, seconds, returnable], ...]; ``remove`` sources
* ``hide`` tools: make ``shutil.which`` find none of them (as if not installed); ``unhide``
* ``manager`` retry_interval; ``start``/``tick`` now; ``ban`` source, duration, now;
  ``lift`` source; ``banned`` address, now; ``status``
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from sipwarden.enforce.ban import Ban, canonical_source
from sipwarden.enforce.ipset import IpsetBackend
from sipwarden.enforce.manager import BanManager
from sipwarden.errors import SipwardenError

_real_which = shutil.which
_hidden: set[str] = set()


def _which(name: str, *args: Any, **kwargs: Any) -> str | None:
    return None if name in _hidden else _real_which(name, *args, **kwargs)


# The tools module looks tools up through shutil.which.
shutil.which = _which  # type: ignore[assignment]


class Session:
    def __init__(self) -> None:
        self.backend = IpsetBackend()
        self.manager: BanManager | None = None

    def bans(self, specs: list[list[Any]]) -> list[Ban]:
        now = time.time()
        return [
            Ban(
                source=canonical_source(source),
                since=now,
                until=now + seconds,
                rule="test",
                reason="test",
                returnable=returnable,
            )
            for source, seconds, returnable in specs
        ]

    def run(self, op: str, args: dict[str, Any]) -> object:
        handler: Callable[[dict[str, Any]], object] = getattr(self, f"op_{op}")
        return handler(args)

    def op_backend(self, args: dict[str, Any]) -> None:
        self.backend = IpsetBackend(**args)

    def op_install(self, args: dict[str, Any]) -> None:
        self.backend.install()

    def op_add(self, args: dict[str, Any]) -> None:
        self.backend.add(self.bans(args["bans"]), time.time())

    def op_remove(self, args: dict[str, Any]) -> None:
        self.backend.remove(args["sources"])

    def op_sync(self, args: dict[str, Any]) -> None:
        self.backend.sync(self.bans(args["bans"]), time.time())

    def op_hide(self, args: dict[str, Any]) -> None:
        _hidden.update(args["tools"])

    def op_unhide(self, args: dict[str, Any]) -> None:
        _hidden.clear()

    def op_manager(self, args: dict[str, Any]) -> None:
        self.manager = BanManager(backends=[self.backend], retry_interval=args["retry_interval"])

    def _manager(self) -> BanManager:
        assert self.manager is not None, "send `manager` first"
        return self.manager

    def op_start(self, args: dict[str, Any]) -> None:
        self._manager().start(args["now"])

    def op_tick(self, args: dict[str, Any]) -> None:
        self._manager().tick(args["now"])

    def op_ban(self, args: dict[str, Any]) -> str:
        manager = self._manager()
        ban = manager.ban(args["source"], duration=args["duration"], reason="test", now=args["now"])
        return ban.source

    def op_lift(self, args: dict[str, Any]) -> bool:
        return self._manager().lift(args["source"]) is not None

    def op_banned(self, args: dict[str, Any]) -> str | None:
        ban = self._manager().banned(args["address"], args["now"])
        return None if ban is None else ban.source

    def op_status(self, args: dict[str, Any]) -> list[list[object]]:
        return [[s.name, s.healthy, s.error] for s in self._manager().status()]


def main() -> None:
    session = Session()
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        started = time.perf_counter()
        try:
            result = session.run(op, command)
        except (SipwardenError, ValueError) as error:
            answer: dict[str, object] = {"ok": False, "error": str(error)}
        else:
            answer = {"ok": True, "result": result, "elapsed": time.perf_counter() - started}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
