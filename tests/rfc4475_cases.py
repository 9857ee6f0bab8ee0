"""The RFC 4475 torture messages and what ``../shared/testdata/rfc4475/README.md`` says of them.

Shared by the parser's conformance test (``tests/sip/test_rfc4475.py``) and
the gateway's (``tests/gateway/test_torture.py``): the files are loaded here,
and the tables below are the README's, one entry per message, by RFC section.
"""

from __future__ import annotations

from typing import Final

from support import shared_path

__all__ = ["APPLICATION", "INVALID", "RECOVERABLE", "VALID", "load", "message_names"]

# 3.1.1 valid: "must parse; every field as the RFC reads it".
VALID: Final = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
    "semiuri", "transports", "mpart01", "unreason", "noreason",
]  # fmt: skip
# 3.1.2 invalid: file -> (where strict parsing fails: "parse" or "validate", rule
# substring, status): "strict mode: reject with an error naming the rule".
INVALID: Final[dict[str, tuple[str, str, int]]] = {
    "badinv01": ("validate", "via-params", 400),
    "clerr": ("parse", "18.3 Content-Length", 400),
    "ncl": ("parse", "20.14 Content-Length", 400),
    "scalar02": ("validate", "8.1.1.5 CSeq", 400),
    "scalarlg": ("validate", "8.1.1.5 CSeq", 400),
    "quotbal": ("validate", "", 400),
    "ltgtruri": ("validate", "", 400),
    "lwsruri": ("parse", "Request-Line", 400),
    "lwsstart": ("parse", "Request-Line", 400),
    "trws": ("parse", "Request-Line", 400),
    "escruri": ("validate", "19.1.1 Request-URI headers", 400),
    "baddate": ("validate", "20.17 Date", 400),
    "regbadct": ("validate", "", 400),
    "badaspec": ("validate", "", 400),
    "baddn": ("validate", "", 400),
    "badvers": ("parse", "SIP-Version 2.0", 505),
    "mismatch01": ("validate", "CSeq method", 400),
    "mismatch02": ("validate", "CSeq method", 400),
    "bigcode": ("parse", "Status-Code", 400),
}
# "lenient mode (monitor): may recover where the RFC allows it".
RECOVERABLE: Final = {"escruri", "baddate", "regbadct", "badvers", "mismatch01", "mismatch02"}
# 3.2, 3.3 and 3.4: the parser must not fail; a proxy answers (or forwards: None).
APPLICATION: Final[dict[str, int | None]] = {
    "badbranch": None,
    "insuf": 400,
    "unkscm": 416,
    "novelsc": 416,
    "unksm2": None,
    "bext01": 420,
    "invut": None,
    "regaut01": None,
    "multi01": 400,
    "mcl01": 400,
    "bcast": None,  # a response: not a proxy request check (the gateway drops its forwarding)
    "zeromf": 483,
    "cparam01": None,
    "cparam02": None,
    "regescrt": None,
    "sdp01": None,
    "inv2543": None,
}


def load(name: str) -> bytes:
    """The bytes of one message, exactly as the RFC ships them."""
    return shared_path("testdata", "rfc4475", f"{name}.dat").read_bytes()


def message_names() -> list[str]:
    """The names of every message file present, sorted."""
    return sorted(path.stem for path in shared_path("testdata", "rfc4475").glob("*.dat"))
