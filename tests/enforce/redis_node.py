"""One sipwarden node in its own process, for the cross-process Redis tests.

Run as ``python redis_node.py URL NODE``: it starts a :class:`BanManager` with a
:class:`RedisShare`, ticking in the background as a gateway would, prints
``ready`` and then answers commands read from stdin, one per line, each with
one line on stdout (times are wall-clock seconds, comparable between processes
on one host):

* ``ban SOURCE SECONDS`` → ``banned SOURCE TIME``
* ``lift SOURCE`` → ``lifted SOURCE TIME``
* ``wait-ban SOURCE TIMEOUT`` → ``seen SOURCE TIME`` once the ban is in force here,
  or ``timeout SOURCE``
* ``wait-lift SOURCE TIMEOUT`` → ``gone SOURCE TIME`` or ``timeout SOURCE``
* ``list`` → ``bans SOURCE...``
* ``quit`` (or end of input) → closes the manager and exits.
"""

from __future__ import annotations

import logging
import sys
import time

from sipwarden.enforce.manager import BanManager
from sipwarden.enforce.redis import RedisShare


def wait_for(manager: BanManager, source: str, *, banned: bool, timeout: float) -> float | None:
    """The time ``source`` became (un)banned here, polling every millisecond."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        if (manager.banned(source, now) is not None) == banned:
            return now
        time.sleep(0.001)
    return None


def answer(manager: BanManager, words: list[str]) -> str:
    command, args = words[0], words[1:]
    if command == "ban":
        manager.ban(args[0], duration=float(args[1]), reason="test", now=time.time())
        return f"banned {args[0]} {time.time()!r}"
    if command == "lift":
        manager.lift(args[0])
        return f"lifted {args[0]} {time.time()!r}"
    if command in {"wait-ban", "wait-lift"}:
        seen = wait_for(manager, args[0], banned=command == "wait-ban", timeout=float(args[1]))
        word = "seen" if command == "wait-ban" else "gone"
        return f"timeout {args[0]}" if seen is None else f"{word} {args[0]} {seen!r}"
    if command == "list":
        return " ".join(["bans", *(ban.source for ban in manager.active(time.time()))])
    return f"error unknown command {command}"


def main(url: str, node: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    manager = BanManager(share=RedisShare(url, node=node), origin=node, retry_interval=0.2)
    manager.start(time.time())
    manager.run_in_background()
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            print(answer(manager, words), flush=True)
    finally:
        manager.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
