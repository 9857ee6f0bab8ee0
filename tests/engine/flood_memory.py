"""Flood the default engine with spoofed sources and print its memory (run by test_memory.py).

Each INVITE comes from a new source address with a new Call-ID, tag and
branch: the worst case for per-source and per-transaction tables. Messages
are built and dropped one by one, so the resident memory that grows is the
engine's own state. Prints one JSON line per checkpoint.
"""

from __future__ import annotations

import gc
import json
import sys

from sipwarden.detect.registry import build_engine
from sipwarden.engine.contract import Direction, Observation
from sipwarden.sip.parser import parse_message

TEMPLATE = (
    "INVITE sip:100@pbx.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK{n}\r\n"
    "From: <sip:{n}@{ip}>;tag={n}\r\nTo: <sip:100@pbx.example.com>\r\n"
    "Call-ID: {n}@{ip}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


def resident_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(total: int, every: int) -> None:
    engine = build_engine()
    gc.collect()
    baseline = resident_mb()
    for n in range(1, total + 1):
        ip = f"{10 + (n >> 24)}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
        data = TEMPLATE.format(ip=ip, n=n).encode()
        message = parse_message(data, strict=False)
        source = (n * 1e-4, ip, 5060, "192.0.2.1", 5060, "udp", Direction.INBOUND)
        engine.inspect(Observation(*source, data, message, None))
        if n % every == 0:
            gc.collect()
            print(json.dumps({"sources": n, "engine_mb": round(resident_mb() - baseline, 1)}))
            sys.stdout.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
