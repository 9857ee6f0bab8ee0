"""A tiny probe run inside a test namespace: count what arrives, or send from an address.

Run as a script (``python netprobe.py ...``) by :mod:`peers.netns`, because a
namespace is entered by ``ip netns exec``, not from inside this process.

``listen udp|tcp PORT``: prints ``ready`` once bound, then one line per
datagram or accepted connection: the source address.
``send udp ADDR PORT --source SRC --count N --interval S``: sends N datagrams.
``connect ADDR PORT --source SRC --timeout S``: prints ``open`` or ``closed``.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def listen(proto: str, port: int, address: str) -> None:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(_family(address), kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if ":" in address:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    if proto == "tcp":
        sock.listen(128)
    print("ready", flush=True)
    while True:
        if proto == "udp":
            _, peer = sock.recvfrom(65535)
        else:
            conn, peer = sock.accept()
            conn.close()
        print(peer[0].removeprefix("::ffff:"), flush=True)


def send(address: str, port: int, source: str, count: int, interval: float, payload: bytes) -> None:
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for _ in range(count):
            sock.sendto(payload, (address, port))
            if interval:
                time.sleep(interval)


def connect(address: str, port: int, source: str, timeout: float) -> None:
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        try:
            sock.connect((address, port))
        except OSError:
            print("closed", flush=True)
            return
    print("open", flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    listening = commands.add_parser("listen")
    listening.add_argument("proto", choices=["udp", "tcp"])
    listening.add_argument("port", type=int)
    listening.add_argument("--address", default="::")
    sending = commands.add_parser("send")
    sending.add_argument("address")
    sending.add_argument("port", type=int)
    sending.add_argument("--source", required=True)
    sending.add_argument("--count", type=int, default=1)
    sending.add_argument("--interval", type=float, default=0.0)
    sending.add_argument("--payload", default="OPTIONS sip:probe SIP/2.0\r\n\r\n")
    connecting = commands.add_parser("connect")
    connecting.add_argument("address")
    connecting.add_argument("port", type=int)
    connecting.add_argument("--source", required=True)
    connecting.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "listen":
        listen(args.proto, args.port, args.address)
    elif args.command == "send":
        send(args.address, args.port, args.source, args.count, args.interval, args.payload.encode())
    else:
        connect(args.address, args.port, args.source, args.timeout)


if __name__ == "__main__":
    main(sys.argv[1:])
