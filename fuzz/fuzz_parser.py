"""Atheris fuzz target for the SIP parser (DESIGN convention 9).

Invariant: any bytes either parse or raise ``RemoteProtocolError``; every other
exception is a crash. One input drives everything a gateway or monitor does
with untrusted bytes: ``parse_message`` in strict and lenient mode, every
typed header view, ``validate()``, ``collect_defects()``, ``to_bytes()`` (also
after an edit), and a ``StreamParser`` fed the same bytes whole and in chunks
the fuzzer chooses, which must give the same events and fail alike.

    python fuzz/fuzz_parser.py -max_total_time=60 fuzz/corpus
    python fuzz/fuzz_parser.py --make-corpus fuzz/corpus   # seed from RFC 4475

See fuzz/README.md.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext, suppress
from pathlib import Path

try:
    import atheris
except ImportError:  # --make-corpus, imports and type checks work without it
    HAVE_ATHERIS = False
else:
    HAVE_ATHERIS = True


def _instrumented() -> AbstractContextManager[object]:
    return atheris.instrument_imports() if HAVE_ATHERIS else nullcontext()


with _instrumented():
    from sipwarden.errors import RemoteProtocolError
    from sipwarden.sip.message import Message, Request, Response
    from sipwarden.sip.parser import KeepAlive, StreamParser, parse_message

# ../shared/testdata/rfc4475 from the repository root (the workplace lays
# shared/ beside the repository).
RFC4475_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "rfc4475"
MAX_CHUNKS = 64


def _property_names(cls: type) -> tuple[str, ...]:
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(name for name, value in vars(klass).items() if isinstance(value, property))
    return tuple(sorted(names))


REQUEST_PROPERTIES = _property_names(Request)
RESPONSE_PROPERTIES = _property_names(Response)


def _touch_views(message: Message) -> None:
    names = REQUEST_PROPERTIES if isinstance(message, Request) else RESPONSE_PROPERTIES
    for name in names:
        with suppress(RemoteProtocolError):
            getattr(message, name)


def _exercise(message: Message) -> None:
    """Everything done to a parsed message; only RemoteProtocolError may escape."""
    message.to_bytes()
    _touch_views(message)
    with suppress(RemoteProtocolError):
        message.validate()
    message.collect_defects()  # records defects, never raises
    _touch_views(message)
    message.headers.add("X-Fuzz", "1")
    out = message.to_bytes()
    with suppress(RemoteProtocolError):
        parse_message(out, strict=False)


def _datagram(data: bytes) -> None:
    for strict in (True, False):
        try:
            message = parse_message(data, strict=strict)
        except RemoteProtocolError:
            continue
        _exercise(message)


def _chunks(data: bytes, provider: atheris.FuzzedDataProvider) -> list[bytes]:
    chunks: list[bytes] = []
    position = 0
    while position < len(data) and len(chunks) < MAX_CHUNKS:
        size = provider.ConsumeIntInRange(1, max(1, len(data) - position))
        chunks.append(data[position : position + size])
        position += size
    if position < len(data):
        chunks.append(data[position:])
    return chunks


def _stream(data: bytes, chunks: list[bytes]) -> None:
    for strict in (True, False):
        # Whole feed and chunked feed must give the same events and fail alike
        # (DESIGN convention 8).
        whole = _stream_events([data], strict=strict)
        split = _stream_events(chunks, strict=strict)
        if whole != split:
            raise AssertionError(f"chunking changed the stream: {whole!r} != {split!r}")


def _stream_events(chunks: list[bytes], *, strict: bool) -> tuple[list[object], str | None]:
    """The keep-alives and messages framed, and the rule that stopped the stream (or None)."""
    parser = StreamParser(strict=strict)
    events: list[object] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (event := parser.next_event()) is not None:
                if isinstance(event, KeepAlive):
                    events.append(event)
                else:
                    # The views were exercised on the datagram path: same head parser.
                    events.append(event.to_bytes())
    except RemoteProtocolError as error:
        return events, error.rule
    return events, None


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name atheris looks for
    provider = atheris.FuzzedDataProvider(data)
    split_seed = provider.ConsumeBytes(4)
    payload = data[len(split_seed) :]
    _datagram(payload)
    _stream(payload, _chunks(payload, atheris.FuzzedDataProvider(split_seed * 16)))


def make_corpus(directory: Path) -> int:
    """Copy the RFC 4475 torture messages into ``directory`` as the seed corpus."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(RFC4475_DIR.glob("*.dat")):
        # The target spends its first 4 bytes on the chunking: prefix them so the
        # message itself arrives intact.
        (directory / f"rfc4475-{path.stem}").write_bytes(b"\x00\x01\x02\x03" + path.read_bytes())
        count += 1
    return count


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[1] == "--make-corpus":
        if len(argv) != 3:
            raise SystemExit("usage: fuzz_parser.py --make-corpus DIR")
        if not RFC4475_DIR.is_dir():
            raise SystemExit(f"RFC 4475 messages not found in {RFC4475_DIR}")
        count = make_corpus(Path(argv[2]))
        print(f"wrote {count} seed inputs to {argv[2]}")
        return
    if not HAVE_ATHERIS:
        raise SystemExit("atheris is not installed: pip install -e '.[fuzz]' (or: make fuzz)")
    for arg in argv[1:]:
        # libFuzzer refuses a corpus directory that does not exist; a fresh
        # checkout has none (fuzz/corpus/ is not committed), so seed it.
        if not arg.startswith("-") and not Path(arg).exists() and RFC4475_DIR.is_dir():
            print(f"seeding {arg} with {make_corpus(Path(arg))} RFC 4475 messages")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
